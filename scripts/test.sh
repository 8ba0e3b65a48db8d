#!/usr/bin/env bash
# The whole check, as CI runs it: format, lints, and every test, emulator-backed ones included.
# Installs and starts the emulators itself (scripts/emulators.sh) and stops them again if it
# started them. Usage: scripts/test.sh [extra cargo test args]
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
if ! scripts/emulators.sh status >/dev/null 2>&1; then
  scripts/emulators.sh start
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then scripts/emulators.sh stop; fi; }
trap cleanup EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets "$@"
