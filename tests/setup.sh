#!/usr/bin/env bash
# Installs what the test suite needs beyond building and running (deploy/setup.sh), when it is
# missing; quick when everything is already there. Used by tests/run.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/deploy/setup.sh"

# Python guests: componentize-py (guest-sdk/python/build.sh).
if ! componentize-py --version 2>/dev/null | grep -q '^componentize-py 0\.25\.'; then
    echo "setup: installing componentize-py 0.25 from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'componentize-py==0.25.*'
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# JavaScript guests: componentize-js, pinned by guest-sdk/js/package-lock.json.
js="$root/guest-sdk/js"
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    echo "setup: installing componentize-js (npm ci in guest-sdk/js)" >&2
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Debian packages: Chromium for the browser test of examples/chat's page, the openssl command
# line for a TLS client that sends an IP address as SNI (as libpitaya does), and the cluster's
# real services (the tests start their own on free loopback ports), and Prometheus (promtool and
# a server that scrapes a Kiwano process).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
browser="$root/tests/browser"
if [ ! -f "$browser/node_modules/.package-lock.json" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
    echo "setup: installing playwright-core (npm ci in tests/browser)" >&2
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
