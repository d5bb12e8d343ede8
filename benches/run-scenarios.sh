#!/usr/bin/env bash
# Runs one loadgen scenario against a freshly started release broker, the
# broker pinned to core 0 and loadgen to core 1, and prints loadgen's JSON line.
# usage: benches/run-scenarios.sh PORT -- LOADGEN_ARGS...
# Build first: cargo build --release -p tickwire -p tickwire-benches --bin tickwire --bin loadgen
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=$1; shift; [ "${1:-}" = "--" ] && shift
taskset -c 0 "$root/target/release/tickwire" --listen "127.0.0.1:$port" --no-demo-feed \
    --publisher-key bench >"/tmp/tickwire-bench-$port.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
taskset -c 1 "$root/target/release/loadgen" "$@" --url "ws://127.0.0.1:$port/ws" --key bench \
    --broker-pid "$pid" --quiet 2>/dev/null | tail -1
