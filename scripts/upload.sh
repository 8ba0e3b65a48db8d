#!/usr/bin/env bash
# Puts local files into the local Cloud Storage (fake-gcs-server started by scripts/emulators.sh),
# the way a producer would: through its JSON upload API, so listing and generations work (a file
# copied straight into the emulator's directory breaks listing of its prefix).
#
#   scripts/upload.sh gs://BUCKET/PREFIX/ FILE...     each FILE becomes gs://BUCKET/PREFIX/<its name>
#   scripts/upload.sh gs://BUCKET/PREFIX/ DIR         every file under DIR, keeping relative paths
#
# The bucket is created when missing. Reads STORAGE_EMULATOR_HOST (default: the port emulators.sh
# uses) and BQSTEWARD_EMU_PROJECT for new buckets. Prints one line per object with its generation.
set -euo pipefail

die() { echo "upload: $*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: scripts/upload.sh gs://BUCKET/PREFIX/ FILE|DIR..."
target=$1; shift
[[ $target == gs://* ]] || die "the first argument must be a gs:// URI, got $target"
rest=${target#gs://}
bucket=${rest%%/*}
prefix=${rest#"$bucket"}; prefix=${prefix#/}
[[ -n $bucket ]] || die "no bucket in $target"
[[ -z $prefix || $prefix == */ ]] || prefix="$prefix/"
host=${STORAGE_EMULATOR_HOST:-http://127.0.0.1:${BQSTEWARD_GCS_PORT:-19052}}
[[ $host == http* ]] || host="http://$host"
project=${BQSTEWARD_EMU_PROJECT:-bqsteward-test}

curl -fsS -o /dev/null "$host/storage/v1/b" || die "no Cloud Storage emulator at $host: run scripts/emulators.sh start"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data "{\"name\": \"$bucket\"}" "$host/storage/v1/b?project=$project")
[[ $code == 200 || $code == 409 ]] || die "cannot create bucket $bucket (HTTP $code)"

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

put() { # local file, object name
  local name; name=$(urlencode "$2")
  local answer
  answer=$(curl -fsS -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
    "$host/upload/storage/v1/b/$bucket/o?uploadType=media&name=$name") || die "upload of $1 failed"
  local generation
  generation=$(python3 -c 'import json, sys; print(json.load(sys.stdin).get("generation", "?"))' <<<"$answer")
  echo "gs://$bucket/$2 (generation $generation)"
}

for arg in "$@"; do
  if [[ -d $arg ]]; then
    while IFS= read -r -d '' f; do
      put "$f" "$prefix${f#"${arg%/}"/}"
    done < <(find "$arg" -type f -print0 | sort -z)
  elif [[ -f $arg ]]; then
    put "$arg" "$prefix$(basename "$arg")"
  else
    die "$arg is neither a file nor a directory"
  fi
done
