"""The generated module against an independent autodiff reference, case by case.

Why: `derive check` and the golden tests compare the module with the engine it was printed
from, and the random property test may miss a case. Here a fixed table covers every
activation, output activation and loss, both reductions and loss positions, clipping that
triggers (the table asserts it does), truncation windows, both layouts, stacked layers, no
output layer and no bias, and float32 inputs; each case is rendered in memory in both code
styles and compared, deterministically, with `tests/reference_autograd.py` (HIPS autograd,
which differentiates a plain forward pass and shares no derivative code with derive).
"""
from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from derive.build import render_all
from derive.spec import BPTT, Loss, Model, Notation, Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_autograd import reference_backward, reference_loss_and_grads  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-12)
BASE = Spec(name="table_rnn",
            model=Model(input_size=3, hidden_sizes=(4,), output_size=3, activation="tanh",
                        output_activation="identity", bias=True),
            loss=Loss(kind="mse", at="every_step", reduction="sum"),
            bptt=BPTT(steps=4), notation=Notation(preset="d2l", layout="column"))


def case(model: dict | None = None, loss: dict | None = None, bptt: dict | None = None,
         layout: str = "column") -> Spec:
    return dataclasses.replace(
        BASE, model=dataclasses.replace(BASE.model, **(model or {})),
        loss=dataclasses.replace(BASE.loss, **(loss or {})),
        bptt=dataclasses.replace(BASE.bptt, **(bptt or {})),
        notation=dataclasses.replace(BASE.notation, layout=layout))


CASES = {
    "tanh": case(),
    "relu": case(model=dict(activation="relu")),
    "sigmoid": case(model=dict(activation="sigmoid")),
    "identity": case(model=dict(activation="identity")),
    "mse-sigmoid-out": case(model=dict(output_activation="sigmoid")),
    "mse-softmax-out": case(model=dict(output_activation="softmax")),
    "ce-softmax": case(model=dict(output_activation="softmax"), loss=dict(kind="cross_entropy")),
    "ce-identity": case(loss=dict(kind="cross_entropy")),
    "bce-sigmoid": case(model=dict(output_activation="sigmoid"), loss=dict(kind="bce")),
    "bce-identity": case(loss=dict(kind="bce")),
    "none-identity": case(loss=dict(kind="none")),
    "none-softmax": case(model=dict(output_activation="softmax"), loss=dict(kind="none")),
    "mean-every-step": case(loss=dict(reduction="mean")),
    "mean-last-step": case(loss=dict(reduction="mean", at="last_step")),
    "ce-mean-every-step": case(model=dict(output_activation="softmax"), loss=dict(kind="cross_entropy", reduction="mean")),
    "last-step": case(loss=dict(at="last_step")),
    "clip": case(bptt=dict(clip=0.3)),
    "clip-relu-mean": case(model=dict(activation="relu"), loss=dict(reduction="mean"), bptt=dict(clip=0.05)),
    "truncate-1": case(bptt=dict(truncate=1)),
    "truncate-2": case(bptt=dict(truncate=2)),
    "truncate-2-clip-stacked": case(model=dict(hidden_sizes=(3, 2)), bptt=dict(truncate=2, clip=0.2)),
    "row-layout": case(layout="row"),
    "row-stacked-relu": case(model=dict(hidden_sizes=(3, 2), activation="relu"), layout="row"),
    "stacked-3": case(model=dict(hidden_sizes=(2, 3, 2), activation="sigmoid")),
    "no-output-layer": case(model=dict(output_size=0)),
    "no-output-layer-none": case(model=dict(output_size=0), loss=dict(kind="none")),
    "no-bias": case(model=dict(bias=False)),
}


def load(spec: Spec, style: str) -> types.ModuleType:
    text = render_all(spec, ["py"], style, command="test")["py"]
    mod = types.ModuleType(f"_table_{style}")
    exec(compile(text, f"<{spec.name}:{style}>", "exec"), mod.__dict__)
    return mod


def problem(mod: types.ModuleType, seed: int = 0, B: int = 2, dtype=np.float64):
    rng = np.random.default_rng(seed)
    m, loss = mod.SPEC["model"], mod.SPEC["loss"]
    T, hidden = mod.SPEC["bptt"]["steps"], list(m["hidden_sizes"])
    out = m["output_size"] or hidden[-1]
    params = {n: (0.8 * rng.standard_normal(meta["shape"])).astype(dtype) for n, meta in mod.PARAMS.items()}
    xs = rng.standard_normal((T, B, m["input_size"])).astype(dtype)
    h0 = [(0.5 * rng.standard_normal((B, H))).astype(dtype) for H in hidden]
    lead = (T, B) if loss["at"] == "every_step" else (B,)
    if loss["kind"] == "cross_entropy":
        targets = rng.integers(0, out, size=lead)
    elif loss["kind"] == "bce":
        targets = rng.uniform(0.0, 1.0, size=lead + (out,)).astype(dtype)
    else:
        targets = rng.standard_normal(lead + (out,)).astype(dtype)
    return params, xs, h0, targets


def assert_same(got: dict, want: dict, names: list[str], what: str, tol: dict = TOL) -> None:
    for n in names + ["xs"]:
        np.testing.assert_allclose(np.asarray(got[n], dtype=float), want[n], err_msg=f"{what}: {n}", **tol)
    assert len(got["h0"]) == len(want["h0"])
    for l, (a, b) in enumerate(zip(got["h0"], want["h0"])):
        np.testing.assert_allclose(np.asarray(a, dtype=float), b, err_msg=f"{what}: h0[{l}]", **tol)


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", list(CASES))
def test_module_equals_reference(name: str, style: str) -> None:
    spec = CASES[name]
    mod = load(spec, style)
    names = list(mod.PARAMS)
    params, xs, h0, targets = problem(mod)
    ref_loss, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, h0)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, err_msg=f"{name}: loss", **TOL)
    assert_same(grads, ref, names, f"{name} {style} loss_and_grads")
    dhs = np.random.default_rng(1).standard_normal(xs.shape[:2] + (spec.model.hidden_sizes[-1],))
    _, cache = mod.forward(params, xs, h0)
    assert_same(mod.backward(dhs, cache), reference_backward(mod.SPEC, mod.PARAMS, params, xs, h0, dhs),
                names, f"{name} {style} backward")


@pytest.mark.parametrize("name", [n for n in CASES if "clip" in n])
def test_clip_cases_trigger(name: str) -> None:
    """The clipping cases are real: some gradient entries exceed the clip, some do not."""
    spec = CASES[name]
    mod = load(spec, "loop")
    params, xs, h0, targets = problem(mod)
    unclipped = dataclasses.replace(spec, bptt=dataclasses.replace(spec.bptt, clip=0.0))
    _, raw = reference_loss_and_grads(unclipped.to_dict(), mod.PARAMS, params, xs, targets, h0)
    values = np.concatenate([np.abs(raw[n]).ravel() for n in mod.PARAMS])
    assert (values > spec.bptt.clip).any() and (values < spec.bptt.clip).any()


@pytest.mark.parametrize("name", [n for n in CASES if "truncate" in n])
def test_truncation_cases_differ_from_full_bptt(name: str) -> None:
    spec = CASES[name]
    mod = load(spec, "loop")
    params, xs, h0, targets = problem(mod)
    full = dataclasses.replace(spec, bptt=dataclasses.replace(spec.bptt, truncate=0))
    _, cut = mod.loss_and_grads(params, xs, targets, h0)
    _, whole = load(full, "loop").loss_and_grads(params, xs, targets, h0)
    assert max(float(np.max(np.abs(cut[n] - whole[n]))) for n in mod.PARAMS) > 1e-6


@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_relu_slope_at_zero_is_zero(style: str) -> None:
    """All-zero inputs, weights and state: every pre-activation is exactly 0, f'(0) = 0."""
    spec = CASES["relu"]
    mod = load(spec, style)
    params, xs, h0, targets = problem(mod)
    params = {n: np.zeros_like(v) for n, v in params.items()}
    params["W_hy"] = np.ones_like(params["W_hy"])
    xs, h0 = np.zeros_like(xs), [np.zeros_like(h) for h in h0]
    _, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, h0)
    _, grads = mod.loss_and_grads(params, xs, targets, h0)
    assert_same(grads, ref, list(mod.PARAMS), "relu at 0")
    assert not np.any(grads["b_h"])


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", ["ce-softmax", "bce-sigmoid", "clip", "truncate-2"])
def test_float32_in_float32_out(name: str, style: str) -> None:
    spec = CASES[name]
    mod = load(spec, style)
    params, xs, h0, targets = problem(mod, dtype=np.float32)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    for n in list(mod.PARAMS) + ["xs"]:
        assert grads[n].dtype == np.float32, n
    assert all(h.dtype == np.float32 for h in grads["h0"])
    assert np.asarray(loss).dtype == np.float32
    ref_loss, ref = reference_loss_and_grads(
        mod.SPEC, mod.PARAMS, {k: v.astype(np.float64) for k, v in params.items()}, xs.astype(np.float64),
        targets, [h.astype(np.float64) for h in h0])
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)
    assert_same(grads, ref, list(mod.PARAMS), f"{name} float32", dict(rtol=1e-3, atol=1e-4))


@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_input_checks(style: str) -> None:
    mod = load(CASES["ce-softmax"], style)
    params, xs, h0, targets = problem(mod)
    with pytest.raises(ValueError, match="xs"):
        mod.loss_and_grads(params, xs[..., :2], targets, h0)
    with pytest.raises(ValueError, match="params"):
        mod.loss_and_grads({k: v for k, v in params.items() if k != "W_hh"}, xs, targets, h0)
    with pytest.raises(ValueError, match="params"):
        mod.loss_and_grads({**params, "W_hh": params["W_hh"][:, :2]}, xs, targets, h0)
    with pytest.raises(ValueError, match="h0"):
        mod.loss_and_grads(params, xs, targets, [h0[0][:, :2]])
    with pytest.raises(ValueError, match="h0"):
        mod.loss_and_grads(params, xs, targets, h0 + h0)
    for bad in (np.full_like(targets, 3), np.full_like(targets, -1)):   # just outside [0, 3)
        with pytest.raises(ValueError, match="targets"):
            mod.loss_and_grads(params, xs, bad, h0)
    mod.loss_and_grads(params, xs, np.full_like(targets, 2), h0)      # just inside
    with pytest.raises(ValueError, match="targets"):
        mod.loss_and_grads(params, xs, targets[:1], h0)
    with pytest.raises(ValueError, match="targets"):
        mod.loss_and_grads(params, xs, targets.astype(float), h0)
    _, cache = mod.forward(params, xs, h0)
    with pytest.raises(ValueError, match="dhs"):
        mod.backward(np.zeros((1, 1, 1)), cache)
