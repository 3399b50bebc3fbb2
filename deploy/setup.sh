#!/usr/bin/env bash
# Installs what Kiwano's build, examples and tests need, when it is missing; quick when
# everything is already there. Used by examples/run.sh and tests/run.sh.
set -euo pipefail

# Guests are WebAssembly components built from source.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

# Python guests: componentize-py (guest-sdk/python/build.sh).
if ! componentize-py --version 2>/dev/null | grep -q '^componentize-py 0\.25\.'; then
    echo "setup: installing componentize-py 0.25 from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'componentize-py==0.25.*'
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# JavaScript guests: componentize-js, pinned by guest-sdk/js/package-lock.json.
js="$(cd "$(dirname "$0")/.." && pwd)/guest-sdk/js"
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    echo "setup: installing componentize-js (npm ci in guest-sdk/js)" >&2
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Browser test of examples/chat's page: Debian's Chromium, driven by playwright-core.
if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
browser="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if [ ! -f "$browser/node_modules/.package-lock.json" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
    echo "setup: installing playwright-core (npm ci in tests/browser)" >&2
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
