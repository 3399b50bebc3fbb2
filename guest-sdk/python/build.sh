#!/usr/bin/env bash
# Builds a Kiwano guest written in Python into a WebAssembly component.
#
#   guest-sdk/python/build.sh <app-dir> <module> <out.wasm>
#
# <app-dir> holds <module>.py, which defines `class Guest(wit_world.exports.Guest)` — with the
# SDK, `Guest = server.guest()`. The SDK (the `kiwano` package beside this script) is importable.
# Needs componentize-py 0.25 (tests/setup.sh installs it).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 <app-dir> <module> <out.wasm>" >&2
    exit 2
fi
app_dir=$(cd "$1" && pwd)
module=$2
mkdir -p "$(dirname "$3")"
out=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
here=$(cd "$(dirname "$0")" && pwd)
wit=$(cd "$here/../../wit" && pwd)
started=$(mktemp)
trap 'rm -f "$started"' EXIT
componentize-py -d "$wit" -w server componentize "$module" -p "$app_dir" -p "$here" -o "$out"
# componentize-py's interpreter leaves bytecode caches beside the modules it imported: remove
# those, so that a build does not change its own sources (a project's `sources` fingerprint).
for dir in "$app_dir" "$here/kiwano"; do
    find "$dir" -path '*/__pycache__/*.pyc' -newer "$started" -delete 2>/dev/null || true
    find "$dir" -type d -name __pycache__ -empty -delete 2>/dev/null || true
done
