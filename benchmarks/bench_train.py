#!/usr/bin/env python
"""Training-step benchmark of the char model: the generated module against the same loop in torch.

    python benchmarks/bench_train.py [--quick] [--out benchmarks/RESULTS.md]

One iteration = what examples/char_rnn.py does per step, at hidden 128, sequence 50, batch 32,
vocabulary 65, CPU: forward over integer token inputs, softmax cross-entropy (sum), BPTT with
the state carried from the previous iteration (chunked truncation, chunk = the sequence),
clipping by global norm 5, Adagrad (lr 0.1).
- generated: `loss_and_grads(params, tokens, targets, h, return_state=True)` of a module built
  with `derive build` (loop style), then the Adagrad update in NumPy;
- torch: `nn.RNN` + `nn.Linear`, `F.one_hot` inputs, `F.cross_entropy(reduction="sum")`,
  `backward`, `clip_grad_norm_`, `torch.optim.Adagrad`, the state detached between iterations.
Both in float64 and float32. Each round times a block of iterations of each, alternately and
in alternating order; the ratio is the median over rounds of the same-round ratios.

The second table is the input projection alone (all steps of xs @ W_xh.T): the module's gather
(`np.take` of the weight's rows by token index, into the state buffer) against the matrix
product of prebuilt one-hot rows (`_matmul_steps`, what float inputs cost), and the whole
`loss_and_grads` with token inputs against the same call with one-hot float inputs.

The results replace the section "## Training step" of RESULTS.md (the rest is left as it is).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
B, T, H, V = 32, 50, 128, 65
HEADING = "## Training step (benchmarks/bench_train.py)"


def generated_module(vocab: int, hidden: int, folder: Path):
    from derive import build, spec

    s = spec.from_dict({
        "name": "char_bench", "model": {"input_size": vocab, "hidden_sizes": [hidden], "output_size": vocab,
                                        "activation": "tanh", "output_activation": "softmax"},
        "loss": {"kind": "cross_entropy"},
        "bptt": {"steps": T, "truncate": T, "truncate_style": "chunk", "clip_norm": 5.0},
    })
    build.build(s, folder, formats=["py"], command="python benchmarks/bench_train.py")
    loader = importlib.util.spec_from_file_location("char_bench", folder / "char_bench.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def numpy_loop(mod, dtype, data):
    params = {n: v.astype(dtype) for n, v in mod.init_params(seed=0, scale=0.01).items()}
    memory = {n: np.zeros_like(v) for n, v in params.items()}
    lr = dtype(0.1)
    state = {"h": None, "i": 0}

    def iteration():
        i = state["i"] % len(data)
        xs, ys = data[i]
        loss, grads, state["h"] = mod.loss_and_grads(params, xs, ys, state["h"], return_state=True)
        for n, g in grads.items():
            if n in params:
                memory[n] += g * g
                params[n] -= lr * g / np.sqrt(memory[n] + dtype(1e-8))
        state["i"] += 1
        return loss
    return iteration


def torch_loop(torch, dtype, data):
    F = torch.nn.functional
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    torch.manual_seed(0)
    rnn = torch.nn.RNN(V, H).to(tdtype)
    out = torch.nn.Linear(H, V).to(tdtype)
    params = [*rnn.parameters(), *out.parameters()]
    opt = torch.optim.Adagrad(params, lr=0.1)
    tdata = [(torch.from_numpy(xs), torch.from_numpy(ys).reshape(-1)) for xs, ys in data]
    state = {"h": torch.zeros(1, B, H, dtype=tdtype), "i": 0}

    def iteration():
        xs, ys = tdata[state["i"] % len(tdata)]
        opt.zero_grad()
        hs, h = rnn(F.one_hot(xs, V).to(tdtype), state["h"])
        loss = F.cross_entropy(out(hs).reshape(-1, V), ys, reduction="sum")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state["h"], state["i"] = h.detach(), state["i"] + 1
        return loss
    return iteration


def per_call(fn, seconds: float) -> float:
    """Seconds per call: as many back-to-back calls as fill `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def paired(a, b, rounds: int, seconds: float) -> tuple[float, float, float]:
    """Median seconds per call of a and b, and the median of the same-round ratios b / a."""
    ta, tb, ratio = [], [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        x = per_call(first, seconds)
        time.sleep(0.2)   # let the other library's spinning threads settle (see bench_rnn.py)
        y = per_call(second, seconds)
        time.sleep(0.2)
        sa, sb = (x, y) if r % 2 == 0 else (y, x)
        ta.append(sa), tb.append(sb), ratio.append(sb / sa)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratio)


def projection_rows(mod, rounds: int, seconds: float) -> list[str]:
    rows = []
    rng = np.random.default_rng(1)
    for vocab in (64, 128, 256):
        W = rng.normal(size=(H, vocab))
        WT = np.ascontiguousarray(W.T)
        tokens = rng.integers(0, vocab, size=(T, B))
        onehot = np.eye(vocab)[tokens]
        out = np.empty((T, B, H))
        gather = lambda: np.take(WT, tokens, axis=0, out=out, mode="clip")  # noqa: E731
        matmul = lambda: mod._matmul_steps(onehot, W.T, out=out)  # noqa: E731
        tg, tm, ratio = paired(gather, matmul, rounds, seconds)
        rows.append(f"| {vocab} | input projection (T, B) -> (T, B, {H}) | {tg * 1e6:.0f} | {tm * 1e6:.0f} | {ratio:.2f}x |")
    # the whole call at V = 65
    rng = np.random.default_rng(2)
    params = mod.init_params(seed=0, scale=0.1)
    tokens, targets = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    onehot = np.eye(V)[tokens]
    tg, tm, ratio = paired(lambda: mod.loss_and_grads(params, tokens, targets),
                           lambda: mod.loss_and_grads(params, onehot, targets), rounds, seconds)
    rows.append(f"| {V} | whole loss_and_grads (float64) | {tg * 1e6:.0f} | {tm * 1e6:.0f} | {ratio:.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    a = parser.parse_args(argv)
    rounds, seconds = (3, 0.3) if a.quick else (9, 1.0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        mod = generated_module(V, H, Path(folder))
    rng = np.random.default_rng(0)
    text = rng.integers(0, V, size=(8, T + 1, B))
    data = [(seq[:-1], seq[1:]) for seq in text]
    lines = [HEADING, "",
             "Written by `python benchmarks/bench_train.py`" + (" --quick" if a.quick else "") + "; see its docstring for the method.",
             f"Char model: vocabulary {V}, hidden {H}, sequence {T}, batch {B}; one iteration = forward over token inputs,",
             "cross-entropy, BPTT with the state carried over (chunk = the sequence), clip_norm 5, Adagrad.",
             f"NumPy {np.__version__}, Python {platform.python_version()}, {platform.machine()}."]
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    lines[-1] += f" {os.cpu_count()} cores; BLAS threads: {blas}; load average at the start {os.getloadavg()[0]:.2f}."
    try:
        import torch
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        lines[-1] += f" PyTorch {torch.__version__}, {torch.get_num_threads()} threads."
        lines += ["", "| dtype | generated ms / iteration | torch ms / iteration | generated it/s | torch it/s | torch/generated (same-round median) |",
                  "|---|---|---|---|---|---|"]
        for dtype in (np.float64, np.float32):
            tg, tt, ratio = paired(numpy_loop(mod, dtype, data), torch_loop(torch, dtype, data), rounds, seconds)
            lines.append(f"| {np.dtype(dtype).name} | {tg * 1e3:.2f} | {tt * 1e3:.2f} | {1 / tg:.0f} | {1 / tt:.0f} | {ratio:.2f}x |")
            print(lines[-1], flush=True)
    except ImportError:
        lines += ["", "torch is not importable: the comparison was skipped (pip install torch==2.13.0)."]
    lines += ["", "Token inputs: gather by index against the product of one-hot rows (float64).", "",
              "| vocabulary | what | gather / tokens us | one-hot matmul / floats us | one-hot/gather |", "|---|---|---|---|---|"]
    for row in projection_rows(mod, rounds, seconds):
        lines.append(row)
        print(row, flush=True)
    lines += ["", f"Whole run: {time.perf_counter() - start:.0f} s; load average at the end {os.getloadavg()[0]:.2f}"
              " (the machine's other processes included).", ""]
    old = a.out.read_text(encoding="utf-8") if a.out.exists() else ""
    head = old.split(HEADING)[0].rstrip("\n")
    tail = old.split(HEADING, 1)[1] if HEADING in old else ""
    after = tail[tail.find("\n## "):] if "\n## " in tail else ""
    text = (head + "\n\n" if head else "") + "\n".join(lines) + ("\n" + after.lstrip("\n") if after else "")
    a.out.write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
