#!/usr/bin/env python
"""How the symbolic derivation scales with the sequence length T and the hidden size.

    python benchmarks/derive_scaling.py [--markdown] [--runs 3]

Model: a single-layer Elman RNN in d2l notation (column layout), input 8, output 4,
tanh, softmax + cross-entropy at every step.  One timed run is `bptt.derive(spec)` (the
unrolled delta recursion for T steps) plus `bptt.step_rule(spec)` (the generic step the
loop code is printed from).  SymPy's cache is cleared before every run, so each run
starts cold (the garbage collector is paused while a run is timed); the table reports
the median of `--runs` runs.

Targets (issue 2): T = 10 under 1 s; time linear in T (T = 100 takes at most 1.5x ten
times T = 10); hidden size 512 within 1.5x of hidden size 2.
"""
from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time

import sympy
from sympy.core.cache import clear_cache

from derive import bptt
from derive.spec import BPTT, Loss, Model, Notation, Spec, SpecError

STEPS = (3, 10, 30, 100)
SIZES = (2, 64, 512)
#: "linear in T": T = 100 may take at most this times (100 / 10) the time of T = 10
LINEAR_SLACK = 1.5
#: hidden 512 may take at most this times the time of hidden 2
SIZE_SLACK = 1.5
T10_LIMIT = 1.0


def make_spec(steps: int, hidden: int) -> Spec:
    return Spec(
        name="scaling",
        model=Model(input_size=8, hidden_sizes=(hidden,), output_size=4, activation="tanh",
                    output_activation="softmax", bias=True),
        loss=Loss(kind="cross_entropy", at="every_step", reduction="sum"),
        bptt=BPTT(steps=steps),
        notation=Notation(preset="d2l", layout="column"),
    )


def time_once(spec: Spec) -> float:
    """One cold run: SymPy's cache cleared, the garbage collector paused while timing."""
    clear_cache()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        bptt.derive(spec)
        bptt.step_rule(spec)
        return time.perf_counter() - start
    finally:
        gc.enable()


def measure(runs: int) -> tuple[dict[tuple[int, int], float], list[str]]:
    """Median seconds per (T, hidden); notes for the (T, hidden) the spec rejects.

    The sizes of one T are timed in turn within each run, so a burst of load on the
    machine affects every size alike instead of one cell.
    """
    samples: dict[tuple[int, int], list[float]] = {}
    notes: list[str] = []
    for steps in STEPS:
        cells = {}
        for hidden in SIZES:
            try:
                cells[hidden] = make_spec(steps, hidden)
            except SpecError as exc:
                notes.append(f"T = {steps}, hidden {hidden}: rejected by the spec ({exc})")
        for _ in range(runs):
            for hidden, spec in cells.items():
                samples.setdefault((steps, hidden), []).append(time_once(spec))
    return {cell: statistics.median(xs) for cell, xs in samples.items()}, notes


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(times: dict[tuple[int, int], float]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; met is None when a needed time is missing."""
    rows = []
    t10 = [times.get((10, h)) for h in SIZES]
    worst = max((x for x in t10 if x is not None), default=None)
    rows.append((f"T = 10 under {T10_LIMIT:g} s (every size)",
                 "n/a" if worst is None else f"slowest {worst:.3f} s",
                 None if None in t10 else worst < T10_LIMIT))
    limit = LINEAR_SLACK * 100 / 10
    lin = [_ratio(times.get((100, h)), times.get((10, h))) for h in SIZES]
    rows.append((f"linear in T: T=100 / T=10 <= {limit:g} (10x steps, {LINEAR_SLACK:g}x slack)",
                 ", ".join("n/a" if r is None else f"{r:.1f}" for r in lin) + f" (hidden {', '.join(map(str, SIZES))})",
                 None if None in lin else all(r <= limit for r in lin)))
    size = [_ratio(times.get((T, SIZES[-1])), times.get((T, SIZES[0]))) for T in STEPS]
    rows.append((f"hidden {SIZES[-1]} within {SIZE_SLACK:g}x of hidden {SIZES[0]}",
                 ", ".join("n/a" if r is None else f"{r:.2f}" for r in size) + f" (T = {', '.join(map(str, STEPS))})",
                 None if None in size else all(r <= SIZE_SLACK for r in size)))
    return rows


def _cell(x: float | None) -> str:
    return "rejected" if x is None else f"{x:.3f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "not met")


def render(times: dict[tuple[int, int], float], notes: list[str], runs: int, markdown: bool) -> str:
    header = ["T"] + [f"hidden {h} (s)" for h in SIZES] + [f"hidden {SIZES[-1]} / {SIZES[0]}"]
    body = []
    for T in STEPS:
        r = _ratio(times.get((T, SIZES[-1])), times.get((T, SIZES[0])))
        body.append([str(T)] + [_cell(times.get((T, h))) for h in SIZES] + ["n/a" if r is None else f"{r:.2f}"])
    lin = [_ratio(times.get((100, h)), times.get((10, h))) for h in SIZES]
    body.append(["T=100 / T=10"] + ["n/a" if r is None else f"{r:.1f}" for r in lin] + [""])
    goal_header = ["target", "measured", "verdict"]
    goals = [[a, b, _verdict(c)] for a, b, c in targets(times)]
    about = (f"derive = bptt.derive + bptt.step_rule; single-layer d2l Elman, input 8, output 4, "
             f"softmax + cross-entropy; median of {runs} cold runs (SymPy cache cleared); "
             f"Python {platform.python_version()}, SymPy {sympy.__version__}, {platform.machine()}")
    if markdown:
        def table(head: list[str], rows: list[list[str]]) -> list[str]:
            out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            return out
        lines = ["### Derivation time (`benchmarks/derive_scaling.py`)", "", about + ".", ""]
        lines += table(header, body) + [""]
        lines += ["| target | measured | verdict |", "|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in goals]
        lines += [f"\n- {n}" for n in notes]
        return "\n".join(lines)

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    lines = [about, ""] + table(header, body) + [""]
    widths = [max(len(r[i]) for r in [goal_header] + goals) for i in range(3)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [goal_header] + goals]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for RESULTS.md)")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    times, notes = measure(args.runs)
    print(render(times, notes, args.runs, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
