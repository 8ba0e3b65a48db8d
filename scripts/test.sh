#!/usr/bin/env bash
# The whole check, as CI runs it: format, lints, and every test, emulator-backed ones included.
# Installs and starts the emulators itself (scripts/emulators.sh) and stops them again if it
# started them. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
