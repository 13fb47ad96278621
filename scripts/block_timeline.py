#!/usr/bin/env python3
"""Per-block timeline of the decode step's kernels from a block trace (src/kernels/cuda/block_trace.cuh).

    cmake -DBITLIGHT_CUDA_BLOCK_TRACE=ON ...   # the marks are compiled in only with this option
    BITLIGHT_CUDA_BLOCK_TRACE_OUT=t.bin bitlight bench -m M --device cuda -p 512 -n 16 -r 1
    python3 scripts/block_timeline.py t.bin [--layers 64]

A launch is the events of one (kernel, tag, grid) between two starts of the same block. Launches
are put in order of their first block's start; a layer is the launches from one attention to the
next, so each launch has an offset from the attention before it (-1: the QKV GEMV, 1: the O
GEMV, ...). For the last --layers layers of complete launches, the table gives per offset the
median over layers of: when its blocks entered, returned from their wait and exited (first,
median, last block), each relative to the last exit of the launch before it (us), the share
(last exit - the launch before's last exit), and how many blocks had entered before the launch
before ended.
"""
import argparse
import statistics
import struct
from collections import defaultdict

KERNELS = {1: "gemv_dp4a", 2: "attention", 3: "quantize_x", 4: "gemv_fp32", 5: "gemv_bl"}
EVENT = struct.Struct("<QIIIHBB")


def read_events(path):
    data = open(path, "rb").read()
    (count,) = struct.unpack_from("<Q", data, 0)
    n = (len(data) - 8) // EVENT.size
    events = [EVENT.unpack_from(data, 8 + i * EVENT.size) for i in range(n)]
    return count, sorted(events)


def launches_of(events):
    """[(kernel, grid, {point: [ns per block]}, tag)] for launches where every block left all three marks."""
    current = {}  # (kernel, tag, grid) -> (points, blocks entered)
    done = []
    for ns, tag, block, grid, _sm, kernel, point in events:
        key = (kernel, tag, grid)
        if point == 0 and (key not in current or block in current[key][1]):
            if key in current:
                done.append((key, current[key][0]))
            current[key] = (defaultdict(list), set())
        if key not in current:
            continue  # the launch started before the ring's oldest event
        current[key][0][point].append(ns)
        if point == 0:
            current[key][1].add(block)
    done.extend((key, c[0]) for key, c in current.items())
    full = [(k, p) for k, p in done if all(len(p[i]) == k[2] for i in range(3))]
    full.sort(key=lambda kp: min(kp[1][0]))
    return full


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--layers", type=int, default=64)
    args = ap.parse_args()
    count, events = read_events(args.trace)
    stamps = sorted({e[0] for e in events})
    steps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
    print(f"{count} events appended, {len(events)} read; %globaltimer's smallest step {min(steps) if steps else 0} ns")
    launches = launches_of(events)
    attention_at = [i for i, (k, _) in enumerate(launches) if k[0] == 2]
    if len(attention_at) < 3:
        raise SystemExit("fewer than three complete attention launches in the trace")
    rows = defaultdict(lambda: defaultdict(list))  # (offset, kernel, grid) -> metric -> values
    for a, b in zip(attention_at[-args.layers - 1:], attention_at[-args.layers:]):
        for i in range(a, b):
            (kernel, _tag, grid), points = launches[i]
            prev_end = max(launches[i - 1][1][2])
            r = rows[(i - a, KERNELS.get(kernel, str(kernel)), grid)]
            for point, name in ((0, "enter"), (1, "waited"), (3, "step1"), (4, "step2"), (2, "exit")):
                v = sorted(points.get(point, [prev_end]))
                r[name + " first"].append((v[0] - prev_end) / 1e3)
                r[name + " median"].append((v[len(v) // 2] - prev_end) / 1e3)
                r[name + " last"].append((v[-1] - prev_end) / 1e3)
            r["early"].append(sum(1 for t in points[0] if t < prev_end))
    cols = ["enter first", "enter median", "enter last", "waited first", "waited median", "waited last",
            "step1 median", "step1 last", "step2 median", "step2 last", "exit first", "exit median", "exit last"]
    print(f"\nmedians over {len(attention_at[-args.layers:])} layers; us from the launch before's last exit\n")
    print("| offset | kernel | grid | " + " | ".join(cols) + " | blocks in before it ended |")
    print("|---" * (len(cols) + 4) + "|")
    for key in sorted(rows):
        r = rows[key]
        med = {c: statistics.median(r[c]) for c in r}
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(f"{med[c]:.2f}" for c in cols) +
              f" | {med['early']:.0f} |")


if __name__ == "__main__":
    main()
