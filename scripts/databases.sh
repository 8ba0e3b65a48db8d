#!/usr/bin/env bash
# Real source databases for bqsteward's tests and demo: MariaDB (MySQL-compatible) and PostgreSQL
# from Debian's packages, each with a temp data directory, on loopback, on non-default ports, run
# as the unprivileged `postgres`/`mysql` users when started by root, stopped by PID.
#
#   scripts/databases.sh install   apt-get install mariadb-server / postgresql if missing (root or sudo);
#                                  the packages' own system services are not started
#   scripts/databases.sh start     install if needed, initialise and start both (idempotent), then
#                                  print `export BQSTEWARD_TEST_MYSQL_URL=…` and
#                                  `export BQSTEWARD_TEST_POSTGRES_URL=…` (admin users)
#   scripts/databases.sh stop      stop only the servers this script started (PID files)
#   scripts/databases.sh status    say what runs; exit 0 only when both answer
#   scripts/databases.sh env       print the export lines
#
# Settings (environment): BQSTEWARD_DB_STATE (default /tmp/bqsteward-databases: data, sockets,
# logs, PID files), BQSTEWARD_MYSQL_PORT (19060), BQSTEWARD_POSTGRES_PORT (19061).
set -euo pipefail

state=${BQSTEWARD_DB_STATE:-/tmp/bqsteward-databases}
mysql_port=${BQSTEWARD_MYSQL_PORT:-19060}
pg_port=${BQSTEWARD_POSTGRES_PORT:-19061}
password=bqsteward-test
log() { echo "databases: $*" >&2; }

sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && { echo "$d"; return 0; }; done
  return 1
}
mysqld_bin() {
  command -v mariadbd 2>/dev/null || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } || return 1
}

install() {
  local need=()
  mysqld_bin >/dev/null || need+=(mariadb-server mariadb-client)
  pg_bin >/dev/null || need+=(postgresql)
  [ ${#need[@]} = 0 ] && return 0
  log "installing ${need[*]} (apt-get)"
  # Keep the packages from starting their own system services (policy-rc.d: 101 = not allowed).
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_ tee "$policy" >/dev/null
    $sudo_ chmod +x "$policy"
    created=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get install -y -q "${need[@]}" >/dev/null ||
    { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q "${need[@]}" >/dev/null; }
  [ "$created" = 1 ] && $sudo_ rm -f "$policy"
  return 0
}

# shellcheck source=scripts/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"
# Run as the unprivileged user when root (both servers refuse to run as root).
as() { # user cmd...
  local u=$1; shift
  if [ "$(id -u)" = 0 ]; then runuser -u "$u" -- "$@"; else "$@"; fi
}
mysql_ready() {
  mariadb --protocol=TCP -h 127.0.0.1 -P "$mysql_port" -u admin -p"$password" -e 'SELECT 1' >/dev/null 2>&1
}
pg_ready() {
  PGPASSWORD=$password psql -h 127.0.0.1 -p "$pg_port" -U admin -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

start_mysql() {
  local data=$state/mysql user=mysql
  [ "$(id -u)" = 0 ] || user=$(id -un)
  if alive "$state/mysql.pid" && mysql_ready; then log "MariaDB already running (pid $(cat "$state/mysql.pid"))"; return 0; fi
  mkdir -p "$state/mysql-run"
  [ "$(id -u)" = 0 ] && chown "$user" "$state/mysql-run"
  if [ ! -d "$data/mysql" ]; then
    log "initialising MariaDB in $data"
    rm -rf "$data"; mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown "$user" "$data"
    as "$user" mariadb-install-db --no-defaults --datadir="$data" --auth-root-authentication-method=normal \
      --skip-test-db >"$state/mysql-init.log" 2>&1 || { tail -20 "$state/mysql-init.log" >&2; return 1; }
    touch "$state/mysql.new"
  fi
  log "starting MariaDB on 127.0.0.1:$mysql_port"
  as "$user" setsid "$(mysqld_bin)" --no-defaults --datadir="$data" --port="$mysql_port" --bind-address=127.0.0.1 \
    --socket="$state/mysql-run/mysql.sock" --pid-file="$state/mysql-run/mysqld.pid" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_bin --default-time-zone=+00:00 \
    --innodb-buffer-pool-size=128M --max-connections=200 >"$state/mysql.log" 2>&1 </dev/null 3>&- 9>&- &
  echo $! >"$state/mysql.pid"
  if [ -f "$state/mysql.new" ]; then
    local i
    for i in $(seq 1 120); do [ -S "$state/mysql-run/mysql.sock" ] && break; sleep 0.5; done
    mariadb --no-defaults -S "$state/mysql-run/mysql.sock" -u root -e "
      CREATE USER IF NOT EXISTS 'admin'@'%' IDENTIFIED BY '$password';
      GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION;
      CREATE USER IF NOT EXISTS 'admin'@'localhost' IDENTIFIED BY '$password';
      GRANT ALL PRIVILEGES ON *.* TO 'admin'@'localhost' WITH GRANT OPTION;
      CREATE DATABASE IF NOT EXISTS bqsteward;" && rm -f "$state/mysql.new"
  fi
  wait_for mysql mysql_ready "$state/mysql.pid"
  # From now on the PID file names the server itself (not runuser), so `stop` signals it directly.
  cat "$state/mysql-run/mysqld.pid" >"$state/mysql.pid"
}

start_postgres() {
  local data=$state/postgres user=postgres bin
  [ "$(id -u)" = 0 ] || user=$(id -un)
  bin=$(pg_bin)
  if alive "$state/postgres.pid" && pg_ready; then log "PostgreSQL already running (pid $(cat "$state/postgres.pid"))"; return 0; fi
  mkdir -p "$state/pg-run"
  [ "$(id -u)" = 0 ] && chown "$user" "$state/pg-run"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising PostgreSQL in $data"
    rm -rf "$data"; mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown "$user" "$data"
    printf '%s\n' "$password" >"$state/pg.pw"; [ "$(id -u)" = 0 ] && chown "$user" "$state/pg.pw"
    as "$user" "$bin/initdb" -D "$data" -U admin --pwfile="$state/pg.pw" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 \
      >"$state/postgres-init.log" 2>&1 || { tail -20 "$state/postgres-init.log" >&2; return 1; }
    rm -f "$state/pg.pw"
  fi
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  as "$user" setsid "$bin/postgres" -D "$data" -p "$pg_port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$state/pg-run" -c timezone=UTC -c max_connections=200 -c fsync=off \
    >"$state/postgres.log" 2>&1 </dev/null 3>&- 9>&- &
  echo $! >"$state/postgres.pid"
  wait_for postgres pg_ready "$state/postgres.pid"
  head -1 "$data/postmaster.pid" >"$state/postgres.pid"
}

start() {
  install
  mkdir -p "$state"
  [ "$(id -u)" = 0 ] && chmod 755 "$state"
  start_mysql
  start_postgres
  log "ready"
}

status() {
  local ok=0
  if alive "$state/mysql.pid" && mysql_ready; then echo "MariaDB: running (pid $(cat "$state/mysql.pid"), port $mysql_port)"
  else echo "MariaDB: not running"; ok=1; fi
  if alive "$state/postgres.pid" && pg_ready; then echo "PostgreSQL: running (pid $(cat "$state/postgres.pid"), port $pg_port)"
  else echo "PostgreSQL: not running"; ok=1; fi
  return $ok
}

env_lines() {
  echo "export BQSTEWARD_TEST_MYSQL_URL=mysql://admin:$password@127.0.0.1:$mysql_port/bqsteward"
  echo "export BQSTEWARD_TEST_POSTGRES_URL=postgres://admin:$password@127.0.0.1:$pg_port/postgres"
}

case "${1:-}" in
  install) install ;;
  start)
    mkdir -p "$state"
    exec 9>"$state/start.lock"
    flock 9
    # stdout carries only the export lines: keep it on fd 3, away from the servers (which must
    # not inherit it, or `$(scripts/databases.sh start)` would wait for them to exit).
    exec 3>&1 1>&2
    start
    env_lines >&3 ;;
  stop) stop_one mysql 60; stop_one postgres 60 ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
