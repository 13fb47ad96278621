#!/usr/bin/env python3
"""Per-block timeline of the decode step's kernels from a block trace (src/kernels/cuda/block_trace.cuh).

    cmake -DBITLIGHT_CUDA_BLOCK_TRACE=ON ...   # the marks are compiled in only with this option
    BITLIGHT_CUDA_BLOCK_TRACE_OUT=t.bin bitlight bench -m M --device cuda -p 512 -n 16 -r 1
    python3 scripts/block_timeline.py t.bin [--layers 64]

Each launch writes its own slot, and a replayed graph rewrites its launches' slots, so after a
bench the decode launches' slots hold the last decode step. Launches (the events of one slot with
the kernel, tag and grid of its latest event) are put in order of their first block's start; a
layer is the launches from one attention to the next, so each launch has an offset from the
attention that begins its layer (1: the O GEMV, ...; the last one of a layer is the next layer's
QKV GEMV). For the last --layers layers of complete launches (every block traced, grids of at
most 512 blocks), the table gives per offset the median over layers of: when its blocks entered,
returned from their wait, passed the kernel's steps (attention: q rotated and in registers, its
slot loop done) and exited (first, median, last block), each in us from the last exit of the
launch before it; the last exit is the launch's share of the step. "in early" counts the blocks
that entered before the launch before ended.
"""
import argparse
import statistics
import struct
from collections import defaultdict

KERNELS = {1: "gemv_dp4a", 2: "attention", 3: "quantize_x"}  # block_trace::Kernel
EVENT = struct.Struct("<QIIHHBBH")  # ns, tag, grid, slot, sm, kernel, point, block (block_trace.h)


def read_events(path):
    data = open(path, "rb").read()
    (count,) = struct.unpack_from("<Q", data, 0)
    n = (len(data) - 8) // EVENT.size
    events = [EVENT.unpack_from(data, 8 + i * EVENT.size) for i in range(n)]
    return count, sorted(events)


def launches_of(events):
    """[((kernel, tag, grid), {point: [ns per block]})] in order of first start, complete launches only."""
    by_slot = defaultdict(list)
    for e in events:
        by_slot[e[3]].append(e)
    launches = []
    for slot_events in by_slot.values():
        last = max(slot_events)  # the slot's latest launch
        key = (last[5], last[1], last[2])  # kernel, tag, grid
        points = defaultdict(list)
        for ns, tag, grid, _slot, _sm, kernel, point, _block in slot_events:
            if (kernel, tag, grid) == key:
                points[point].append(ns)
        if all(len(points[p]) == key[2] for p in (0, 1, 2)):
            launches.append((key, points))
    launches.sort(key=lambda kp: min(kp[1][0]))
    return launches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--layers", type=int, default=64)
    args = ap.parse_args()
    count, events = read_events(args.trace)
    stamps = sorted({e[0] for e in events})
    steps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
    print(f"{count} events; %globaltimer's smallest step {min(steps) if steps else 0} ns")
    launches = launches_of(events)
    attention_at = [i for i, (k, _) in enumerate(launches) if k[0] == 2]
    if len(attention_at) < 3:
        raise SystemExit("fewer than three complete attention launches in the trace")
    rows = defaultdict(lambda: defaultdict(list))  # (offset, kernel, grid) -> metric -> values
    starts = attention_at[-(args.layers + 1):]
    for a, b in zip(starts, starts[1:]):
        for i in range(max(a, 1), b):  # the first launch has no launch before it
            (kernel, _tag, grid), points = launches[i]
            prev_end = max(launches[i - 1][1][2])
            r = rows[(i - a, KERNELS.get(kernel, str(kernel)), grid)]
            for point, name in ((0, "enter"), (1, "waited"), (3, "step1"), (4, "step2"), (2, "exit")):
                v = sorted(points.get(point, [prev_end]))
                r[name + " first"].append((v[0] - prev_end) / 1e3)
                r[name + " median"].append((v[len(v) // 2] - prev_end) / 1e3)
                r[name + " last"].append((v[-1] - prev_end) / 1e3)
            r["in early"].append(sum(1 for t in points[0] if t < prev_end))
    cols = ["enter first", "enter median", "enter last", "waited first", "waited median", "waited last",
            "step1 median", "step1 last", "step2 median", "step2 last", "exit first", "exit median", "exit last"]
    print(f"\nmedians over {len(starts) - 1} layers; us from the launch before's last exit\n")
    print("| offset | kernel | grid | " + " | ".join(cols) + " | in early |")
    print("|---" * (len(cols) + 4) + "|")
    for key in sorted(rows):
        r = rows[key]
        med = {c: statistics.median(r[c]) for c in r}
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(f"{med[c]:.2f}" for c in cols) +
              f" | {med['in early']:.0f} |")


if __name__ == "__main__":
    main()
