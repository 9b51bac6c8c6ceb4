"""`derive build --all` wall-clock, two installations interleaved in one run.

Compares the current checkout with another installation of derive (an older commit in its
own virtualenv), alternating runs so that both see the same machine load, and prints the
medians and their ratio. Example (issue 9: "no slower than before"):

    git worktree add /tmp/old <commit> && python -m venv --system-site-packages /tmp/venv-old
    (cd /tmp/old && /tmp/venv-old/bin/pip install --no-deps -e .)
    python benchmarks/build_all_time.py --other /tmp/venv-old/bin/python --runs 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def once(python: str, formats: str, cwd: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([python, "-m", "derive", "build", "--all", "--out", out, "--format", formats],
                       check=True, capture_output=True, cwd=cwd)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", required=True, help="python of the installation to compare with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--formats", default="tex,pdf,md,py")
    args = parser.parse_args()
    neutral = tempfile.mkdtemp()   # run outside both checkouts, so each imports its own install
    times: dict[str, list[float]] = {"this": [], "other": []}
    for _ in range(args.runs):
        for label, python in (("this", sys.executable), ("other", args.other)):
            times[label].append(once(python, args.formats, neutral))
    this, other = statistics.median(times["this"]), statistics.median(times["other"])
    print(f"| formats | other | this | this / other |\n|---|---|---|---|\n"
          f"| {args.formats} | {other:.2f} s | {this:.2f} s | {this / other:.3f} |")
    os.rmdir(neutral)


if __name__ == "__main__":
    main()
