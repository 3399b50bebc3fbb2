#!/usr/bin/env bash
# Builds a Kiwano guest written in Python into a WebAssembly component.
#
#   guest-sdk/python/build.sh <app-dir> <module> <out.wasm>
#
# <app-dir> holds <module>.py, which defines `class Guest(wit_world.exports.Guest)`. Needs
# componentize-py 0.25 (tests/setup.sh installs it).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 <app-dir> <module> <out.wasm>" >&2
    exit 2
fi
app_dir=$(cd "$1" && pwd)
module=$2
mkdir -p "$(dirname "$3")"
out=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
wit=$(cd "$(dirname "$0")/../../wit" && pwd)
exec componentize-py -d "$wit" -w server componentize "$module" -p "$app_dir" -o "$out"
