#!/usr/bin/env bash
# A Pitaya-style cluster on this machine: nats-server and etcd on free loopback ports, and one
# `kiwano run --type` process per server.
#
#   deploy/local/run.sh <project> [<type>=<count>...]
#
# Each type of the project runs <count> servers (default 1, for types not named too; 0 leaves
# the type out), with ids <type>-1, <type>-2…. The first frontend of each type keeps the
# project's configured ports;
# further ones get free ports on the configured IP. Every address is printed, and each server's
# output is shown with its id in front (and kept in a temporary log directory, also printed).
# Ctrl-C or SIGTERM stops every process it started; if one server exits, the rest are stopped.
# nats-server and etcd come from Debian's packages (`nats-server`, `etcd-server`), installed
# when missing. KIWANO_* variables reach every server as config overrides.
#
# Each server has an HTTP listener of its own on a free loopback port (`/metrics`, `/healthz`,
# `/readyz`, and the project's web client if it has one), printed with its addresses, unless
# KIWANO_APP_HTTP is set. They are listed for Prometheus in deploy/local/targets/<run>.json,
# which deploy/prometheus/prometheus.yml reads (removed when the cluster stops):
#   prometheus --config.file=deploy/prometheus/prometheus.yml --storage.tsdb.path=/tmp/kiwano-tsdb
set -euo pipefail

usage() { echo "usage: $0 <project> [<type>=<count>...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
root=$(cd "$(dirname "$0")/../.." && pwd)
project=$(cd "$1" && pwd) || usage
shift
declare -A count=()
for arg in "$@"; do
    [[ $arg =~ ^([A-Za-z0-9_-]+)=([0-9]+)$ ]] || { echo "run.sh: $arg: want <type>=<count>" >&2; exit 2; }
    count[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done

cd "$root"
deploy/setup.sh
missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
cargo build -q -p kiwano
kiwano="$root/target/debug/kiwano"
"$kiwano" build "$project"
servers=$("$kiwano" servers "$project")
for t in "${!count[@]}"; do
    grep -q "^$t " <<<"$servers" || { echo "run.sh: the project has no server type $t" >&2; exit 2; }
done

logs=$(mktemp -d -t kiwano-local.XXXXXX)
# Prometheus's file-based discovery of this run's servers (file_sd_configs).
mkdir -p "$root/deploy/local/targets"
targets="$root/deploy/local/targets/$(basename "$logs").json"
target_list=()
pids=()
services=()
stopping=0
stop_all() {
    [ $stopping = 1 ] && return
    stopping=1
    trap '' INT TERM
    echo "run.sh: stopping" >&2
    # Servers first, all at once (each drains, leaves etcd and flushes NATS); then NATS and etcd.
    stop_pids "${pids[@]}"
    stop_pids "${services[@]}"
    rm -f "$targets"
    wait 2>/dev/null || true
    echo "run.sh: stopped; logs in $logs" >&2
}
# SIGTERM to each of the given processes, then up to 15 s for them to end, then SIGKILL.
stop_pids() {
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $2 is not listening on $1 (log: $logs/$2.log)" >&2
    exit 1
}
# Starts a process in the background, its output prefixed with `name` and kept in a log. It
# runs in a session of its own, and its output pipe ignores INT and TERM: a Ctrl-C reaches this
# script only, which stops the servers one signal each, in order.
start() {
    local name=$1
    shift
    setsid "$@" > >(trap '' INT TERM; tee "$logs/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
    pids+=($!)
}
# A service the servers need (nats-server, etcd): its output in its log only; stopped last.
start_service() {
    local name=$1
    shift
    setsid "$@" >"$logs/$name.log" 2>&1 &
    services+=($!)
}

nats_port=$(free_port)
etcd_port=$(free_port)
etcd_peer=$(free_port)
start_service nats "$nats_server" -a 127.0.0.1 -p "$nats_port"
start_service etcd etcd --name kiwano-local --data-dir "$logs/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "kiwano-local=http://127.0.0.1:$etcd_peer"
wait_port "$nats_port" nats
wait_port "$etcd_port" etcd
export KIWANO_CLUSTER_NATS_URL="nats://127.0.0.1:$nats_port"
export KIWANO_CLUSTER_ETCD_ENDPOINTS="[\"127.0.0.1:$etcd_port\"]"

summary=("nats     nats://127.0.0.1:$nats_port" "etcd     127.0.0.1:$etcd_port")
while read -r type role acceptors; do
    n=${count[$type]:-1}
    for ((i = 1; i <= n; i++)); do
        id="$type-$i"
        listen=()
        if [ "$role" = frontend ] && [ "$i" -gt 1 ]; then
            for a in $acceptors; do
                kind=${a%%=*}
                ip=${a#*=}
                ip=${ip%:*}
                bind=$ip
                [ "$bind" = 0.0.0.0 ] && bind=127.0.0.1
                listen+=(--listen "$kind=$ip:$(free_port "$bind")")
            done
        fi
        http_env=()
        if [ -z "${KIWANO_APP_HTTP:-}" ]; then
            http="127.0.0.1:$(free_port)"
            http_env=(env "KIWANO_APP_HTTP=$http")
            target_list+=("{\"targets\":[\"$http\"],\"labels\":{\"server_id\":\"$id\",\"server_type\":\"$type\"}}")
        fi
        start "$id" "${http_env[@]}" "$kiwano" run "$project" --type "$type" --id "$id" "${listen[@]}"
        for _ in $(seq 1200); do
            grep -q "kiwano is serving" "$logs/$id.log" 2>/dev/null && break
            kill -0 "${pids[-1]}" 2>/dev/null || { echo "run.sh: $id exited (log: $logs/$id.log)" >&2; exit 1; }
            sleep 0.1
        done
        grep -q "kiwano is serving" "$logs/$id.log" || { echo "run.sh: $id is not serving after 120 s" >&2; exit 1; }
        addresses=$(grep -o 'kind=[A-Za-z]* address=[^ ]*' "$logs/$id.log" | sed 's/kind=//; s/ address=/ /' | tr '\n' ' ' || true)
        [ ${#http_env[@]} -gt 0 ] && addresses="$addresses http $http"
        summary+=("$(printf '%-8s %s %s' "$id" "$role" "$addresses")")
    done
done <<<"$servers"

if [ ${#target_list[@]} -gt 0 ]; then
    (IFS=,; echo "[${target_list[*]}]") >"$targets.tmp" && mv "$targets.tmp" "$targets"
    summary+=("prometheus targets: $targets")
fi
echo "run.sh: the cluster is up (logs in $logs); Ctrl-C stops it" >&2
printf 'run.sh:   %s\n' "${summary[@]}" >&2
# Until a signal, or until any process ends.
wait -n "${pids[@]}" "${services[@]}" || true
[ $stopping = 1 ] || echo "run.sh: a process ended; stopping the others" >&2
