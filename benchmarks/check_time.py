"""Wall-clock time of `derive check` (start-up included) on the presets and the specs of issue 11.

Targets (issue 11): every bundled preset under 5 s; `elman_softmax --steps 20` under 30 s;
a 2-layer relu model with sigmoid output and BCE at T = 4 under 30 s; time at most
linear in T (the ratios below are measured in one run); sizes above the numeric cap cost
the same as the cap. Prints a Markdown table (median of `--runs`, default 1) and peak
memory (ru_maxrss of the child).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from derive import spec as specs

SPECS = {
    "sigmoid1_mse": """name = "sigmoid1_mse"
[model]
input_size = 3
hidden_sizes = [4]
activation = "sigmoid"
[bptt]
steps = {steps}
""",
    "relu1_mse": """name = "relu1_mse"
[model]
input_size = 3
hidden_sizes = [4]
activation = "relu"
[bptt]
steps = {steps}
""",
    "relu2_sigmoid_bce": """name = "relu2_sigmoid_bce"
[model]
input_size = 3
hidden_sizes = [4, 3]
output_size = 2
activation = "relu"
output_activation = "sigmoid"
[loss]
kind = "bce"
[bptt]
steps = {steps}
""",
    # gated cells (issue 14): the three-word sentence's sizes, as elman_softmax
    "gated": """name = "gated_{cell}_{reset}"
[model]
cell = "{cell}"
{reset_line}
input_size = 3
hidden_sizes = {hidden}
output_size = 3
output_activation = "softmax"
[loss]
kind = "cross_entropy"
[bptt]
steps = {steps}
{truncate}
""",
    "wide": """name = "wide"
[model]
input_size = 3
hidden_sizes = [{hidden}]
output_size = 3
output_activation = "softmax"
[loss]
kind = "cross_entropy"
[bptt]
steps = {steps}
""",
}


def seconds(args: list[str], runs: int) -> tuple[float, float, str]:
    """Median wall time, peak child memory (MiB), and the report's last line."""
    times, last = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "derive", "check", *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()
        if result.returncode:
            last = f"exit {result.returncode}: {last}"
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return statistics.median(times), peak, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, metavar="TEXT",
                        help="run only the cases whose label contains one of these texts (e.g. lstm gru elman_softmax)")
    args = parser.parse_args()
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        def spec_file(key: str, steps: int, hidden: int = 4) -> str:
            path = Path(tmp) / f"{key}_{steps}_{hidden}.toml"
            path.write_text(SPECS[key].format(steps=steps, hidden=hidden))
            return str(path)

        def gated_file(cell: str, steps: int, hidden: str = "[4]", reset: str = "after", truncate: str = "") -> str:
            path = Path(tmp) / f"{cell}_{reset}_{steps}_{len(hidden)}_{len(truncate)}.toml"
            path.write_text(SPECS["gated"].format(cell=cell, reset=reset, steps=steps, hidden=hidden,
                                                  reset_line=f'gru_reset = "{reset}"' if cell == "gru" else "",
                                                  truncate=truncate))
            return str(path)

        cases = [(f"preset {n}", ["--preset", n]) for n in specs.preset_names()]
        cases += [(f"elman_softmax --steps {T}", ["--preset", "elman_softmax", "--steps", str(T)])
                  for T in (4, 5, 10, 20, 40, 80)]
        cases += [(f"truncated_elman --steps {T}", ["--preset", "truncated_elman", "--steps", str(T)])
                  for T in (50, 100, 200)]
        cases += [("1-layer sigmoid, T = 2", [spec_file("sigmoid1_mse", 2)]),
                  ("1-layer relu, T = 3", [spec_file("relu1_mse", 3)]),
                  ("2-layer relu + sigmoid + bce, T = 4", [spec_file("relu2_sigmoid_bce", 4)]),
                  ("2-layer relu + sigmoid + bce, T = 8", [spec_file("relu2_sigmoid_bce", 8)]),
                  ("hidden [200], T = 3", [spec_file("wide", 3, 200)]),
                  ("hidden [4096], T = 3", [spec_file("wide", 3, 4096)]),
                  ("elman_softmax --steps 20 --quick", ["--preset", "elman_softmax", "--steps", "20", "--quick"])]
        chunk = 'truncate = 2\ntruncate_style = "chunk"\nclip_norm = 1.0'
        cases += [("lstm, sizes of elman_softmax, T = 3", [gated_file("lstm", 3)]),
                  ("gru (reset after), T = 3", [gated_file("gru", 3)]),
                  ("gru (reset before), T = 3", [gated_file("gru", 3, reset="before")]),
                  ("lstm, T = 10", [gated_file("lstm", 10)]),
                  ("lstm, T = 20", [gated_file("lstm", 20)]),
                  ("lstm [4, 3], chunk 2, clip_norm, T = 4", [gated_file("lstm", 4, "[4, 3]", truncate=chunk)]),
                  ("gru [4, 3], chunk 2, clip_norm, T = 4", [gated_file("gru", 4, "[4, 3]", truncate=chunk)]),
                  ("lstm [100, 100], chunk 2, T = 20", [gated_file("lstm", 20, "[100, 100]", truncate=chunk)]),
                  ("lstm, T = 3 --exact-steps 3", [gated_file("lstm", 3), "--exact-steps", "3"])]
        if args.only:
            cases = [(label, argv) for label, argv in cases if any(text in label for text in args.only)]
        for label, argv in cases:
            wall, peak, last = seconds(argv, args.runs)
            rows.append((label, wall, peak, last))
            print(f"{label}: {wall:.2f} s", file=sys.stderr, flush=True)
    print("| spec | wall time | peak RSS | report's last line |")
    print("|---|---|---|---|")
    for label, wall, peak, last in rows:
        print(f"| `{label}` | {wall:.2f} s | {peak:.0f} MiB | {last} |")
    by = {label: wall for label, wall, _, _ in rows}
    if args.only:   # the scaling line needs every case
        if "lstm, T = 10" in by and "lstm, T = 20" in by:
            print(f"\nlstm (one run): T=20/T=10 {by['lstm, T = 20'] / by['lstm, T = 10']:.2f} (linear would be 2.00)")
        return
    t10, t20, t40, t80 = (by[f"elman_softmax --steps {T}"] for T in (10, 20, 40, 80))
    print()
    print(f"T scaling (elman_softmax, one run): T=20/T=10 {t20 / t10:.2f}, T=40/T=20 {t40 / t20:.2f}, "
          f"T=80/T=40 {t80 / t40:.2f}; truncated_elman: T=100/T=50 "
          f"{by['truncated_elman --steps 100'] / by['truncated_elman --steps 50']:.2f}, T=200/T=100 "
          f"{by['truncated_elman --steps 200'] / by['truncated_elman --steps 100']:.2f} "
          f"(linear would be 2.00; start-up is included); lstm: T=20/T=10 "
          f"{by['lstm, T = 20'] / by['lstm, T = 10']:.2f}")


if __name__ == "__main__":
    main()
