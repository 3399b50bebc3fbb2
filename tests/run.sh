#!/usr/bin/env bash
# Sets up what is missing (tests/setup.sh), then runs the whole test suite (unit, property, wire
# conformance over real sockets, guests built from source, and a smoke run of examples/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo test --workspace --no-fail-fast "$@"
