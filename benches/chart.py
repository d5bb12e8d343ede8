#!/usr/bin/env python3
"""Draws docs/img/performance.png from the loadgen results in docs/perf/*.jsonl
and the peers' numbers quoted in the performance issue.
Needs matplotlib (`pip install matplotlib`). Run from the repository root."""
import json
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(name):
    with open(f"docs/perf/{name}.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def median(rows, key):
    return statistics.median(r[key] for r in rows)


peers = {"uWebSockets": 1_300_000, "nats-server 2.9": 1_010_000, "Node ws 8": 128_000, "tokio-tungstenite": 112_000}
ours = median(load("max"), "delivered_per_s")
names = ["tickwire"] + list(peers)
values = [ours] + list(peers.values())

fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
bars = a.barh(names[::-1], [v / 1e6 for v in values[::-1]], color=["#888"] * len(peers) + ["#2a7"])
a.set_xlabel("delivered messages/s (millions), 1,000 subs x 10 of 100 topics, max rate")
a.set_title("Fan-out throughput, one core each (median of 3)")
for bar, v in zip(bars, values[::-1]):
    a.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v / 1e6:.2f}M", va="center")
a.set_xlim(0, max(values) / 1e6 * 1.25)

rows = [("500 ticks/s", load("rate500")), ("2,000 ticks/s", load("rate2000")),
        ("100 subs, 1 KiB", load("noslow")), ("+ 5 stuck", load("slow"))]
labels = [r[0] for r in rows]
p50 = [median(r[1], "lat_p50_us") / 1000 for r in rows]
p99 = [median(r[1], "lat_p99_us") / 1000 for r in rows]
x = range(len(rows))
b.bar([i - 0.2 for i in x], p50, width=0.4, label="p50", color="#7bc")
b.bar([i + 0.2 for i in x], p99, width=0.4, label="p99", color="#c75")
b.set_xticks(list(x), labels)
b.set_ylabel("latency (ms), send to receive")
b.set_title("tickwire latency (median of the runs in docs/perf)")
b.legend()
fig.tight_layout()
fig.savefig("docs/img/performance.png", dpi=100)
print("wrote docs/img/performance.png")
