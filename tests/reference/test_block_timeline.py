"""scripts/block_timeline.py: per-block timelines of decode layers, from a block trace.

The trace comes from a build with -DBITLIGHT_CUDA_BLOCK_TRACE=ON on a GPU machine; here a
hand-made one with known times checks the arithmetic: launches are read per slot (an older
launch left in a slot, and a launch some of whose blocks left no mark, are not counted), put in
order of their first start, cut into layers at each attention, and every mark is given in us
from the last exit of the launch before.
"""
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENT = struct.Struct("<QIIHHBBH")  # ns, tag, grid, slot, sm, kernel, point, block (block_trace.h)
GEMV, ATTENTION = 1, 2
ENTER, WAITED, EXIT, STEP1, STEP2 = 0, 1, 2, 3, 4


def launch(slot, kernel, tag, grid, enter, waited, exit_, steps=()):
    """Events of one launch whose block b enters at enter + b * 100 ns, waits until waited + b * 100
    and exits at exit_ + b * 100 (so its first / last block are 100 * (grid - 1) ns apart)."""
    out = []
    for b in range(grid):
        marks = [(ENTER, enter), (WAITED, waited), (EXIT, exit_)] + list(steps)
        out += [(t + 100 * b, tag, grid, slot, b, kernel, point, b) for point, t in marks]
    return out


def test_block_timeline_layers(tmp_path):
    events, slot, t = [], 0, 1_000_000
    # An older launch with another grid, left in slot 0 before the decode step rewrote it.
    events += launch(0, GEMV, 99, 4, 10, 20, 30)
    for layer in range(3):
        # attention: 2 blocks, entering 1 us before the GEMV before it ends (t), waiting until
        # t + 0.5 us, q ready at + 1.5, slot loop done at + 2.5, exit at t + 4 us (+ 0.1 for block 1)
        events += launch(slot, ATTENTION, 200 + layer, 2, t - 1000, t + 500, t + 4000,
                         steps=[(STEP1, t + 1500), (STEP2, t + 2500)])
        slot += 1
        a_end = t + 4000 + 100
        # O GEMV: 3 blocks entering 2 us before the attention ends, waiting 0.7 us after it, exit + 3 us.
        events += launch(slot, GEMV, 300 + layer, 3, a_end - 2000, a_end + 700, a_end + 3000)
        slot += 1
        o_end = a_end + 3000 + 200
        # next QKV GEMV: 3 blocks entering after the O GEMV ended, exit 5 us after it.
        events += launch(slot, GEMV, 400 + layer, 3, o_end + 200, o_end + 1000, o_end + 5000)
        slot += 1
        t = o_end + 5000 + 200
    # A launch one of whose blocks left no exit mark: not counted.
    broken = launch(slot, GEMV, 500, 2, t + 100, t + 200, t + 300)
    events += [e for e in broken if not (e[7] == 1 and e[6] == EXIT)]
    trace = tmp_path / "trace.bin"
    trace.write_bytes(struct.pack("<Q", len(events)) + b"".join(EVENT.pack(*e) for e in events))

    out = subprocess.run([sys.executable, ROOT / "scripts" / "block_timeline.py", trace, "--layers", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "medians over 2 layers" in out
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): [c.strip() for c in line.split("|")[4:-1]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| offset")}
    # enter first / median / last, waited first / median / last, step1 median / last, step2 median /
    # last, exit first / median / last, in early
    assert rows[("0", "attention", "2")] == ["-1.00", "-0.90", "-0.90", "0.50", "0.60", "0.60", "1.60", "1.60",
                                             "2.60", "2.60", "4.00", "4.10", "4.10", "2"]
    assert rows[("1", "gemv_dp4a", "3")] == ["-2.00", "-1.90", "-1.80", "0.70", "0.80", "0.90", "0.00", "0.00",
                                             "0.00", "0.00", "3.00", "3.10", "3.20", "3"]
    assert rows[("2", "gemv_dp4a", "3")] == ["0.20", "0.30", "0.40", "1.00", "1.10", "1.20", "0.00", "0.00",
                                             "0.00", "0.00", "5.00", "5.10", "5.20", "0"]
    assert len(rows) == 3  # neither the old launch in slot 0 nor the broken one
