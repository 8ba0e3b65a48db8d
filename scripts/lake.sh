#!/usr/bin/env bash
# A local S3 for bqsteward's Delta Lake tests and demo: moto in server mode (PyPI) on loopback, and
# the Delta Lake writer the tests use to make tables on it (the `deltalake` package: delta-rs'
# Python binding, with pyarrow), both installed from PyPI into a venv cached outside the repo.
#
#   scripts/lake.sh install   create the venv (idempotent)
#   scripts/lake.sh start     install if needed, start moto (idempotent); prints export lines
#   scripts/lake.sh stop      stop the moto servers this script started (by PID file)
#   scripts/lake.sh status    exit 0 only when both answer
#   scripts/lake.sh env       print the export lines (S3 endpoint, writer's python)
#
# Settings (environment): BQSTEWARD_LAKE_DIR (default ~/.cache/bqsteward/lake: the venv),
# BQSTEWARD_LAKE_STATE (default /tmp/bqsteward-lake: log and PID file), BQSTEWARD_S3_PORT (19070),
# BQSTEWARD_S3_AUTH_PORT (19071: a second moto that checks keys, INITIAL_NO_AUTH_ACTION_COUNT=0 — it
# knows no key, so every request is refused as S3 refuses wrong keys), PYTHON (python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${BQSTEWARD_LAKE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bqsteward/lake}
state=${BQSTEWARD_LAKE_STATE:-/tmp/bqsteward-lake}
port=${BQSTEWARD_S3_PORT:-19070}
auth_port=${BQSTEWARD_S3_AUTH_PORT:-19071}
python=${PYTHON:-python3}
venv=$dir/venv
pins=("moto[server]==5.2.1" "deltalake==1.6.6" "pyarrow")

log() { echo "lake: $*" >&2; }
# shellcheck source=scripts/procs.sh
. "$here/scripts/procs.sh"

install() {
  mkdir -p "$dir"
  if [ ! -f "$dir/installed.ok" ]; then
    log "installing moto and deltalake into $venv (PyPI, ~1 min cold)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
    touch "$dir/installed.ok"
  fi
}

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)" = 200 ]; }
# The keyed moto refuses even its probe (no key is known): any HTTP answer means it is up.
auth_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$auth_port/" 2>/dev/null)" != 000 ]; }

start() {
  mkdir -p "$dir" "$state"
  ( exec 8>"$dir/install.lock"; flock 8; install )
  if alive "$state/moto.pid" && ready; then
    log "moto already running (pid $(cat "$state/moto.pid"))"
  else
    ready && { log "port $port answers but is not ours; set BQSTEWARD_S3_PORT"; return 1; }
    log "starting moto (S3) on 127.0.0.1:$port"
    setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/moto.pid"
    wait_for moto ready "$state/moto.pid"
  fi
  if alive "$state/moto-auth.pid" && auth_ready; then
    log "keyed moto already running (pid $(cat "$state/moto-auth.pid"))"
  else
    auth_ready && { log "port $auth_port answers but is not ours; set BQSTEWARD_S3_AUTH_PORT"; return 1; }
    log "starting moto (S3, keys checked) on 127.0.0.1:$auth_port"
    INITIAL_NO_AUTH_ACTION_COUNT=0 setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$auth_port" \
      >"$state/moto-auth.log" 2>&1 </dev/null 9>&- &
    echo $! >"$state/moto-auth.pid"
    wait_for moto-auth auth_ready "$state/moto-auth.pid"
  fi
  env_lines
}

env_lines() {
  echo "export BQSTEWARD_S3_ENDPOINT=http://127.0.0.1:$port"
  echo "export BQSTEWARD_LAKE_PYTHON=$venv/bin/python"
  echo "export BQSTEWARD_S3_LOG=$state/moto.log"
  echo "export BQSTEWARD_S3_AUTH_ENDPOINT=http://127.0.0.1:$auth_port"
}

case "${1:-}" in
  install) install ;;
  start)
    mkdir -p "$state"
    exec 9>"$state/start.lock"
    flock 9
    start ;;
  stop) stop_one moto; stop_one moto-auth ;;
  status) alive "$state/moto.pid" && ready && alive "$state/moto-auth.pid" && auth_ready ;;
  env) env_lines ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
