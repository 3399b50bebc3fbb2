#!/usr/bin/env bash
# Sets up what is missing, then runs the example game in embedded mode (examples/chat):
# Pitaya's chat over WebSocket on 3250, its browser page at http://127.0.0.1:3251/web/. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
exec cargo run -q -p kiwano -- run examples/chat "$@"
