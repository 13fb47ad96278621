#!/usr/bin/env python3
"""Per-kernel timeline of decode steps from a kernel trace (tools/kernel_trace, CUPTI).

    python3 scripts/kernel_timeline.py TRACE.csv [--steps 8] [--prefill]

A decode step is the kernels from an embedding lookup (get_rows) to the next argmax; the last
--steps of them are summarised. Kernels of a step finish in launch order (each waits for the one
before it, also under programmatic dependent launch, which only lets it start early), so
end[i] - end[i-1] is the time kernel i adds to the step: its *share*. The table groups kernels by
name (template arguments included) with calls per step, mean run time (start to end, which under
PDL includes waiting for the kernel before) and share per call, and the share of the step;
"between steps" is the host's gap from one step's last kernel to the next step's first.
"""
import argparse
import csv
import shutil
import statistics
import subprocess
from collections import defaultdict


def demangle(names):
    tool = shutil.which("c++filt")
    if not tool:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short(name):
    """bl::cuda::(anonymous namespace)::gemv_dp4a_kernel<(bl::DType)2, 1, ...>(bl::cuda::GemvArgs) ->
    gemv_dp4a_kernel<(DType)2, 1, ...>"""
    for prefix in ("bl::cuda::(anonymous namespace)::", "bl::cuda::", "void "):
        name = name.replace(prefix, "")
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the parameter list after the template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    return name[:cut].replace("bl::DType", "DType").replace("bl::cuda::", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prefill", action="store_true",
                    help="a step is a whole forward, get_rows to the kernel before the next get_rows or "
                         "bandwidth probe (a prompt's forward ends without an argmax)")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.trace)))
    names = demangle(sorted({r["name"] for r in rows}))
    kernels = sorted(((int(r["start_ns"]), int(r["end_ns"]), short(names[r["name"]])) for r in rows))
    steps, current = [], None
    for k in kernels:
        if a.prefill and "probe" in k[2]:  # the bench's bandwidth probe between forwards
            if current:
                steps.append(current)
            current = None
        elif "get_rows" in k[2]:
            if a.prefill and current:
                steps.append(current)
            current = [k]
        elif current is not None:
            current.append(k)
            if "argmax" in k[2] and not a.prefill:
                steps.append(current)
                current = None
    if a.prefill and current:
        steps.append(current)
    if not steps:
        raise SystemExit("no decode step (get_rows ... argmax) in the trace")
    steps = steps[-a.steps:]
    share, run, calls = defaultdict(list), defaultdict(list), defaultdict(int)
    step_us, gaps = [], []
    previous_end = None
    for step in steps:
        if previous_end is not None:
            gaps.append((step[0][0] - previous_end) / 1e3)
        last_end = step[0][0]
        for start, end, name in step:
            share[name].append((end - last_end) / 1e3)
            run[name].append((end - start) / 1e3)
            calls[name] += 1
            last_end = max(last_end, end)
        step_us.append((last_end - step[0][0]) / 1e3)
        previous_end = last_end
    n = len(steps)
    mean_step = statistics.mean(step_us)
    print(f"{n} decode steps, {len(steps[-1])} kernels each; step (first start to last end) {mean_step:.1f} us"
          + (f", between steps {statistics.mean(gaps):.1f} us" if gaps else ""))
    print("| kernel | calls/step | run us/call | share us/call | share us/step | % of step |")
    print("|---|---|---|---|---|---|")
    for name in sorted(share, key=lambda k: -sum(share[k])):
        per_step = sum(share[name]) / n
        print(f"| `{name}` | {calls[name] / n:.0f} | {statistics.mean(run[name]):.2f} | "
              f"{statistics.mean(share[name]):.2f} | {per_step:.1f} | {100 * per_step / mean_step:.1f} % |")


if __name__ == "__main__":
    main()
