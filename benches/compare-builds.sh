#!/usr/bin/env bash
# Runs the performance scenarios of docs/performance.md against several broker
# binaries back to back, interleaved (run 1 of every binary, then run 2, ...),
# so that the machine's drift hits them alike. Broker pinned to core 0, loadgen
# to core 1. One JSON line per run lands in OUT/<scenario>-<name>.jsonl.
#
# usage: benches/compare-builds.sh OUT RUNS NAME=BINARY [NAME=BINARY...]
# e.g.:  cp target/release/tickwire /tmp/tw-new   (and an older build as /tmp/tw-old)
#        benches/compare-builds.sh /tmp/cmp 3 old=/tmp/tw-old new=/tmp/tw-new
# Build loadgen first: cargo build --release -p tickwire-benches --bin loadgen
# SCENARIOS="conns rate500" runs only those (default: all six).
set -euo pipefail
scenarios=${SCENARIOS:-max rate2000 rate500 noslow slow conns}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$1 runs=$2; shift 2
mkdir -p "$out"
port=29600
run() { # scenario name binary loadgen-args...
    local scenario=$1 name=$2 bin=$3; shift 3
    case " $scenarios " in *" $scenario "*) ;; *) return 0 ;; esac
    port=$((port + 1))
    taskset -c 0 "$bin" --listen "127.0.0.1:$port" --no-demo-feed --publisher-key bench \
        >"$out/broker-$port.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
    taskset -c 1 "$root/target/release/loadgen" "$@" --url "ws://127.0.0.1:$port/ws" --key bench \
        --broker-pid "$pid" --quiet 2>/dev/null | tail -1 >>"$out/$scenario-$name.jsonl"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$runs"); do
    for pair in "$@"; do
        name=${pair%%=*} bin=${pair#*=}
        run max "$name" "$bin" fanout --subs 1000 --topics 100 --per-sub 10 --rate 0 --duration 10 --warmup 2
        run rate2000 "$name" "$bin" fanout --subs 1000 --topics 100 --per-sub 10 --rate 2000 --duration 10 --warmup 2
        run rate500 "$name" "$bin" fanout --subs 1000 --topics 100 --per-sub 10 --rate 500 --duration 10 --warmup 2
        run noslow "$name" "$bin" fanout --subs 100 --topics 10 --per-sub 10 --rate 1000 --payload-bytes 1024 --duration 10 --warmup 2
        run slow "$name" "$bin" slow --subs 100 --slow 5 --topics 10 --per-sub 10 --rate 1000 --payload-bytes 1024 --duration 10 --warmup 2
        run conns "$name" "$bin" conns --subs 10000 --topics 100 --per-sub 10 --duration 3
    done
done
