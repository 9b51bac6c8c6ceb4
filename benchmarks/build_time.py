"""Wall-clock time of `derive build` (start-up included) against T and hidden size.

Targets (issue 5): T = 10 under 3 s; T = 100 within 10x of T = 10; hidden 512 within 1.5x
of hidden 2. Prints a Markdown table; `--formats` picks the outputs (default all, PDF too).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """name = "bench_rnn"
[model]
input_size = 8
hidden_sizes = [{hidden}]
output_size = 4
output_activation = "softmax"
[loss]
kind = "cross_entropy"
[bptt]
steps = {steps}
"""


def build_seconds(steps: int, hidden: int, formats: str, runs: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench_rnn.toml"
        spec.write_text(SPEC.format(steps=steps, hidden=hidden))
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "derive", "build", str(spec), "--out", tmp,
                            "--format", formats, "--force"], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--formats", default="tex,pdf,md,py")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = {(t, h): build_seconds(t, h, args.formats, args.runs) for t in (10, 100) for h in (2, 512)}
    print(f"### `derive build` wall-clock (`benchmarks/build_time.py`, formats {args.formats}, "
          f"median of {args.runs})\n")
    print("| T | hidden 2 (s) | hidden 512 (s) | 512 / 2 |\n|---:|---:|---:|---:|")
    for t in (10, 100):
        print(f"| {t} | {rows[t, 2]:.2f} | {rows[t, 512]:.2f} | {rows[t, 512] / rows[t, 2]:.2f} |")
    worst10 = max(rows[10, 2], rows[10, 512])
    ratio = max(rows[100, h] / rows[10, h] for h in (2, 512))
    size = max(rows[t, 512] / rows[t, 2] for t in (10, 100))
    print("\n| target | measured | verdict |\n|---|---|---|")
    print(f"| T = 10 under 3 s | {worst10:.2f} s | {'met' if worst10 < 3 else 'not met'} |")
    print(f"| T = 100 within 10x of T = 10 | {ratio:.1f}x | {'met' if ratio <= 10 else 'not met'} |")
    print(f"| hidden 512 within 1.5x of hidden 2 | {size:.2f}x | {'met' if size <= 1.5 else 'not met'} |")


if __name__ == "__main__":
    main()
