#!/usr/bin/env bash
# Compares builds on the cluster's "same" row at "as fast as acked"
# (docs/cluster.md): a nats-server and two nodes a and b of each build, both
# nodes on core 0, loadgen on core 1, publisher and subscribers on node a.
# Builds are alternated, ROUNDS times (default 3); one loadgen JSON line per
# run goes to OUT/same-NAME.jsonl.
#
#   benches/cluster-pair.sh OUT before=/tmp/tw-a after=/tmp/tw-b
set -u
cd "$(dirname "$0")/.."
out=$1
shift
mkdir -p "$out"
nats=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
port=14400
for _ in $(seq "${ROUNDS:-3}"); do
    for pair in "$@"; do
        name=${pair%%=*}
        bin=${pair#*=}
        port=$((port + 10))
        "$nats" -a 127.0.0.1 -p "$port" >/dev/null 2>&1 &
        np=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        node() {
            RUST_LOG=warn taskset -c 0 "$bin" --listen "127.0.0.1:$1" --no-demo-feed --publisher-key k \
                --cluster-nats "nats://127.0.0.1:$port" --cluster-node "$2" >/dev/null 2>&1 &
        }
        node $((port + 1)) a
        ap=$!
        node $((port + 2)) b
        bp=$!
        for _ in $(seq 100); do
            curl -sf "127.0.0.1:$((port + 1))/healthz" >/dev/null && curl -sf "127.0.0.1:$((port + 2))/healthz" >/dev/null && break
            sleep 0.05
        done
        taskset -c 1 target/release/loadgen fanout --key k --subs 200 --topics 50 --per-sub 5 \
            --warmup 1 --duration 5 --drain 3 --quiet --url "ws://127.0.0.1:$((port + 1))/ws" \
            --rate 0 --broker-pid "$ap" 2>/dev/null | tail -n 1 >>"$out/same-$name.jsonl"
        kill "$ap" "$bp" "$np"
        wait "$ap" "$bp" "$np" 2>/dev/null
    done
done
true
