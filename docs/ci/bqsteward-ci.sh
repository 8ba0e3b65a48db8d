#!/usr/bin/env bash
# bqsteward in a config repository's CI, on every pull/merge request: validate the manifests, then
# plan them as Markdown into $BQSTEWARD_PLAN_FILE for the review comment. Used as is by the GitHub
# Actions workflow and the GitLab CI job next to it (tests/ci_recipe.rs runs it).
#
# Exit 0: valid, and the plan has no changes or only changes (the comment shows them).
# Exit 1: invalid manifests, a refusal, or something unreadable (the comment shows why).
#
# Settings (environment):
#   BQSTEWARD_MANIFESTS   directory or file of manifests            (default: manifests)
#   BQSTEWARD_POLICY      the policy file, if any                   (default: none)
#   BQSTEWARD_PLAN_FILE   where the Markdown plan goes              (default: bqsteward-plan.md)
#   BQSTEWARD             the binary                                (default: bqsteward on PATH)
# Credentials: Application Default Credentials of a read-only identity (plan never writes), e.g.
# Workload Identity Federation on GitHub/GitLab; BQSTEWARD_IDENTITY names the controller's identity.
set -uo pipefail

bin=${BQSTEWARD:-bqsteward}
manifests=${BQSTEWARD_MANIFESTS:-manifests}
out=${BQSTEWARD_PLAN_FILE:-bqsteward-plan.md}
policy=()
[[ -n ${BQSTEWARD_POLICY:-} ]] && policy=(--policy "$BQSTEWARD_POLICY")

if ! validation=$("$bin" validate -f "$manifests" "${policy[@]}" 2>&1); then
  { echo "### bqsteward: the manifests are invalid"; echo; echo '```'; echo "$validation"; echo '```'; } >"$out"
  echo "$validation"
  exit 1
fi
"$bin" plan -f "$manifests" "${policy[@]}" --output markdown >"$out" 2>"$out.stderr"
code=$?
cat "$out"
case $code in
  0) echo "bqsteward: no changes" ;;
  2) echo "bqsteward: changes pending (see the plan)" ;;
  *)
    { echo; echo '```'; cat "$out.stderr"; echo '```'; } >>"$out"
    cat "$out.stderr" >&2
    exit 1
    ;;
esac
if [[ -n ${GITHUB_OUTPUT:-} ]]; then
  echo "changes=$([[ $code == 2 ]] && echo true || echo false)" >>"$GITHUB_OUTPUT"
fi
exit 0
