"""scripts/kernel_timeline.py: the per-kernel shares of decode steps, from a kernel trace.

The trace comes from tools/kernel_trace on a GPU machine; here a hand-made one with known times
checks the arithmetic: steps run from an embedding lookup (get_rows) to the next argmax, a
kernel's share is its end minus the previous kernel's end (overlapping starts under PDL do not
count twice), the shares of a step add up to the step, and the host gap between steps is
reported apart.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (start_ns, end_ns, name) of two decode steps after a prefill: get_rows, a GEMV that starts
# early (PDL) and ends at 6000, an attention kernel, argmax.
STEP = [(0, 1000, "get_rows_kernel"), (500, 6000, "gemv_kernel"), (5800, 9000, "attention_kernel"),
        (8000, 10000, "argmax_kernel")]


def test_kernel_timeline_shares(tmp_path):
    rows = [(0, 50000, "prefill_gemm_kernel"), (51000, 52000, "argmax_kernel")]  # not a decode step
    for base in (100000, 120000):
        rows += [(base + s, base + e, n) for s, e, n in STEP]
    trace = tmp_path / "trace.csv"
    trace.write_text("start_ns,end_ns,grid_x,grid_y,grid_z,block_x,graph_node,name\n" +
                     "".join(f"{s},{e},1,1,1,128,0,{n}\n" for s, e, n in rows))
    out = subprocess.run([sys.executable, ROOT / "scripts" / "kernel_timeline.py", trace, "--steps", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "2 decode steps, 4 kernels each; step (first start to last end) 10.0 us, between steps 10.0 us" in out
    table = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-1]]
             for line in out.splitlines() if line.startswith("| `")}
    # calls/step, run us/call, share us/call, share us/step, % of step
    assert table["gemv_kernel"] == ["1", "5.50", "5.00", "5.0", "50.0 %"]
    assert table["attention_kernel"] == ["1", "3.20", "3.00", "3.0", "30.0 %"]
    assert table["argmax_kernel"] == ["1", "2.00", "1.00", "1.0", "10.0 %"]
    assert table["get_rows_kernel"] == ["1", "1.00", "1.00", "1.0", "10.0 %"]
    assert "prefill_gemm_kernel" not in table
