#!/usr/bin/env bash
# The whole check, as CI runs it: format, lints, and every test, emulator- and cluster-backed ones
# included. Installs and starts the emulators (scripts/emulators.sh) and a real Kubernetes API server
# (scripts/kube.sh: built from Go modules on first use, cached in ~/.cache/bqsteward), the source
# databases (scripts/databases.sh: MariaDB and PostgreSQL from Debian) and a local S3 with a Delta
# writer (scripts/lake.sh: moto and deltalake from PyPI) itself, and stops them again
# if it started them. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tools the deployment tests run: lua5.4 (ArgoCD health check; Debian package) and kubectl
# (`kubectl kustomize`, offline).
if ! command -v lua5.4 >/dev/null 2>&1; then
  echo "== installing lua5.4 (apt-get)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -q lua5.4 >/dev/null || { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q lua5.4 >/dev/null; }
fi
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is needed for tests/deploy.rs (kubectl kustomize)" >&2; exit 1; }

started=0
kube_started=0
db_started=0
lake_started=0
cleanup() {
  if [ "$lake_started" = 1 ]; then scripts/lake.sh stop; fi
  if [ "$started" = 1 ]; then scripts/emulators.sh stop; fi
  if [ "$kube_started" = 1 ]; then scripts/kube.sh stop; fi
  if [ "$db_started" = 1 ]; then scripts/databases.sh stop; fi
}
trap cleanup EXIT
if ! scripts/emulators.sh status >/dev/null 2>&1; then
  started=1
  scripts/emulators.sh start
fi
# The real API server for tests/cluster.rs (the tests would start it too; here its cold build is
# timed on its own line).
if ! scripts/kube.sh status >/dev/null 2>&1; then
  kube_started=1
  t0=$SECONDS
  scripts/kube.sh start >/dev/null
  echo "== kube-apiserver ready ($((SECONDS - t0)) s, builds included)"
fi

# MariaDB and PostgreSQL for tests/database_sources.rs (Debian packages, installed on first use).
if ! scripts/databases.sh status >/dev/null 2>&1; then
  db_started=1
  t0=$SECONDS
  eval "$(scripts/databases.sh start)"
  echo "== MariaDB and PostgreSQL ready ($((SECONDS - t0)) s, installs included)"
fi

# moto (S3) and the deltalake writer for tests/delta_sources.rs (PyPI, cached in ~/.cache/bqsteward/lake).
if ! scripts/lake.sh status >/dev/null 2>&1; then
  lake_started=1
  t0=$SECONDS
  scripts/lake.sh start >/dev/null
  echo "== moto (S3) and deltalake ready ($((SECONDS - t0)) s, installs included)"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets "$@"
