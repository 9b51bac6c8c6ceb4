"""The generated module's loss path (issue 15): the loss table's code-facing forms and what
the module computes from them. The fused loss must give the values of the textbook
formulas (bitwise for the gradients, 1e-12 for the loss value) while allocating little:
no one-hot rows, softmax and log-sum-exp in one buffer, logits written into one buffer."""
from __future__ import annotations

import dataclasses
import importlib.util
import tempfile
import tracemalloc
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sympy as sp

from derive import build
from derive import spec as specs
from derive.matrices import inner
from derive.rules.losses import LOSSES, At, Pick

_BUILT: dict = {}


def module(s: specs.Spec, style: str = "loop") -> ModuleType:
    key = (repr(s), style)
    if key not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="derive-table-"))
        build.build(s, out, formats=["py"], style=style, command="pytest")
        spec = importlib.util.spec_from_file_location(f"_table_{len(_BUILT)}_{s.name}", out / f"{s.name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _BUILT[key] = mod
    return _BUILT[key]


def wide(preset: str, output_size: int, **loss) -> specs.Spec:
    s = specs.preset(preset)
    return dataclasses.replace(s, model=dataclasses.replace(s.model, output_size=output_size),
                               loss=dataclasses.replace(s.loss, **loss))


def problem(mod: ModuleType, T: int, B: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(i["shape"]) * 0.5 for n, i in mod.PARAMS.items()}
    D = mod.SPEC["model"]["input_size"]
    return params, rng.standard_normal((T, B, D))


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("row", [False, True])
def test_gathered_cross_entropy_is_the_stable_form_with_the_pick(row: bool) -> None:
    """The table's gathered form is its stable form with y . z (y one-hot) read as Pick(z, y),
    the entry of z at y's class index: nothing else changes."""
    n = 4
    shape = (1, n) if row else (n, 1)
    z, y, p = sp.MatrixSymbol("z", *shape), sp.MatrixSymbol("y", *shape), sp.MatrixSymbol("p", *shape)
    at = At(row=row, prediction=p, logits=z, output_activation="identity", target=y)
    loss = LOSSES["cross_entropy"]
    gathered = loss.gathered(at)
    assert Pick(z, y) in gathered.atoms(Pick)
    assert gathered.xreplace({Pick(z, y): inner(row, y, z)}).doit() == loss.stable(at).doit()
    assert LOSSES["bce"].gathered is None and LOSSES["mse"].gathered is None


@pytest.mark.parametrize("preset", ["elman_softmax", "uwv_softmax", "chunked_elman"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fused_cross_entropy_is_bitwise_the_one_hot_formula(preset: str, reduction: str) -> None:
    """Gradients bitwise equal to softmax(z) - onehot(y) pushed through backward(); the loss
    within 1e-12 of logsumexp(z) - sum(onehot * z)."""
    s = wide(preset, 7, reduction=reduction)
    mod = module(s)
    T, B = 6, 5
    params, xs = problem(mod, T, B)
    targets = np.random.default_rng(2).integers(0, 7, size=(T, B))
    loss, grads = mod.loss_and_grads(params, xs, targets, clip=0, clip_norm=0)
    hs, cache = mod.forward(params, xs)
    (wname, weight), *bias = [(n, params[n]) for n, i in mod.PARAMS.items() if i["layer"] == len(mod._HIDDEN) + 1]
    column = mod.LAYOUT == "column"
    rows = hs.reshape(-1, hs.shape[-1])
    logits = (rows @ (weight.T if column else weight)).reshape(T, B, -1)
    if bias:
        logits += bias[0][1]
    onehot = np.eye(7)[targets]
    dlogits = softmax(logits) - onehot
    if reduction == "mean":
        dlogits = 1 / (B * T) * dlogits
    dtop = (dlogits.reshape(-1, 7) @ (weight if column else weight.T)).reshape(T, B, -1)
    want = mod.backward(dtop, cache, clip=0, clip_norm=0)
    for name in mod.PARAMS:
        if mod.PARAMS[name]["layer"] <= len(mod._HIDDEN):
            assert np.array_equal(grads[name], want[name]), name
    contract = dlogits.reshape(-1, 7).T @ rows
    assert np.array_equal(grads[wname], contract if column else contract.T)
    m = logits.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
    value = np.sum(lse) - np.sum(onehot * logits)
    if reduction == "mean":
        value = value / (B * T)
    assert loss == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_loop_module_builds_no_one_hot_rows() -> None:
    """Class targets are read by index: the loop module has no one-hot helper at all, and
    the unrolled module uses it only for token inputs."""
    mod = module(wide("elman_softmax", 7))
    assert not hasattr(mod, "_one_hot") and hasattr(mod, "_softmax_lse") and hasattr(mod, "_add_at")


@pytest.mark.parametrize("kind", ["bce", "mse"])
def test_bce_and_mse_gradients_are_the_residual(kind: str) -> None:
    """BCE (sigmoid(z) - y) and MSE without an output layer (h - y, scaled by the mean)
    computed in place give bitwise the textbook residual."""
    if kind == "bce":
        s = specs.preset("many_to_one_bce")
    else:
        s = dataclasses.replace(specs.preset("stacked_mse"), loss=dataclasses.replace(
            specs.preset("stacked_mse").loss, reduction="mean"))
    mod = module(s)
    T, B = 5, 4
    params, xs = problem(mod, T, B)
    hs, cache = mod.forward(params, xs)
    rng = np.random.default_rng(3)
    if kind == "bce":
        targets = rng.uniform(0, 1, size=(B, 1))
        loss, grads = mod.loss_and_grads(params, xs, targets, clip=0, clip_norm=0)
        w = params["w_o"]
        logits = (hs[-1:].reshape(-1, hs.shape[-1]) @ w).reshape(1, B, 1)
        dlogits = (0.5 * np.tanh(0.5 * logits) + 0.5) - targets[None]   # the table's stable sigma
        dtop = np.concatenate([np.zeros((T - 1, B, hs.shape[-1])), (dlogits.reshape(-1, 1) @ w.T).reshape(1, B, -1)])
        value = np.sum(np.logaddexp(0, logits)) - np.sum(targets[None] * logits)
    else:
        targets = rng.standard_normal(hs.shape)
        loss, grads = mod.loss_and_grads(params, xs, targets, clip=0, clip_norm=0)
        dtop = 1 / (B * T) * (hs - targets)
        value = 1 / 2 * np.sum((hs - targets) * (hs - targets)) / (B * T)
    want = mod.backward(dtop, cache, clip=0, clip_norm=0)
    for name, info in mod.PARAMS.items():
        if info["layer"] <= len(mod._HIDDEN):
            assert np.array_equal(grads[name], want[name]), name
    assert loss == pytest.approx(value, rel=1e-12, abs=1e-15)


def peak_of(call) -> int:
    call()   # warm-up: imports, caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_loss_path_keeps_one_logit_buffer() -> None:
    """With many classes the (T, B, V) arrays dominate: the fused loss keeps one of them (the
    logits, which become the softmax and then dlogits in place). The one-hot formula kept
    five or more (one-hot rows, the shifted logits, their exp, y * z, probs - y)."""
    V, T, B = 2000, 8, 16
    mod = module(wide("elman_softmax", V))
    params, xs = problem(mod, T, B)
    targets = np.random.default_rng(4).integers(0, V, size=(T, B))
    peak = peak_of(lambda: mod.loss_and_grads(params, xs, targets))
    buffer = T * B * V * 8
    weights = sum(np.prod(i["shape"]) for i in mod.PARAMS.values()) * 8   # the returned gradients
    assert peak <= 1.2 * buffer + 2 * weights, peak / buffer


def test_recursion_runs_without_the_loss_buffers() -> None:
    """At D = H = V every big array is one (T, B, H) buffer: at the peak (the recursion) live
    are the states h (T + 1 rows), dtop, the deltas and the gradient on xs, plus the
    parameter gradients; the logits' buffer is released before the recursion runs."""
    n, T, B = 256, 20, 32
    s = specs.preset("elman_softmax")
    s = dataclasses.replace(s, model=dataclasses.replace(s.model, input_size=n, hidden_sizes=(n,), output_size=n))
    mod = module(s)
    params, xs = problem(mod, T, B)
    targets = np.random.default_rng(4).integers(0, n, size=(T, B))
    peak = peak_of(lambda: mod.loss_and_grads(params, xs, targets))
    buffer = T * B * n * 8
    weights = sum(np.prod(i["shape"]) for i in mod.PARAMS.values()) * 8
    assert peak <= ((T + 1) / T + 3 + 0.2) * buffer + weights, peak / buffer
