#!/usr/bin/env bash
# Installs what building and running Kiwano needs, when it is missing; quick when everything is
# already there. Used by examples/run.sh (and by tests/setup.sh, which adds what only the tests
# need).
set -euo pipefail

# Guests are WebAssembly components built from source.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

# The etcd client's gRPC code is generated at build time by protoc.
if ! command -v protoc >/dev/null 2>&1; then
    echo "setup: installing protobuf-compiler (protoc) from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
