"""What a training loop sees: ``loss_and_grads`` (and ``backward``) of the generated module
against hand-written NumPy, torch and JAX, in fresh processes and paired in one process.

    python benchmarks/bench_loss_and_grads.py [--quick] [--out FILE] [--baseline-derive CMD]
        [--only fresh|paired] [--funcs loss_and_grads,backward] [--impls generated,generated+ws,...]
        [--sizes 0,1,2,3]

The model is the Elman RNN of ``bench_rnn.py`` (tanh, bias, column layout) at its four sizes
(B, T, D, H), with an output layer of V = D classes, softmax and cross-entropy (sum) at
every step: the character-level language model of a training loop.

Measured, per implementation, size and dtype (float64, float32):

* fresh: one new process per implementation, alternating A B C D A B C D ...; in each the
  first call is timed alone (JAX compiles in it), then the next calls are timed with no
  warm-up ("early": short samples, what a 20 ms sampler sees) and after a warm-up run of
  ``--warm`` seconds ("warm"). Page faults per call (``resource.getrusage``: minor + major,
  after the first call) and the peak memory of one call (tracemalloc, and the rise of the
  peak RSS, VmHWM after resetting it through /proc/self/clear_refs) come from that process.
* generated+ws: the generated module with one ``Workspace()`` passed on every call, as a
  training loop passes it (its buffers outlive the call: "workspace MB" is what it holds);
  the ratio tables divide by its times.
* threads: NumPy's OpenBLAS, torch and XLA use both cores by default. On a loaded machine
  two spinning BLAS threads per process make NumPy and torch many times slower while XLA
  barely notices; for a contention-robust comparison run everything on one thread:
  ``OPENBLAS_NUM_THREADS=1 BENCH_TORCH_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
  intra_op_parallelism_threads=1" python benchmarks/bench_loss_and_grads.py ...``
* paired: all implementations in one process, each warmed up for ``--warm`` seconds, then
  one call of each in turn (a new random order every round, a 50 ms pause before each call
  so that the thread pools of the previous library stop spinning); the median per
  implementation.

tracemalloc sees NumPy's buffers only: torch's and JAX's allocators are invisible to it,
so for them only the RSS figure means something. ``--baseline-derive`` builds a second
generated module with another derive (e.g. the commit before a change) and measures it as
"generated (before)" in the same run, so before/after ratios come from one run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _handwritten as hw  # noqa: E402
from bench_rnn import CASES, Case  # noqa: E402  (the four sizes)

IMPLS = ("generated", "generated+ws", "handwritten", "torch", "jax")
WS = "generated+ws"   # the generated module with a Workspace() passed on every call (a training loop's way)
UNCHECKED = "generated, check_finite=False"   # --unchecked: the cost of the input scan
DTYPES = ("float64", "float32")
FUNCS = ("loss_and_grads", "backward")
SWITCH_PAUSE = 0.05   # seconds before each paired call (see paired)


def spec_toml(case: Case) -> str:
    hidden = ", ".join(map(str, case.hidden))
    return (f'name = "{case.name}_ce"\n[model]\ncell = "elman"\ninput_size = {case.input_size}\n'
            f"hidden_sizes = [{hidden}]\noutput_size = {case.input_size}\nactivation = \"tanh\"\n"
            'output_activation = "softmax"\nbias = true\n[loss]\nkind = "cross_entropy"\nat = "every_step"\n'
            f'reduction = "sum"\n[bptt]\nsteps = {case.steps}\n[notation]\npreset = "d2l"\nlayout = "column"\n')


def build_module(case: Case, workdir: Path, derive_cmd: list[str], tag: str) -> Path:
    out = workdir / tag
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"{case.name}_ce.toml"
    spec.write_text(spec_toml(case))
    subprocess.run([*derive_cmd, "build", str(spec), "--out", str(out), "--format", "py", "--style", "loop"],
                   check=True, capture_output=True, cwd=out)   # cwd: `python -m` puts it first on sys.path
    return out / f"{case.name}_ce.py"


def import_path(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- problems


def problem(case: Case, dtype: str, module):
    """Parameters (in the generated module's names), xs, integer targets, dhs: seed 0."""
    rng = np.random.default_rng(0)
    params = {n: (0.1 * rng.standard_normal(i["shape"])).astype(dtype) for n, i in module.PARAMS.items()}
    xs = rng.standard_normal((case.steps, case.batch, case.input_size)).astype(dtype)
    targets = rng.integers(0, case.input_size, size=(case.steps, case.batch))
    dhs = rng.standard_normal((case.steps, case.batch, case.hidden[-1])).astype(dtype)
    return params, xs, targets, dhs


def split(module, params):
    """((W, U, b) per layer, (V, c)) from the generated module's PARAMS order."""
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, info in module.PARAMS.items():
        layers.setdefault(info["layer"], {})[info["role"]] = params[name]
    top = max(layers)
    rnn = [(layers[l]["input_weight"], layers[l]["recurrent_weight"], layers[l]["bias"]) for l in range(1, top)]
    return rnn, (layers[top]["output_weight"], layers[top]["output_bias"])


def hand_loss_and_grads(rnn, out, xs, targets):
    """Hand-written NumPy: _handwritten's forward and backward, the output layer and a fused
    softmax cross-entropy written as one would by hand (one exp, no one-hot, in place)."""
    V, c = out
    hs, kept = hw.forward(rnn, xs)
    T, B, H = hs.shape
    rows = hs.reshape(T * B, H)
    z = rows @ V.T
    z += c
    idx = targets.reshape(-1, 1)
    picked = np.take_along_axis(z, idx, axis=1)
    m = z.max(axis=1, keepdims=True)
    z -= m
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    z /= s
    loss = float(np.log(s).sum() + m.sum() - picked.sum())
    np.put_along_axis(z, idx, np.take_along_axis(z, idx, axis=1) - 1, axis=1)
    grads = hw.backward((z @ V).reshape(T, B, H), kept)
    grads["V"], grads["c"] = z.T @ rows, z.sum(axis=0)
    return loss, grads


def make_calls(impl: str, case: Case, dtype: str, module, derive_paths: dict[str, Path]):
    """{func: zero-argument callable} for one implementation."""
    params, xs, targets, dhs = problem(case, dtype, module)
    if impl.startswith("generated"):
        mod = import_path(derive_paths[impl], "_bench_before") if impl in derive_paths else module
        hs, cache = mod.forward(params, xs)
        check = impl != UNCHECKED   # what users see is the default, check_finite=True
        if impl == WS:
            ws = mod.Workspace()
            return {"loss_and_grads": lambda: mod.loss_and_grads(params, xs, targets, workspace=ws),
                    "backward": lambda: mod.backward(dhs, cache, workspace=ws), "workspace": ws}
        return {"loss_and_grads": lambda: mod.loss_and_grads(params, xs, targets, check_finite=check),
                "backward": lambda: mod.backward(dhs, cache, check_finite=check)}
    rnn, out = split(module, params)
    if impl == "handwritten":
        hs, kept = hw.forward(rnn, xs)
        return {"loss_and_grads": lambda: hand_loss_and_grads(rnn, out, xs, targets),
                "backward": lambda: hw.backward(dhs, kept)}
    if impl == "torch":
        import torch
        torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "2")))
        tdtype = getattr(torch, dtype)
        net = torch.nn.RNN(case.input_size, case.hidden[0], num_layers=len(case.hidden), nonlinearity="tanh").to(tdtype)
        lin = torch.nn.Linear(case.hidden[-1], case.input_size).to(tdtype)
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in module.to_torch(params).items()}
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("out.")})
        lin.load_state_dict({"weight": state["out.weight"], "bias": state["out.bias"]})
        txs, ttg, tdh = torch.from_numpy(xs), torch.from_numpy(targets.reshape(-1)), torch.from_numpy(dhs)
        weights = [*net.parameters(), *lin.parameters()]

        def lag():
            for w in weights:
                w.grad = None
            hs = net(txs)[0]
            loss = torch.nn.functional.cross_entropy(lin(hs).reshape(-1, case.input_size), ttg, reduction="sum")
            loss.backward()
            return loss.item()

        kept = {}

        def bwd():
            if "hs" not in kept:
                kept["hs"] = net(txs)[0]
            for w in weights:
                w.grad = None
            kept["hs"].backward(tdh, retain_graph=True)

        return {"loss_and_grads": lag, "backward": bwd}
    if impl == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def run(p, xs):
            x = xs
            for (w, u, b) in p["rnn"]:
                proj = jnp.einsum("tbd,hd->tbh", x, w) + b

                def cell(h, a, u=u):
                    h = jnp.tanh(a + h @ u.T)
                    return h, h

                _, x = jax.lax.scan(cell, jnp.zeros(proj.shape[1:], proj.dtype), proj)
            return x

        def loss_fn(p, xs, targets):
            z = run(p, xs) @ p["V"].T + p["c"]
            lse = jax.scipy.special.logsumexp(z, axis=-1)
            return jnp.sum(lse) - jnp.sum(jnp.take_along_axis(z, targets[..., None], axis=-1))

        p = {"rnn": [tuple(jnp.asarray(a) for a in layer) for layer in rnn],
             "V": jnp.asarray(out[0]), "c": jnp.asarray(out[1])}
        jxs, jtg, jdh = jnp.asarray(xs), jnp.asarray(targets), jnp.asarray(dhs)
        lag = jax.jit(jax.value_and_grad(loss_fn))
        # JAX has no separate backward: the VJP of the recurrence, forward included (XLA fuses them)
        vjp = jax.jit(lambda p, xs, dh: jax.vjp(lambda q: run(q, xs), p)[1](dh))
        return {"loss_and_grads": lambda: jax.block_until_ready(lag(p, jxs, jtg)),
                "backward": lambda: jax.block_until_ready(vjp(p, jxs, jdh))}
    raise ValueError(impl)


# --------------------------------------------------------------------------- measuring


def faults() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt + r.ru_majflt


def rss_peak_of(call) -> float | None:
    """The rise of the peak RSS over one call (MB), or None where clear_refs is unavailable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        status = Path("/proc/self/status").read_text()
        base = int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1])
        call()
        status = Path("/proc/self/status").read_text()
        hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
        return (hwm - base) / 1024
    except OSError:
        return None


def traced_peak_of(call) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        call()
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


def timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def worker(args) -> None:
    """One fresh process: one implementation, one size, one dtype, one function."""
    job = json.loads(args.worker)
    case = CASES[job["case"]]
    module = import_path(Path(job["module"]), "_bench_generated")
    calls = make_calls(job["impl"], case, job["dtype"], module, {k: Path(v) for k, v in job["paths"].items()})
    call = calls[job["func"]]
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    f0 = faults()
    early = timed(call, job["early"])
    early_faults = (faults() - f0) / job["early"]
    end = time.perf_counter() + job["warm"]
    while time.perf_counter() < end:
        call()
    f0 = faults()
    warm = timed(call, job["calls"])
    warm_faults = (faults() - f0) / job["calls"]
    result = {"first": first, "early": statistics.median(early), "warm": statistics.median(warm),
              "early_faults": early_faults, "faults": warm_faults, "rss": rss_peak_of(call),
              "traced": traced_peak_of(call),
              "held": calls["workspace"].nbytes / 1e6 if "workspace" in calls else None}
    print(json.dumps(result))


def fresh(job: dict, threads_env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=threads_env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def paired(impls, case, dtype, module, paths, func, warm: float, rounds: int) -> dict:
    calls = {i: make_calls(i, case, dtype, module, paths)[func] for i in impls}
    for c in calls.values():
        c()   # JAX compiles
        end = time.perf_counter() + warm
        while time.perf_counter() < end:
            c()
    times: dict[str, list[float]] = {i: [] for i in impls}
    flts: dict[str, int] = {i: 0 for i in impls}
    rng = np.random.default_rng(0)
    for r in range(rounds):
        # a new order every round (a fixed cyclic order always puts the same library before
        # each one), and a pause before each call: torch's OpenMP and JAX's threads spin for a
        # while after a call and would slow the next library's BLAS threads
        for i in [impls[j] for j in rng.permutation(len(impls))]:
            time.sleep(SWITCH_PAUSE)
            f0 = faults()
            t0 = time.perf_counter()
            calls[i]()
            times[i].append(time.perf_counter() - t0)
            flts[i] += faults() - f0
    return {i: {"time": statistics.median(times[i]), "faults": flts[i] / rounds} for i in impls}


def dgemm_peak(dtype: str = "float64", n: int = 2048) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b, c = a.copy(), np.empty_like(a)
    np.matmul(a, b, out=c)
    best = min(timed(lambda: np.matmul(a, b, out=c), 5))
    return 2 * n ** 3 / best / 1e9


def flops(case: Case) -> float:
    """Matmul FLOPs of loss_and_grads: the RNN's (Case.flops) plus 3 x 2BTHV for the output layer."""
    return case.flops() + 3 * 2 * case.batch * case.steps * case.hidden[-1] * case.input_size


# --------------------------------------------------------------------------- report


def machine() -> list[str]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    lines = [f"- CPU: {cpu}, {os.cpu_count()} logical cores; load average at start "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared)",
             f"- Python {platform.python_version()}, NumPy {np.__version__}"]
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        lines[-1] += f" ({blas.get('name')} {blas.get('version')})"
    except Exception:   # noqa: BLE001 - older NumPy: no dict mode
        pass
    for name in ("torch", "jax"):
        try:
            mod = __import__(name)
            lines.append(f"- {name} {mod.__version__} (CPU)")
        except ImportError:
            lines.append(f"- {name}: not importable, skipped")
    return lines


def fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the two sizes of the issue's targets only")
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per implementation and case")
    ap.add_argument("--warm", type=float, default=1.0, help="seconds of warm-up run off before the warm samples")
    ap.add_argument("--calls", type=int, default=15, help="timed calls per sample")
    ap.add_argument("--early", type=int, default=5, help="calls timed right after the first, with no warm-up")
    ap.add_argument("--rounds", type=int, default=15, help="paired rounds (one call of each)")
    ap.add_argument("--derive-cmd", default=f"{sys.executable} -m derive")
    ap.add_argument("--baseline-derive", help="a second derive command: its module runs as 'generated (before)'")
    ap.add_argument("--out", help="write the Markdown tables to this file too")
    ap.add_argument("--unchecked", action="store_true", help=f"also measure '{UNCHECKED}'")
    ap.add_argument("--only", choices=("fresh", "paired"), help="one of the two ways (default: both)")
    ap.add_argument("--funcs", default=",".join(FUNCS), help="comma-separated: loss_and_grads, backward")
    ap.add_argument("--impls", help=f"a comma-separated subset of {', '.join(IMPLS)} (default: all installed)")
    ap.add_argument("--sizes", help="comma-separated indices into bench_rnn.CASES (0-3; default: all, --quick: 1,2)")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    impls = [i for i in IMPLS if i not in ("torch", "jax") or importlib.util.find_spec(i)]
    if args.impls:
        impls = [i for i in impls if i in args.impls.split(",")]
    cases = [1, 2] if args.quick else list(range(len(CASES)))
    if args.sizes:
        cases = [int(c) for c in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-lag-"))
    modules, paths = {}, {}
    for ci in cases:
        modules[ci] = build_module(CASES[ci], tmp, shlex.split(args.derive_cmd), "after")
        if args.baseline_derive:
            paths[ci] = {"generated (before)": build_module(CASES[ci], tmp, shlex.split(args.baseline_derive), "before")}
    if args.baseline_derive:
        impls.insert(1, "generated (before)")
    if args.unchecked:
        impls.insert(1, UNCHECKED)
    threads = " ".join(f"{k}={os.environ[k]!r}" for k in ("OPENBLAS_NUM_THREADS", "BENCH_TORCH_THREADS", "XLA_FLAGS")
                       if k in os.environ)
    lines = ["## Training-loop benchmark: `loss_and_grads` and `backward` (issue 15)", "",
             f"Command: `{threads + ' ' if threads else ''}python benchmarks/bench_loss_and_grads.py {' '.join(sys.argv[1:])}`",
             "", *machine()]
    peak = dgemm_peak()
    lines += [f"- measured dgemm peak (2048 x 2048 float64, NumPy, best of 5): {peak:.1f} GFLOP/s", ""]
    env = dict(os.environ)
    print("\n".join(lines), flush=True)
    out: list[str] = []

    def emit(text=""):
        out.append(text)
        print(text, flush=True)

    base = WS if WS in impls else "generated"   # the ratios' denominator
    for func in [f for f in FUNCS if f in args.funcs.split(",")]:
        ratios: list[str] = []   # the fresh runs' warm and early times over the base's
        if args.only != "paired":
            emit(f"### `{func}`: fresh processes (alternating; median of {args.repeats}), ms per call")
            emit()
            emit("| size | dtype | impl | first call | early (no warm-up) | warm | faults/call early | faults/call warm"
                 " | peak traced MB | peak RSS rise MB | workspace MB |")
            emit("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for ci in cases:
                for dtype in DTYPES:
                    runs: dict[str, list[dict]] = {i: [] for i in impls}
                    for _ in range(args.repeats):
                        for impl in impls:
                            job = {"impl": impl, "case": ci, "dtype": dtype, "func": func, "module": str(modules[ci]),
                                   "paths": {k: str(v) for k, v in paths.get(ci, {}).items()}, "warm": args.warm,
                                   "calls": args.calls, "early": args.early}
                            runs[impl].append(fresh(job, env))
                    for impl in impls:
                        ok = [r for r in runs[impl] if "error" not in r]
                        if not ok:
                            emit(f"| {CASES[ci].label} | {dtype} | {impl} | error: {runs[impl][0]['error'][:60]} |||||||")
                            continue
                        med = {k: statistics.median([r[k] for r in ok if r[k] is not None]) if any(r[k] is not None for r in ok)
                               else None for k in ok[0]}
                        traced = fmt(med["traced"], ".1f") if impl.startswith(("generated", "handwritten")) else "n/a"
                        emit(f"| {CASES[ci].label} | {dtype} | {impl} | {med['first'] * 1e3:.1f} | {med['early'] * 1e3:.2f}"
                             f" | {med['warm'] * 1e3:.2f} | {med['early_faults']:.0f} | {med['faults']:.0f} | {traced}"
                             f" | {fmt(med['rss'], '.1f')} | {fmt(med['held'], '.1f') if med['held'] is not None else ''} |")
                        runs[impl] = med
                    if all(isinstance(runs[i], dict) and "warm" in runs[i] for i in impls):
                        ratios.append(f"| {CASES[ci].label} | {dtype} | " + " | ".join(
                            f"{runs[i]['warm'] / runs[base]['warm']:.2f}x, {runs[i]['early'] / runs[base]['early']:.2f}x"
                            for i in impls if i != base) + " |")
            emit()
            if ratios:
                emit(f"#### `{func}`, fresh processes: time of each implementation / time of {base} (warm, early);"
                     " above 1 = slower than it")
                emit()
                emit("| size | dtype | " + " | ".join(i for i in impls if i != base) + " |")
                emit("|---|---|" + "---:|" * (len(impls) - 1))
                for line in ratios:
                    emit(line)
                emit()
        if args.only != "fresh":
            emit(f"### `{func}`: paired in one process (warm-up {args.warm} s each, median of {args.rounds} rounds), "
                 f"ms per call and ratio to {base}")
            emit()
            emit("| size | dtype | " + " | ".join(impls) + f" | faults/call ({base}) | {base} GFLOP/s (% of the float64 dgemm peak) |")
            emit("|---|---|" + "---:|" * (len(impls) + 2))
            for ci in cases:
                for dtype in DTYPES:
                    res = paired(impls, CASES[ci], dtype, import_path(modules[ci], f"_bench_paired_{ci}"),
                                 paths.get(ci, {}), func, args.warm, args.rounds)
                    gen = res[base]["time"]
                    cells = [f"{res[i]['time'] * 1e3:.2f}" + ("" if i == base else f" ({res[i]['time'] / gen:.2f}x)")
                             for i in impls]
                    rate = flops(CASES[ci]) / gen / 1e9 if func == "loss_and_grads" else CASES[ci].flops() * 2 / 3 / gen / 1e9
                    emit(f"| {CASES[ci].label} | {dtype} | " + " | ".join(cells) +
                         f" | {res[base]['faults']:.0f} | {rate:.1f} ({100 * rate / peak:.0f} %) |")
            emit()
    emit(f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    if args.out:
        Path(args.out).write_text("\n".join(lines + out) + "\n")


if __name__ == "__main__":
    main()
