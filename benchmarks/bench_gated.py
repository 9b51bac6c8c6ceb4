"""LSTM and GRU (issue 14): the generated module against hand-written NumPy and torch.

    python benchmarks/bench_gated.py [--quick] [--write-results]

One call is forward + backward with the loss: ``loss_and_grads`` of the generated module
(cell lstm or gru with reset after, one layer, column layout, bias, an output layer of V = D
classes, softmax and cross-entropy summed over every step and row: the character-level
language model of a training loop); the same loss and gradients from
``_handwritten_gated.py`` (gates stacked, one input GEMM over all steps, one recurrent GEMM
per step, fused softmax cross-entropy); and ``torch.nn.LSTM`` / ``GRU`` + ``nn.Linear`` +
``cross_entropy(reduction="sum")`` with ``backward()`` on the CPU (2 threads).  The generated
module is built from a spec at run time with ``derive.build``; all three get the same weights
(the generated module's ``init_params(seed=0, scale=0.1)``, stacked for the hand-written
code outside the timed call, copied into torch through the module's ``to_torch``).  Where the
module has the opt-in ``Workspace`` (issue 15), "generated, workspace" is measured too: the
same call with one workspace kept across calls, as a training loop would.

Before timing, the three are checked to agree (loss and every gradient, float64, at a small
size and at each benchmark size).  Timing: all implementations in one process, each warmed
up first, then rounds of one call of each in a new random order (a short pause before each
call so that torch's threads stop spinning before the next library's BLAS runs); medians,
and the medians of the per-round ratios, from one run.  ``--quick`` runs fewer rounds and a shorter
warm-up.  ``--write-results`` replaces the section "LSTM and GRU (issue 14)" of
benchmarks/RESULTS.md with this run's tables.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _handwritten_gated as hw  # noqa: E402

SECTION = "## LSTM and GRU (issue 14)"
PAUSE = 0.02   # seconds before each timed call in a round
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


@dataclass(frozen=True)
class Case:
    batch: int
    steps: int
    input_size: int
    hidden: int

    @property
    def label(self) -> str:
        return f"({self.batch}, {self.steps}, {self.input_size}, {self.hidden})"

    def flops(self, cell: str) -> float:
        """Matmul FLOPs of one loss_and_grads: gates' input and recurrent GEMMs (x3 for forward,
        their weight gradients and the data gradients) and the output layer (x3 likewise)."""
        G = 4 if cell == "lstm" else 3
        rows = self.batch * self.steps
        return 3 * 2 * rows * G * self.hidden * (self.input_size + self.hidden) + 3 * 2 * rows * self.hidden * self.input_size


CASES = (Case(32, 50, 128, 128), Case(64, 100, 256, 256))
MIDDLE = CASES[0]
SMALL_CHECK = Case(3, 6, 5, 4)
DTYPES = ("float64", "float32")
CELLS = ("lstm", "gru")
IMPLS = ("generated", "handwritten", "torch")


# --------------------------------------------------------------------------- the three implementations


def build_module(cell: str, case: Case, workdir: Path):
    """The generated module of the benchmark's spec, built with derive's own API and imported."""
    from derive import build
    from derive import spec as specs

    name = f"bench_{cell}_{case.input_size}_{case.hidden}"
    data = {
        "name": name,
        "model": {"cell": cell, "input_size": case.input_size, "hidden_sizes": [case.hidden],
                  "output_size": case.input_size, "activation": "tanh", "output_activation": "softmax",
                  "bias": True, **({"gru_reset": "after"} if cell == "gru" else {})},
        "loss": {"kind": "cross_entropy", "at": "every_step", "reduction": "sum"},
        "bptt": {"steps": case.steps},
        "notation": {"layout": "column"},
    }
    out = workdir / name
    build.build(specs.from_dict(data), out, formats=["py"], style="loop", command="benchmarks/bench_gated.py")
    imp = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    mod = importlib.util.module_from_spec(imp)
    imp.loader.exec_module(mod)
    return mod


def problem(case: Case, dtype: str, mod) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    params = {n: np.asarray(v).astype(dtype) for n, v in mod.init_params(seed=0, scale=0.1).items()}
    xs = rng.standard_normal((case.steps, case.batch, case.input_size)).astype(dtype)
    targets = rng.integers(0, case.input_size, size=(case.steps, case.batch))
    return params, xs, targets


def by_role(mod, params: dict[str, np.ndarray]) -> dict[tuple, np.ndarray]:
    return {(i["layer"], i["role"], i["gate"]): params[n] for n, i in mod.PARAMS.items()}


def hand_layers(cell: str, mod, params: dict[str, np.ndarray]) -> tuple[list, np.ndarray, np.ndarray]:
    """The generated module's per-gate parameters stacked the hand-written way (not timed)."""
    p = by_role(mod, params)
    per_gate = {g: {"W": p[(1, "input_weight", g)], "U": p[(1, "recurrent_weight", g)], "b": p[(1, "bias", g)]}
                for g in GATES[cell]}
    layer = hw.pack_lstm(per_gate) if cell == "lstm" else hw.pack_gru(per_gate, p[(1, "recurrent_bias", "n")])
    return [layer], p[(2, "output_weight", None)], p[(2, "output_bias", None)]


def hand_grads_by_role(cell: str, grads: dict[str, Any]) -> dict[tuple, np.ndarray]:
    """The hand-written gradients unstacked to (layer, role, gate)."""
    order = ("i", "f", "o", "g") if cell == "lstm" else ("r", "z", "n")
    H = grads["U"][0].shape[1]
    out = {}
    for k, g in enumerate(order):
        block = slice(k * H, (k + 1) * H)
        out[(1, "input_weight", g)] = grads["W"][0][block]
        out[(1, "recurrent_weight", g)] = grads["U"][0][block]
        out[(1, "bias", g)] = grads["b"][0][block]
    if cell == "gru":
        out[(1, "recurrent_bias", "n")] = grads["cn"][0]
    out[(2, "output_weight", None)] = grads["V"]
    out[(2, "output_bias", None)] = grads["c"]
    return out


def make_calls(cell: str, case: Case, dtype: str, mod) -> dict[str, Callable[[], Any]]:
    """{impl: zero-argument call returning (loss, grads by (layer, role, gate))} on the same data."""
    params, xs, targets = problem(case, dtype, mod)
    calls: dict[str, Callable[[], Any]] = {}
    names = {(i["layer"], i["role"], i["gate"]): n for n, i in mod.PARAMS.items()}

    def generated():
        return mod.loss_and_grads(params, xs, targets)

    calls["generated"] = generated
    if hasattr(mod, "Workspace"):   # the opt-in buffers for a training loop (issue 15)
        ws = mod.Workspace()
        calls["generated, workspace"] = lambda: mod.loss_and_grads(params, xs, targets, workspace=ws)
    layers, V, c = hand_layers(cell, mod, params)
    calls["handwritten"] = lambda: hw.softmax_ce_loss_and_grads(cell, layers, V, c, xs, targets)
    if importlib.util.find_spec("torch"):
        import torch

        torch.set_num_threads(2)
        tdtype = getattr(torch, dtype)
        cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        net = cls(case.input_size, case.hidden).to(tdtype)
        lin = torch.nn.Linear(case.hidden, case.input_size).to(tdtype)
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mod.to_torch(params).items()}
        net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("out.")})
        lin.load_state_dict({"weight": sd["out.weight"], "bias": sd["out.bias"]})
        txs, ttg = torch.from_numpy(xs), torch.from_numpy(targets.reshape(-1))
        weights = [*net.parameters(), *lin.parameters()]

        def torch_call():
            for w in weights:
                w.grad = None
            hs = net(txs)[0]
            loss = torch.nn.functional.cross_entropy(lin(hs).reshape(-1, case.input_size), ttg, reduction="sum")
            loss.backward()
            return loss.item()

        calls["torch"] = torch_call
        calls["_torch_grads"] = lambda: (torch_call(), {k: p.grad.numpy() for k, p in
                                                        [*net.named_parameters(), *(("out." + k, p) for k, p in lin.named_parameters())]})
    calls["_names"] = lambda: names
    return calls


def verify(cell: str, case: Case, mod) -> float:
    """The three agree in float64 (loss and every gradient); returns the largest relative error."""
    calls = make_calls(cell, case, "float64", mod)
    names = calls["_names"]()
    loss, grads = calls["generated"]()
    gen = {key: grads[n] for key, n in names.items()}
    h_loss, h_grads = calls["handwritten"]()
    hand = hand_grads_by_role(cell, h_grads)
    worst = abs(loss - h_loss) / abs(h_loss)
    for key, g in gen.items():
        worst = max(worst, float(np.abs(g - hand[key]).max() / max(np.abs(hand[key]).max(), 1e-300)))
    if "_torch_grads" in calls:
        t_loss, t_sd = calls["_torch_grads"]()
        worst = max(worst, abs(loss - t_loss) / abs(t_loss))
        H = case.hidden
        for (layer, role, gate), g in gen.items():
            if role in ("output_weight", "output_bias"):
                t = t_sd["out.weight" if role == "output_weight" else "out.bias"]
            else:
                key = {"input_weight": "weight_ih_l0", "recurrent_weight": "weight_hh_l0", "bias": "bias_ih_l0",
                       "recurrent_bias": "bias_hh_l0"}[role]
                k = GATES[cell].index(gate)
                t = t_sd[key][k * H:(k + 1) * H]
            worst = max(worst, float(np.abs(g - t).max() / max(np.abs(t).max(), 1e-300)))
    if worst > 1e-8:
        raise SystemExit(f"bench_gated: {cell} {case.label}: implementations disagree (max rel. error {worst:.2e})")
    return worst


# --------------------------------------------------------------------------- timing


def paired(calls: dict[str, Callable[[], Any]], impls: list[str], warm: float, rounds: int) -> dict[str, list[float]]:
    """Warm each up for `warm` seconds (at least 2 calls), then `rounds` rounds of one call each
    in a new random order; returns the per-call times."""
    for i in impls:
        calls[i]()
        end, n = time.perf_counter() + warm, 0
        while time.perf_counter() < end or n < 2:
            calls[i]()
            n += 1
    times: dict[str, list[float]] = {i: [] for i in impls}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for j in rng.permutation(len(impls)):
            i = impls[j]
            time.sleep(PAUSE)
            t0 = time.perf_counter()
            calls[i]()
            times[i].append(time.perf_counter() - t0)
    return times


def machine() -> list[str]:
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_text = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - show_config differs between NumPy versions
        blas_text = "unknown BLAS"
    lines = [f"- CPU: {cpu}, {os.cpu_count()} logical cores (shared); load average at start "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"- Python {sys.version.split()[0]}, NumPy {np.__version__} ({blas_text})"]
    if importlib.util.find_spec("torch"):
        import torch
        lines.append(f"- torch {torch.__version__}, 2 threads (torch.set_num_threads)")
    else:
        lines.append("- torch: not importable, skipped")
    return lines


def dgemm_peak(dtype: str = "float64", n: int = 1024) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    c = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.dot(a, a, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="7 rounds, 0.3 s warm-up (default 15 rounds, 1 s)")
    ap.add_argument("--rounds", type=int, help="paired rounds (overrides --quick)")
    ap.add_argument("--warm", type=float, help="warm-up seconds per implementation (overrides --quick)")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--write-results", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    rounds = args.rounds or (7 if args.quick else 15)
    warm = args.warm if args.warm is not None else (0.3 if args.quick else 1.0)
    cells = [c for c in args.cells.split(",") if c]
    t_start = time.perf_counter()
    impls = [i for i in IMPLS if i != "torch" or importlib.util.find_spec("torch")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-gated-"))
    t0 = time.perf_counter()
    modules = {(cell, case): build_module(cell, case, tmp) for cell in cells for case in (SMALL_CHECK, *CASES)}
    build_s = time.perf_counter() - t0
    errors = {key: verify(key[0], key[1], mod) for key, mod in modules.items()}
    if all(hasattr(mod, "Workspace") for mod in modules.values()):
        impls.insert(1, "generated, workspace")
    ws = "generated, workspace" in impls
    head = [SECTION, "",
            f"Command: `python benchmarks/bench_gated.py {' '.join(sys.argv[1:])}` (one run; "
            f"{rounds} rounds, warm-up {warm} s per implementation and case).", "", *machine(),
            f"- matmul peak (1024 x 1024, NumPy, best of 5): float64 {dgemm_peak('float64'):.1f} GFLOP/s, "
            f"float32 {dgemm_peak('float32'):.1f} GFLOP/s",
            f"- the generated modules ({len(modules)}) built in {build_s:.1f} s; before timing, generated, "
            f"hand-written{' and torch' if 'torch' in impls else ''} agree in float64 on the loss and every "
            f"gradient (largest relative difference {max(errors.values()):.1e})", ""]
    print("\n".join(head), flush=True)
    table = ["One call = forward + backward with the loss (`loss_and_grads`, cross-entropy at every step, "
             "sum), ms per call, median over the rounds; the ratios are medians of the ratios within a round.", "",
             "| cell | (B, T, D, H) | dtype | generated | hand-written | torch | generated / hand-written "
             "| torch / generated | generated GFLOP/s |" + (" generated, workspace | its ratio to hand-written |" if ws else ""),
             "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ws else "")]
    print("\n".join(table), flush=True)
    results = {}
    for cell in cells:
        for case in CASES:
            for dtype in DTYPES:
                calls = make_calls(cell, case, dtype, modules[(cell, case)])
                times = paired(calls, impls, warm, rounds)
                med = {i: statistics.median(times[i]) for i in impls}
                # ratios: the median over rounds of the ratio within a round (the calls of one round
                # run back to back, so a load change on the shared machine hits both)
                ratio = {i: statistics.median(a / b for a, b in zip(times[i], times["generated"])) for i in impls}
                vs_hand = {i: statistics.median(a / b for a, b in zip(times[i], times["handwritten"])) for i in impls}
                results[(cell, case, dtype)] = {"vs_hand": vs_hand, "torch": ratio.get("torch")}
                gen = med["generated"]
                tor = med.get("torch")
                tor_ms = "n/a" if tor is None else f"{tor * 1e3:.1f}"
                tor_ratio = "n/a" if tor is None else f"{ratio['torch']:.2f}"
                row = (f"| {cell} | {case.label} | {dtype} | {gen * 1e3:.1f} | {med['handwritten'] * 1e3:.1f} | "
                       f"{tor_ms} | {vs_hand['generated']:.3f} | {tor_ratio} | {case.flops(cell) / gen / 1e9:.1f} |")
                if ws:
                    w = "generated, workspace"
                    row += f" {med[w] * 1e3:.1f} | {vs_hand[w]:.3f} |"
                table.append(row)
                print(row, flush=True)
    targets = ["", "| target | measured | met |", "|---|---|---|"]
    for impl in [i for i in impls if i.startswith("generated")]:
        worst = max((results[k]["vs_hand"][impl], k) for k in results)
        targets.append(f"| {impl} within 1.1x of hand-written (every cell, size, dtype) | worst "
                       f"{worst[0]:.3f}x ({worst[1][0]} {worst[1][1].label} {worst[1][2]}) | "
                       f"{'yes' if worst[0] <= 1.1 else '**no**'} |")
    if "torch" in impls:
        for cell in cells:
            ratio = results[(cell, MIDDLE, "float64")]["torch"]
            targets.append(f"| {cell}: torch / generated >= 1.3 at {MIDDLE.label} float64 | {ratio:.2f}x | "
                           f"{'yes' if ratio >= 1.3 else '**no**'} |")
    targets += ["", f"Whole run: {time.perf_counter() - t_start:.0f} s."]
    print("\n".join(targets), flush=True)
    if args.write_results:
        path = HERE / "RESULTS.md"
        text = path.read_text(encoding="utf-8")
        section = "\n".join(head + table + targets) + "\n"
        if SECTION in text:
            before, rest = text.split(SECTION, 1)
            after = rest[rest.find("\n## "):] if "\n## " in rest else ""
            text = before + section + after.lstrip("\n") if not after else before + section + "\n" + after.lstrip("\n")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
