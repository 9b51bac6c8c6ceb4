#!/usr/bin/env python
"""Benchmark derive's generated NumPy BPTT against hand-written NumPy, PyTorch and JAX.

    python benchmarks/bench_rnn.py [--quick] [--out benchmarks/RESULTS.md]

Model: Elman RNN, tanh, bias, no output layer, column layout (d2l notation).
One timed call is forward + backward with a random upstream gradient ``dhs``
on the hidden states (gradients for every parameter, ``xs`` and ``h0``).

The generated module is built by the project's CLI
(``python -m derive build SPEC.toml --out TMP --format py --style loop``) and
imported from the temporary directory; ``--prebuilt DIR`` imports
``DIR/<name>.py`` instead (to benchmark a module you built yourself).

Timing: every pair (generated, X) is timed alternately in this one process,
in alternating order, for several rounds after a warm-up; the report gives
the median of the paired ratios and the median times. Torch (``pip install
torch==2.13.0``) and JAX are used when importable and skipped with a note
otherwise.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import _handwritten as hw  # after the sys.path change

DTYPES = (np.float64, np.float32)
DEFAULT_DERIVE = f"{sys.executable} -m derive"  # how the derive CLI is run (--derive-cmd)
SWITCH_PAUSE = 0.2  # seconds between samples of different libraries (see Sampler)
BUSY = 0.3  # cores used by other processes above which a timing is marked unreliable
TOLERANCE = {np.float64: 1e-7, np.float32: 1e-3}  # max |a - b| / max |b| per gradient


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmark size: batch B, steps T, input size D, hidden sizes per layer."""

    batch: int
    steps: int
    input_size: int
    hidden: tuple[int, ...]

    @property
    def name(self) -> str:
        """The spec's name (a Python identifier)."""
        hs = "x".join(map(str, self.hidden))
        return f"bench_elman_d{self.input_size}_h{hs}_t{self.steps}"

    @property
    def label(self) -> str:
        """(B, T, D, H) as in the issue; a list of H for stacked layers."""
        h = str(self.hidden[0]) if len(self.hidden) == 1 else str(list(self.hidden))
        return f"({self.batch}, {self.steps}, {self.input_size}, {h})"

    def flops(self) -> float:
        """Matmul FLOPs of forward + backward: 2BT(DH + HH) forward, twice that backward."""
        total, d = 0.0, self.input_size
        for h in self.hidden:
            total += 3 * 2 * self.batch * self.steps * (d * h + h * h)
            d = h
        return total

    def spec_toml(self) -> str:
        """The derive spec (CONTRACT.md section 2) for this case; the title avoids TeX specials."""
        hidden = ", ".join(map(str, self.hidden))
        hs = "x".join(map(str, self.hidden))
        return (
            f'name = "{self.name}"\n'
            f'title = "Benchmark: Elman RNN (B={self.batch}, T={self.steps}, D={self.input_size}, H={hs})"\n\n'
            "[model]\n"
            'cell = "elman"\n'
            f"input_size = {self.input_size}\n"
            f"hidden_sizes = [{hidden}]\n"
            "output_size = 0\n"
            'activation = "tanh"\n'
            "bias = true\n\n"
            "[loss]\n"
            'kind = "none"\n\n'
            "[bptt]\n"
            f"steps = {self.steps}\n\n"
            "[notation]\n"
            'preset = "d2l"\n'
            'layout = "column"\n'
        )


SMALL = Case(1, 25, 65, (100,))
MIDDLE = Case(32, 50, 128, (128,))
LARGE = Case(64, 100, 256, (256,))
STACKED = Case(32, 50, 128, (128, 128))
CASES = (SMALL, MIDDLE, LARGE, STACKED)


# --------------------------------------------------------------------------- generated module


def build_generated(
    cases: tuple[Case, ...], workdir: Path, prebuilt: Path | None, derive: list[str]
) -> dict[Case, ModuleType]:
    """Build (with the derive CLI ``derive``, all cases concurrently) and import each case's module."""
    if prebuilt is not None:
        return {c: load_module(prebuilt / f"{c.name}.py", c.name) for c in cases}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = []
    for case in cases:
        spec = workdir / f"{case.name}.toml"
        spec.write_text(case.spec_toml())
        out = workdir / case.name
        cmd = [*derive, "build", str(spec), "--out", str(out), "--format", "py", "--style", "loop"]
        procs.append(
            (
                case,
                cmd,
                out,
                subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            )
        )
    modules = {}
    for case, cmd, out, proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        path = out / f"{case.name}.py"
        if proc.returncode != 0 or not path.exists():
            sys.exit(
                f"bench_rnn: could not build the generated module for {case.label}:\n  $ {' '.join(cmd)}\n"
                f"  exit status {proc.returncode}\n{(stderr or stdout).strip()}\n"
                "(use --prebuilt DIR to benchmark modules built some other way)"
            )
        modules[case] = load_module(path, case.name)
    return modules


def load_module(path: Path, name: str) -> ModuleType:
    """Import a module from a file path."""
    if not path.exists():
        sys.exit(f"bench_rnn: no module {path}")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layers_from(module: ModuleType, params: dict[str, np.ndarray]) -> list[hw.Layer]:
    """The (W, U, b) of each layer in column layout, found by PARAMS roles."""
    by_layer: dict[int, dict[str, np.ndarray]] = {}
    for name, info in module.PARAMS.items():
        by_layer.setdefault(info["layer"], {})[info["role"]] = params[name]
    layers = []
    for index in sorted(by_layer):
        roles = by_layer[index]
        if "recurrent_weight" not in roles:
            continue  # the output layer (none here)
        w, u, b = roles["input_weight"], roles["recurrent_weight"], roles["bias"]
        if module.LAYOUT == "row":
            w, u = np.ascontiguousarray(w.T), np.ascontiguousarray(u.T)
        layers.append((w, u, b))
    return layers


def common_grads(module: ModuleType, grads: dict[str, Any]) -> dict[str, Any]:
    """The generated module's grads in _handwritten's format (column layout)."""
    out: dict[str, Any] = {"W": [], "U": [], "b": [], "xs": grads["xs"], "h0": list(grads["h0"])}
    key = {"input_weight": "W", "recurrent_weight": "U", "bias": "b"}
    for name, info in module.PARAMS.items():
        if info["role"] in key:
            g = grads[name]
            if module.LAYOUT == "row" and g.ndim == 2:
                g = g.T
            out[key[info["role"]]].append(g)
    return out


# --------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    """A benchmarked implementation: ``run`` is timed; ``grads`` converts its last result."""

    name: str
    run: Callable[[], Any]
    grads: Callable[[Any], dict[str, Any]]
    cache_bytes: int | None = None
    peak_bytes: int | None = None
    library: str = "numpy"  # whose threads run it: a pause separates samples of different libraries


def generated_impl(module: ModuleType, params: dict[str, np.ndarray], xs: np.ndarray, dhs: np.ndarray) -> Impl:
    """The generated module: ``backward(dhs, forward(params, xs)[1])``."""

    def run() -> Any:
        _, cache = module.forward(params, xs)
        return module.backward(dhs, cache)

    _, cache = module.forward(params, xs)
    keep = [xs, dhs, *params.values()]
    return Impl("generated", run, lambda g: common_grads(module, g), retained_nbytes(cache, keep), traced_peak(run))


def handwritten_impl(layers: list[hw.Layer], xs: np.ndarray, dhs: np.ndarray) -> Impl:
    """The hand-vectorised NumPy BPTT of _handwritten.py."""

    def run() -> Any:
        _, kept = hw.forward(layers, xs)
        return hw.backward(dhs, kept)

    _, kept = hw.forward(layers, xs)
    keep = [xs, dhs, *(a for layer in layers for a in layer)]
    return Impl("numpy", run, lambda g: g, retained_nbytes(kept, keep), traced_peak(run))


def torch_impl(torch: Any, layers: list[hw.Layer], xs: np.ndarray, dhs: np.ndarray) -> Impl:
    """torch.nn.RNN (tanh, CPU, autograd) with the same weights; bias_hh is zero."""
    batch = xs.shape[1]
    sizes = [u.shape[0] for _, u, _ in layers]
    # One multi-layer nn.RNN when every layer has the same width, else one per layer.
    groups = [list(range(len(layers)))] if len(set(sizes)) == 1 else [[i] for i in range(len(layers))]
    dtype = torch.float64 if xs.dtype == np.float64 else torch.float32
    modules, h0s = [], []
    for group in groups:
        first_w = layers[group[0]][0]
        rnn = torch.nn.RNN(first_w.shape[1], sizes[group[0]], num_layers=len(group), nonlinearity="tanh", bias=True)
        rnn = rnn.to(dtype)
        with torch.no_grad():
            for k, index in enumerate(group):
                w, u, b = layers[index]
                getattr(rnn, f"weight_ih_l{k}").copy_(torch.from_numpy(w))
                getattr(rnn, f"weight_hh_l{k}").copy_(torch.from_numpy(u))
                getattr(rnn, f"bias_ih_l{k}").copy_(torch.from_numpy(b))
                getattr(rnn, f"bias_hh_l{k}").zero_()
        modules.append(rnn)
        h0s.append(torch.zeros(len(group), batch, sizes[group[0]], dtype=dtype, requires_grad=True))
    x = torch.from_numpy(xs).requires_grad_(True)
    dh = torch.from_numpy(dhs)
    params = [p for rnn in modules for p in rnn.parameters()]
    inputs = [*params, x, *h0s]

    def run() -> Any:
        out = x
        for rnn, h0 in zip(modules, h0s):
            out, _ = rnn(out, h0)
        return torch.autograd.grad(out, inputs, dh)

    def grads(result: Any) -> dict[str, Any]:
        named = dict(zip([f"{gi}.{n}" for gi, rnn in enumerate(modules) for n, _ in rnn.named_parameters()], result))
        out: dict[str, Any] = {"W": [], "U": [], "b": [], "xs": result[len(params)].numpy(), "h0": []}
        for gi, group in enumerate(groups):
            for k, _ in enumerate(group):
                out["W"].append(named[f"{gi}.weight_ih_l{k}"].numpy())
                out["U"].append(named[f"{gi}.weight_hh_l{k}"].numpy())
                out["b"].append(named[f"{gi}.bias_ih_l{k}"].numpy())
        for h0_grad in result[len(params) + 1 :]:
            out["h0"].extend(h0_grad.numpy())
        return out

    return Impl("torch", run, grads, library="torch")


def jax_impl(jax: Any, layers: list[hw.Layer], xs: np.ndarray, dhs: np.ndarray) -> Impl:
    """jax.jit(jax.grad(sum(dhs * hs))) with lax.scan over time (input projection hoisted)."""
    jnp, lax = jax.numpy, jax.lax

    def loss(params: Any, x: Any, h0s: Any, d: Any) -> Any:
        for (w, u, b), h0 in zip(params, h0s):

            def step(h: Any, xw: Any, u: Any = u) -> Any:
                h = jnp.tanh(xw + h @ u.T)
                return h, h

            _, x = lax.scan(step, h0, x @ w.T + b)
        return jnp.sum(d * x)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    params = jax.device_put([tuple(layer) for layer in layers])
    x = jax.device_put(xs)
    h0s = jax.device_put([np.zeros((xs.shape[1], u.shape[0]), xs.dtype) for _, u, _ in layers])
    d = jax.device_put(dhs)

    def run() -> Any:
        return jax.block_until_ready(grad(params, x, h0s, d))

    def grads(result: Any) -> dict[str, Any]:
        gp, gx, gh = result
        return {
            "W": [np.asarray(g[0]) for g in gp],
            "U": [np.asarray(g[1]) for g in gp],
            "b": [np.asarray(g[2]) for g in gp],
            "xs": np.asarray(gx),
            "h0": [np.asarray(g) for g in gh],
        }

    return Impl("jax", run, grads, library="jax")


def max_rel_error(got: dict[str, Any], ref: dict[str, Any]) -> float:
    """Largest max|a - b| / max|b| over every gradient array."""
    worst = 0.0
    for key in ("W", "U", "b", "h0"):
        if len(got[key]) != len(ref[key]):
            return float("inf")
        for a, b in zip(got[key], ref[key]):
            worst = max(worst, rel_error(a, b))
    return max(worst, rel_error(got["xs"], ref["xs"]))


def rel_error(a: Any, b: np.ndarray) -> float:
    """max|a - b| / max|b| (inf when the shapes differ)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(b))), 1e-300)
    return float(np.max(np.abs(a - b))) / scale


# --------------------------------------------------------------------------- memory


def retained_nbytes(obj: Any, exclude: list[np.ndarray]) -> int:
    """Bytes of the distinct buffers reachable from ``obj`` (dicts, lists, tuples, arrays).

    A view counts as its whole base buffer (that is what it keeps alive);
    buffers of ``exclude`` (the caller's inputs and the parameters) are not
    counted: keeping a reference to them costs nothing.
    """
    seen = {id(root_of(a)) for a in exclude}
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            root = root_of(item)
            if id(root) not in seen:
                seen.add(id(root))
                total += root.nbytes
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def root_of(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def traced_peak(run: Callable[[], Any]) -> int:
    """Peak bytes allocated (NumPy reports to tracemalloc) during one ``run()``."""
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        del result
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- timing


@dataclass
class Pair:
    """Paired timings of the generated module and one other implementation."""

    other: str
    gen: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def ratio(self) -> float:
        """Median of the paired ratios other / generated."""
        return float(np.median(np.array(self.times) / np.array(self.gen)))


def timed(fn: Callable[[], Any], number: int = 1) -> float:
    """Seconds per call of ``number`` back-to-back calls, with the garbage collector off."""
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        gc.enable()


class Sampler:
    """Times samples of implementations, pausing whenever the library changes.

    OpenBLAS's worker threads spin for about 0.1 s after each call, and
    OpenMP's (torch's) spin too: on a machine with few cores they take the
    cores the next library's threads need (torch right after a NumPy call was
    measured 2 to 10 times slower than alone). A pause of ``SWITCH_PAUSE`` lets
    them go to sleep first.
    """

    def __init__(self) -> None:
        self.last: str | None = None

    def enter(self, library: str) -> None:
        """Pause if the last sample ran another library."""
        if self.last not in (None, library):
            time.sleep(SWITCH_PAUSE)
        self.last = library

    def __call__(self, impl: Impl, number: int) -> float:
        """Seconds per call of ``impl.run`` over ``number`` calls."""
        self.enter(impl.library)
        return timed(impl.run, number)


@dataclass
class Timings:
    """Everything timed for one case and dtype: the pairs and the per-round matmul peak."""

    pairs: dict[str, Pair]
    peak: list[float]  # GFLOP/s of the peak probe, one per round

    def share(self, name: str, flops: float) -> float:
        """Median over rounds of (achieved GFLOP/s of ``name``) / (that round's matmul peak)."""
        pair = self.pairs["numpy"] if name == "generated" else self.pairs[name]
        times = pair.gen if name == "generated" else pair.times
        return float(np.median(flops / 1e9 / np.array(times) / np.array(self.peak)))


class PeakProbe:
    """A square n x n matmul of one dtype: the machine's matmul peak, GFLOP/s."""

    def __init__(self, dtype: type, n: int = 1024) -> None:
        rng = np.random.default_rng(1)
        self.a = rng.standard_normal((n, n)).astype(dtype)
        self.b = rng.standard_normal((n, n)).astype(dtype)
        self.c = np.empty_like(self.a)
        self.flops = 2.0 * n**3
        self.library = "numpy"

    def run(self) -> None:
        """One matmul into the preallocated output."""
        np.matmul(self.a, self.b, out=self.c)

    def gflops(self, reps: int = 2) -> float:
        """Best of ``reps`` matmuls, in GFLOP/s."""
        return self.flops / min(timed(self.run) for _ in range(reps)) / 1e9


def time_pairs(gen: Impl, others: list[Impl], probe: PeakProbe, quick: bool) -> Timings:
    """Alternate (generated, X) for every X: warm-up, then rounds in alternating order.

    One sample is ``number`` back-to-back calls (enough to last ``min_sample``
    seconds, so that sub-millisecond calls are not lost in timer and scheduler
    noise); the number of rounds fits a time budget within [low, high]. Each
    round also measures the matmul peak, so that "% of peak" compares times
    taken under the same conditions.
    """
    low, high, budget, min_sample = (3, 5, 1.0, 0.005) if quick else (7, 21, 5.0, 0.02)
    sample = Sampler()
    estimate, number = {}, {}
    probe.run()
    for impl in (gen, *others):
        sample(impl, 1)  # first call: allocation, JIT compilation
        estimate[impl.name] = min(sample(impl, 1) for _ in range(2))
        number[impl.name] = max(1, int(min_sample / max(estimate[impl.name], 1e-9)))
    per_round = sum(
        number[o.name] * estimate[o.name]
        + number[gen.name] * estimate[gen.name]
        + (2 * SWITCH_PAUSE if o.library != gen.library else 0.0)
        for o in others
    )
    rounds = int(min(high, max(low, budget / max(per_round, 1e-9))))
    result = Timings({o.name: Pair(o.name) for o in others}, [])
    for r in range(rounds):
        gc.collect()
        sample.enter(probe.library)
        result.peak.append(probe.gflops())
        for other in others:
            pair = result.pairs[other.name]
            if r % 2 == 0:
                pair.gen.append(sample(gen, number[gen.name]))
                pair.times.append(sample(other, number[other.name]))
            else:
                pair.times.append(sample(other, number[other.name]))
                pair.gen.append(sample(gen, number[gen.name]))
    return result


class LoadMonitor:
    """CPU time other processes used while the benchmark ran (from /proc/stat)."""

    def __init__(self) -> None:
        self.start = (time.perf_counter(), time.process_time(), self._busy())

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def sample(cls, seconds: float) -> float | None:
        """Sleep ``seconds``; return the cores other processes kept busy meanwhile."""
        monitor = cls()
        time.sleep(seconds)
        return monitor.others()

    def others(self) -> float | None:
        """Average number of cores busy with other processes since the start."""
        wall0, cpu0, busy0 = self.start
        busy1 = self._busy()
        if busy0 is None or busy1 is None:
            return None
        wall = time.perf_counter() - wall0
        return max(0.0, ((busy1 - busy0) - (time.process_time() - cpu0)) / wall)


def wait_for_idle(limit: float) -> None:
    """Wait (at most ``limit`` seconds) until other processes leave the cores idle."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        busy = LoadMonitor.sample(0.5)
        if busy is None or busy <= BUSY:
            return


# --------------------------------------------------------------------------- one case


@dataclass
class Row:
    """Everything measured for one case and dtype."""

    case: Case
    dtype: str
    median_ms: dict[str, float]
    ratio: dict[str, float]  # other / generated, median of paired ratios
    torch_over_numpy: float | None
    share: dict[str, float]  # fraction of the matmul peak, median of per-round ratios
    peak: float  # median matmul peak of the rounds, GFLOP/s
    error: dict[str, float]
    cache_mb: float
    hand_mb: float
    peak_mb: dict[str, float]
    rounds: int
    load: float | None = None  # cores other processes kept busy while this row was timed

    @property
    def busy(self) -> bool:
        """Whether other processes disturbed this row's timing."""
        return self.load is not None and self.load > BUSY

    def gflops(self, name: str) -> float | None:
        """Achieved GFLOP/s of an implementation (from its median time)."""
        ms = self.median_ms.get(name)
        return None if ms is None else self.case.flops() / (ms / 1e3) / 1e9


def run_case(case: Case, dtype: type, module: ModuleType, torch: Any, jax: Any, quick: bool) -> Row:
    """Check every implementation against the hand-written one, then time the pairs."""
    params = {k: np.asarray(v, dtype=dtype) for k, v in module.init_params(seed=0, scale=0.1).items()}
    rng = np.random.default_rng(42)
    for name, info in module.PARAMS.items():
        if info["role"] == "bias":  # non-zero biases, so that db and the bias path are exercised
            params[name] = (0.1 * rng.standard_normal(info["shape"])).astype(dtype)
    xs = rng.standard_normal((case.steps, case.batch, case.input_size)).astype(dtype)
    dhs = rng.standard_normal((case.steps, case.batch, case.hidden[-1])).astype(dtype)
    layers = layers_from(module, params)

    hand = handwritten_impl(layers, xs, dhs)
    gen = generated_impl(module, params, xs, dhs)
    others = [hand]
    if torch is not None:
        others.append(torch_impl(torch, layers, xs, dhs))
    if jax is not None:
        others.append(jax_impl(jax, layers, xs, dhs))

    reference = hand.grads(hand.run())
    error = {impl.name: max_rel_error(impl.grads(impl.run()), reference) for impl in (gen, *others[1:])}

    monitor = LoadMonitor()
    timings = time_pairs(gen, others, PeakProbe(dtype), quick)
    load = monitor.others()
    pairs = timings.pairs
    gen_times = [t for p in pairs.values() for t in p.gen]
    median_ms = {"generated": 1e3 * float(np.median(gen_times))}
    median_ms.update({n: 1e3 * float(np.median(p.times)) for n, p in pairs.items()})
    torch_over_numpy = None
    if "torch" in pairs:  # same-round ratio of torch and hand-written times
        torch_over_numpy = float(np.median(np.array(pairs["torch"].times) / np.array(pairs["numpy"].times)))
    return Row(
        case=case,
        dtype=np.dtype(dtype).name,
        median_ms=median_ms,
        ratio={n: p.ratio() for n, p in pairs.items()},
        torch_over_numpy=torch_over_numpy,
        share={n: timings.share(n, case.flops()) for n in ("generated", *pairs)},
        peak=float(np.median(timings.peak)),
        error=error,
        cache_mb=(gen.cache_bytes or 0) / 2**20,
        hand_mb=(hand.cache_bytes or 0) / 2**20,
        peak_mb={i.name: i.peak_bytes / 2**20 for i in (gen, hand) if i.peak_bytes is not None},
        rounds=len(pairs["numpy"].gen),
        load=load,
    )


# --------------------------------------------------------------------------- machine


def machine_info(torch: Any, jax: Any) -> list[str]:
    """Lines describing the CPU, cores, library versions and BLAS."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    cores = available_cores()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    lines = [
        f"- CPU: {cpu}; {cores} cores available to this process (os.cpu_count() = {os.cpu_count()}){mem}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()} ({platform.machine()})",
        f"- NumPy {np.__version__}; BLAS: {blas_info()}",
    ]
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}
    if env:
        lines.append("- Environment: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items())))
    if torch is not None:
        lines.append(f"- PyTorch {torch.__version__}, {torch.get_num_threads()} threads (torch.set_num_threads)")
    else:
        lines.append("- PyTorch: not importable, skipped (`pip install torch==2.13.0`)")
    if jax is not None:
        lines.append(f"- JAX {jax.__version__} ({jax.default_backend()})")
    else:
        lines.append("- JAX: not importable, skipped (not installed by this benchmark)")
    return lines


def blas_info() -> str:
    """NumPy's BLAS: name and version from show_config, threads and kernel from the library."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # type: ignore[index]
    except Exception:  # noqa: BLE001 - show_config's format differs between versions
        blas = {}
    text = f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()
    config = blas.get("openblas configuration")
    if config:
        text += f" ({' '.join(config.split())})"
    runtime = OpenBLAS().describe()
    return f"{text}; {runtime}" if runtime else text


class OpenBLAS:
    """The OpenBLAS that NumPy loaded, asked through ctypes (threads, kernel); no-op otherwise."""

    def __init__(self) -> None:
        import ctypes

        self.funcs: dict[str, Any] = {}
        try:
            maps = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            return
        paths = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for what, restype in (
                ("get_num_threads", ctypes.c_int),
                ("set_num_threads", None),
                ("get_corename", ctypes.c_char_p),
            ):
                for sym in (f"{p}_{what}{s}" for p in ("scipy_openblas", "openblas") for s in ("64_", "")):
                    if what not in self.funcs and hasattr(lib, sym):
                        self.funcs[what] = getattr(lib, sym)
                        self.funcs[what].restype = restype
            if self.funcs:
                return

    def threads(self) -> int | None:
        """OpenBLAS's thread count, or None when unknown."""
        return self.funcs["get_num_threads"]() if "get_num_threads" in self.funcs else None

    def set_threads(self, n: int) -> bool:
        """Set OpenBLAS's thread count; False when that is not possible."""
        if "set_num_threads" not in self.funcs:
            return False
        self.funcs["set_num_threads"](n)
        return True

    def describe(self) -> str:
        """'N threads, kernel NAME' as far as known."""
        parts = []
        if self.threads() is not None:
            parts.append(f"{self.threads()} threads")
        if "get_corename" in self.funcs:
            parts.append(f"kernel {self.funcs['get_corename']().decode()}")
        return ", ".join(parts)


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """Format a number, or 'n/a'."""
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def report(
    rows: list[Row], machine: list[str], notes: list[str], args: argparse.Namespace, elapsed: float, load: float | None
) -> str:
    """The RESULTS.md text."""
    have_torch = any("torch" in r.ratio for r in rows)
    have_jax = any("jax" in r.ratio for r in rows)
    peaks = {d: max((r.peak for r in rows if r.dtype == d), default=float("nan")) for d in ("float64", "float32")}
    out = [
        "# RNN BPTT benchmark",
        "",
        "Written by `python benchmarks/bench_rnn.py" + (" --quick" if args.quick else "") + "`; do not edit by hand.",
        "Elman RNN, tanh, bias, no output layer, column layout (d2l). One call = forward +",
        "backward with a random upstream gradient `dhs` on the hidden states (gradients of",
        "every parameter, of `xs` and of `h0`). Sizes are (B, T, D, H).",
        "",
        "## Machine",
        "",
        *machine,
        (
            f"- Matmul peak (1024 x 1024 matmul, best row of this run): float64 {peaks['float64']:.1f} GFLOP/s,"
            f" float32 {peaks['float32']:.1f} GFLOP/s"
        ),
        f"- Other processes kept {fmt(load, '.2f')} cores busy on average during the run"
        + (" (**the machine was not idle: rows marked (busy) are unreliable**)" if load and load > BUSY else " (idle)"),
        f"- Whole run: {elapsed:.0f} s",
        "",
        "## Method",
        "",
        "- Generated module: `python -m derive build SPEC.toml --format py --style loop`"
        + (f" (here: prebuilt modules from `{args.prebuilt}`)" if args.prebuilt else "")
        + (f" (here run as `{args.derive_cmd}`)" if args.derive_cmd != DEFAULT_DERIVE and not args.prebuilt else "")
        + ", imported from a temporary directory.",
        "- Hand-written NumPy: `benchmarks/_handwritten.py` (input projection of all steps in one matmul,",
        "  weight gradients in one matmul over all steps, tanh' = 1 - h^2 from the stored h).",
        "- torch: `torch.nn.RNN` (CPU, autograd, `torch.autograd.grad` with the same `dhs`).",
        "  JAX: `jax.jit(jax.grad(sum(dhs * hs)))` with `lax.scan`.",
        "- Each pair (generated, X) alternates in one process, in alternating order, after a warm-up;",
        "  ratios are medians of the paired ratios, times are medians. torch/numpy is the median of",
        "  the same-round ratios. A sample is as many back-to-back calls as fill 20 ms (5 ms with",
        f"  --quick). Samples of different libraries are {SWITCH_PAUSE} s apart: OpenBLAS's and OpenMP's worker",
        "  threads spin after a call and, on few cores, slow the other library's threads (torch right",
        "  after a NumPy call measured 2-10x slower than alone).",
        "- GFLOP/s count the matmul FLOPs only: 2BT(DH + HH) forward and twice that backward, per layer.",
        "  Every round also times a 1024 x 1024 matmul of the row's dtype; % of peak is the median over",
        "  rounds of (achieved GFLOP/s) / (that round's matmul GFLOP/s), so that both are measured under",
        "  the same conditions (so it need not equal GFLOP/s divided by the median peak).",
        "- Before each size the benchmark waits (up to --wait-idle seconds) for other processes to leave",
        f"  the cores idle; a row timed while they kept more than {BUSY} cores busy is marked (busy).",
        "- Cache: the distinct buffers the generated module's `cache` dict keeps alive (the inputs `xs`",
        "  and the parameters excluded) vs the buffers the hand-written version keeps (one (T+1, B, H)",
        "  array of hidden states per layer).",
    ]
    for dtype in ("float64", "float32"):
        sub = [r for r in rows if r.dtype == dtype]
        if not sub:
            continue
        head = [
            "size",
            "hand-written NumPy ms",
            "torch ms",
            "torch/numpy",
            "generated ms",
            "generated/hand-written",
            "torch/generated",
            "GFLOP/s",
            "% of peak",
            "cache MB vs hand-written MB",
        ]
        if have_jax:
            head[7:7] = ["jax ms", "jax/generated"]
        out += ["", f"## {dtype}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sub:
            cells = [
                r.case.label + (" (busy)" if r.busy else ""),
                fmt(r.median_ms["numpy"], ".3g"),
                fmt(r.median_ms.get("torch"), ".3g"),
                fmt(r.torch_over_numpy, ".2f", "x"),
                fmt(r.median_ms["generated"], ".3g"),
                f"{1.0 / r.ratio['numpy']:.3f}x",
                fmt(r.ratio.get("torch"), ".2f", "x"),
                fmt(r.gflops("generated"), ".1f"),
                f"{100 * r.share['generated']:.0f} %",
                f"{r.cache_mb:.2f} vs {r.hand_mb:.2f}",
            ]
            if have_jax:
                cells[7:7] = [fmt(r.median_ms.get("jax"), ".3g"), fmt(r.ratio.get("jax"), ".2f", "x")]
            out.append("| " + " | ".join(cells) + " |")

    out += ["", "## Throughput and memory of every implementation", ""]
    names = ["generated", "numpy"] + (["torch"] if have_torch else []) + (["jax"] if have_jax else [])
    head = [
        "size",
        "dtype",
        *[f"{n} GFLOP/s (% peak)" for n in names],
        "matmul peak GFLOP/s",
        "peak MB during a call (generated / numpy)",
        "max rel. error vs numpy",
        "rounds",
        "other processes (cores)",
    ]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.case.label, r.dtype]
        for n in names:
            g = r.gflops(n)
            cells.append("n/a" if g is None else f"{g:.1f} ({100 * r.share[n]:.0f} %)")
        cells.append(f"{r.peak:.1f}")
        cells.append(f"{r.peak_mb.get('generated', float('nan')):.2f} / {r.peak_mb.get('numpy', float('nan')):.2f}")
        cells.append(", ".join(f"{k} {v:.1e}" for k, v in r.error.items()))
        cells.append(str(r.rounds))
        cells.append(fmt(r.load, ".2f") + (" (busy)" if r.busy else ""))
        out.append("| " + " | ".join(cells) + " |")

    out += ["", "## Targets", "", "| target | measured | status |", "|---|---|---|"]
    for target, measured, met in targets(rows):
        status = "n/a" if met is None else ("met" if met else "**not met**")
        out.append(f"| {target} | {measured} | {status} |")
    if notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def targets(rows: list[Row]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for every target of the issue; met is None when not measured."""
    result: list[tuple[str, str, bool | None]] = []

    def row(case: Case, dtype: str = "float64") -> Row | None:
        return next((r for r in rows if r.case == case and r.dtype == dtype), None)

    def busy(r: Row) -> str:
        return " (busy)" if r.busy else ""

    bad = [
        f"{r.case.label} {r.dtype}: {v:.1e}"
        for r in rows
        for k, v in r.error.items()
        if k == "generated" and not v <= TOLERANCE[np.dtype(r.dtype).type]
    ]
    result.append(
        (
            "generated gradients equal the hand-written ones (rel. error <= 1e-7 float64, 1e-3 float32)",
            "; ".join(bad) or "all sizes",
            not bad,
        )
    )

    worst = max(rows, key=lambda r: 1.0 / r.ratio["numpy"])
    result.append(
        (
            "generated <= 1.05x hand-written (every size, float64 and float32)",
            f"worst {1.0 / worst.ratio['numpy']:.3f}x at {worst.case.label} {worst.dtype}{busy(worst)}",
            1.0 / worst.ratio["numpy"] <= 1.05,
        )
    )

    for case, goal in ((SMALL, 4.0), (MIDDLE, 1.3), (LARGE, 1.05)):
        r = row(case)
        value = r.ratio.get("torch") if r else None
        result.append(
            (
                f"torch/generated >= {goal:g} at {case.label} (float64)",
                fmt(value, ".2f", "x") + (busy(r) if r else ""),
                None if value is None else value >= goal,
            )
        )

    r = row(LARGE)
    if r is not None:
        share = r.share["generated"]
        result.append(
            (
                "generated >= 65 % of the float64 matmul peak at " + LARGE.label,
                f"{100 * share:.0f} % ({r.gflops('generated'):.1f} GFLOP/s; matmul {r.peak:.1f}){busy(r)}",
                share >= 0.65,
            )
        )

    worst = max(rows, key=lambda r: r.cache_mb / max(r.hand_mb, 1e-12))
    value = worst.cache_mb / max(worst.hand_mb, 1e-12)
    result.append(
        (
            "cache <= 1.1x the hand-written activations",
            f"worst {value:.2f}x at {worst.case.label} ({worst.cache_mb:.2f} vs {worst.hand_mb:.2f} MB)",
            value <= 1.1,
        )
    )
    return result


# --------------------------------------------------------------------------- main


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def optional_imports(notes: list[str], threads: int) -> tuple[Any, Any]:
    """Import torch (using ``threads`` threads) and jax if installed; note why not otherwise."""
    torch = jax = None
    try:
        import torch as torch_module

        torch = torch_module
        torch.set_num_threads(threads)
    except ImportError as exc:
        notes.append(f"torch skipped: not importable ({exc}); install it with `pip install torch==2.13.0`.")
    try:
        import jax as jax_module

        jax = jax_module
        jax.config.update("jax_enable_x64", True)  # for the float64 rows; float32 stays float32
    except ImportError:
        notes.append("JAX skipped: not importable (this benchmark does not install it).")
    return torch, jax


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under about a minute)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="report path (default benchmarks/RESULTS.md)"
    )
    parser.add_argument("--prebuilt", type=Path, help="import DIR/<name>.py instead of running derive build")
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="threads for OpenBLAS and torch (default: every core, %(default)s here)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each size, wait up to this long for other processes to go quiet (default 30, 5 with --quick)",
    )
    parser.add_argument(
        "--derive-cmd",
        default=DEFAULT_DERIVE,
        help="the command that runs derive's CLI (default: this Python's -m derive)",
    )
    args = parser.parse_args(argv)
    if args.wait_idle is None:
        args.wait_idle = 5.0 if args.quick else 30.0

    started = time.perf_counter()
    notes: list[str] = []
    blas = OpenBLAS()
    if args.threads != blas.threads() and not blas.set_threads(args.threads):
        notes.append(f"could not set the BLAS thread count to {args.threads} (not OpenBLAS?)")
    torch, jax = optional_imports(notes, args.threads)
    wait_for_idle(args.wait_idle)
    busy = LoadMonitor.sample(0.5)
    if busy is not None and busy > BUSY:
        warning = (
            f"other processes keep {busy:.1f} of {available_cores()} cores busy: multithreaded BLAS "
            "stalls when one of its threads shares a core (times can grow 10-30x); run on an idle "
            "machine, or pass --threads with the number of idle cores"
        )
        print("bench_rnn: warning: " + warning, file=sys.stderr, flush=True)
        notes.append("At the start, " + warning + ".")
    with tempfile.TemporaryDirectory(prefix="bench_rnn_") as tmp:
        print("building the generated modules ...", flush=True)
        modules = build_generated(CASES, Path(tmp), args.prebuilt, shlex.split(args.derive_cmd))

        monitor = LoadMonitor()
        rows = []
        for case in CASES:
            for dtype in DTYPES:
                wait_for_idle(args.wait_idle)
                row = run_case(case, dtype, modules[case], torch, jax, args.quick)
                rows.append(row)
                times = ", ".join(f"{k} {v:.3g} ms" for k, v in row.median_ms.items())
                print(
                    f"{case.label:>25} {row.dtype}: {times}; generated/numpy {1 / row.ratio['numpy']:.3f}, "
                    f"{100 * row.share['generated']:.0f} % of peak" + (" (busy)" if row.busy else ""),
                    flush=True,
                )
        load = monitor.others()

    text = report(rows, machine_info(torch, jax), notes, args, time.perf_counter() - started, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp_out.write_text(text)
    tmp_out.replace(args.out)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
