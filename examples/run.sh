#!/usr/bin/env bash
# Sets up what is missing, then runs the example game in embedded mode (examples/echo):
# TCP on 3250, WebSocket on 3251, route echo.echo. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
exec cargo run -q -p kiwano -- run examples/echo "$@"
