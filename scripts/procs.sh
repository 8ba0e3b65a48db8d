# Process helpers shared by scripts/emulators.sh and scripts/databases.sh (sourced, not run). The
# caller sets `state` (the directory of PID files and logs) and defines `log`.

# Whether the process named by PID file $1 runs.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # name check pidfile: until `check` succeeds (60 s), or the process exits
  local i
  for i in $(seq 1 120); do
    if "$2"; then return 0; fi
    if ! alive "$3"; then log "$1 exited; see $state/$1.log"; tail -20 "$state/$1.log" >&2; return 1; fi
    sleep 0.5
  done
  log "$1 did not become ready in 60 s; see $state/$1.log"; return 1
}

stop_one() { # name [quarter-seconds to wait for it before SIGKILL, default 40]
  local pidfile=$state/$1.pid
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill -- -"$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 "${2:-40}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 -- -"$pid" 2>/dev/null || true
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}
