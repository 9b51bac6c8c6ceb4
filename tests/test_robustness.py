"""The generated modules stay finite, keep float32, reject bad arrays clearly, and warn never."""
from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from derive import build, spec
from derive.cli import main

GENERATED = Path(__file__).resolve().parents[1] / "generated"


def load(name: str) -> ModuleType:
    path = GENERATED / name / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_robust_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def targets_for(mod: ModuleType, T: int, B: int, rng: np.random.Generator) -> np.ndarray:
    m, loss = mod.SPEC["model"], mod.SPEC["loss"]
    shape = (B,) if loss["at"] == "last_step" else (T, B)
    width = m["output_size"] or m["hidden_sizes"][-1]
    if loss["kind"] == "cross_entropy":
        return rng.integers(0, width, size=shape)
    return rng.uniform(0, 1, size=shape + (width,))


@pytest.fixture(autouse=True)
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an overflow or invalid-value warning fails the test
        with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow is harmless
            yield


@pytest.mark.parametrize("name", spec.preset_names())
def test_extreme_values_stay_finite(name: str) -> None:
    mod = load(name)
    rng = np.random.default_rng(0)
    params = {k: v * 1e3 for k, v in mod.init_params(seed=1, scale=1.0).items()}  # logits ~ 1e3
    xs = rng.normal(scale=50.0, size=(7, 3, mod.SPEC["model"]["input_size"]))       # |a| ~ 50
    loss, grads = mod.loss_and_grads(params, xs, targets_for(mod, 7, 3, rng))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for k, g in grads.items() if k != "h0")
    assert all(np.all(np.isfinite(h)) for h in grads["h0"])


@pytest.mark.parametrize("name", spec.preset_names())
def test_long_sequence_with_a_large_recurrent_weight(name: str) -> None:
    mod = load(name)
    rng = np.random.default_rng(1)
    params = mod.init_params(seed=2, scale=3.0)
    xs = rng.normal(size=(1000, 2, mod.SPEC["model"]["input_size"]))
    loss, grads = mod.loss_and_grads(params, xs, targets_for(mod, 1000, 2, rng))
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for k, g in grads.items() if k != "h0")


@pytest.mark.parametrize("name", spec.preset_names())
def test_float32_in_float32_out(name: str) -> None:
    mod = load(name)
    rng = np.random.default_rng(2)
    params = {k: v.astype(np.float32) for k, v in mod.init_params(seed=3).items()}
    xs = rng.normal(size=(4, 2, mod.SPEC["model"]["input_size"])).astype(np.float32)
    hs, cache = mod.forward(params, xs)
    assert hs.dtype == np.float32
    loss, grads = mod.loss_and_grads(params, xs, targets_for(mod, 4, 2, rng).astype(
        np.int64 if mod.SPEC["loss"]["kind"] == "cross_entropy" else np.float32))
    assert np.asarray(loss).dtype == np.float32
    assert all(g.dtype == np.float32 for k, g in grads.items() if k != "h0")
    assert all(h.dtype == np.float32 for h in np.broadcast_arrays(*grads["h0"]))   # (dh, dc) pairs too
    back = mod.backward(np.ones_like(hs), cache)
    assert all(g.dtype == np.float32 for k, g in back.items() if k != "h0")


@pytest.mark.parametrize("call, match", [
    (lambda m, p: m.forward(p, np.zeros((3, 2, 99))), r"xs: expected a real array of shape \(\?, \?, 3\)"),
    (lambda m, p: m.forward(p, np.zeros((3, 3))), r"xs: expected"),
    (lambda m, p: m.forward(p, np.zeros((0, 2, 3))), r"xs: expected at least one step"),
    (lambda m, p: m.forward(p, np.zeros((3, 2, 3), dtype=complex)), r"xs: expected a real array"),
    (lambda m, p: m.forward(p, np.array([[["a", "b", "c"]]])), r"xs: expected a real array"),
    (lambda m, p: m.forward({**p, "W_hh": np.zeros((4, 5))}, np.zeros((3, 2, 3))), r"params\['W_hh'\]: expected .*\(4, 4\)"),
    (lambda m, p: m.forward({k: v for k, v in p.items() if k != "b_h"}, np.zeros((3, 2, 3))), r"params: missing 'b_h'"),
    (lambda m, p: m.forward(p, np.zeros((3, 2, 3)), h0=[np.zeros((2, 5))]), r"h0\[0\]: expected .*\(2, 4\)"),
    (lambda m, p: m.forward(p, np.zeros((3, 2, 3)), h0=[]), r"h0: expected a list of 1 arrays"),
    (lambda m, p: m.backward(np.zeros((3, 2, 5)), m.forward(p, np.zeros((3, 2, 3)))[1]), r"dhs: expected .*\(3, 2, 4\)"),
    (lambda m, p: m.loss_and_grads(p, np.zeros((3, 2, 3)), np.full((3, 2), 3)), r"targets: class indices must be in \[0, 3\)"),
    (lambda m, p: m.loss_and_grads(p, np.zeros((3, 2, 3)), np.full((3, 2), -1)), r"targets: class indices"),
    (lambda m, p: m.loss_and_grads(p, np.zeros((3, 2, 3)), np.zeros((3, 2))), r"targets: expected integer class indices of shape \(3, 2\)"),
    (lambda m, p: m.loss_and_grads(p, np.zeros((3, 2, 3)), np.zeros((2, 2), dtype=int)), r"targets: expected integer"),
])
def test_bad_arrays_raise_value_error_naming_the_argument(call, match: str) -> None:
    mod = load("elman_softmax")
    with pytest.raises(ValueError, match=match):
        call(mod, mod.init_params())


def test_bce_targets_are_checked() -> None:
    mod = load("many_to_one_bce")
    with pytest.raises(ValueError, match=r"targets: expected a real array of shape \(4, 1\)"):
        mod.loss_and_grads(mod.init_params(), np.zeros((3, 4, 1)), np.zeros((3, 4, 1)))


@pytest.mark.parametrize("steps, hidden", [(1, (1,)), (1, (3, 1)), (2, (1,))])
def test_one_step_and_hidden_size_one(steps: int, hidden: tuple, tmp_path: Path) -> None:
    base = spec.preset("stacked_mse")
    s = dataclasses.replace(base, model=dataclasses.replace(base.model, hidden_sizes=hidden)).with_steps(steps)
    for style in ("loop", "unrolled"):
        build.build(s, tmp_path / style, formats=["py", "md"], style=style, command="test")
        module_spec = importlib.util.spec_from_file_location(f"_one_{style}", tmp_path / style / "stacked_mse.py")
        mod = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(mod)
        xs = np.ones((steps, 2, 3))
        loss, grads = mod.loss_and_grads(mod.init_params(scale=0.5), xs, np.zeros((steps, 2, hidden[-1])))
        assert np.isfinite(loss) and grads["xs"].shape == xs.shape


def test_ten_thousand_steps(capsys: pytest.CaptureFixture) -> None:
    # the handout and the unrolled module write every step: a clear error beyond the cap ...
    assert main(["build", "--preset", "elman_softmax", "--steps", "10000", "--out", "unused"]) == 2
    assert "--steps: must be an integer from 1 to 200" in capsys.readouterr().err
    # ... while the loop module runs any T
    mod = load("elman_softmax")
    xs = np.random.default_rng(3).normal(size=(10_000, 1, 3))
    loss, grads = mod.loss_and_grads(mod.init_params(), xs, np.zeros((10_000, 1), dtype=int))
    assert np.isfinite(loss) and grads["xs"].shape == xs.shape
