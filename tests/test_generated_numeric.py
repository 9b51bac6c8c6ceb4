"""Numeric checks of every generated module (``generated/*/*.py``) against independent oracles.

Why: the generated modules hand-code BPTT.  They are compared in float64 with
(1) the autograd reference in tests/reference_autograd.py (to 1e-10, including
truncation, clipping and the upstream-gradient ``backward``) and (2) central finite
differences of the module's own loss.  Modules are found at collection time; set
DERIVE_GENERATED_DIR to check another directory.  With none present, the tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference_autograd import reference_backward, reference_forward, reference_loss_and_grads  # noqa: E402

GENERATED = Path(os.environ.get("DERIVE_GENERATED_DIR", HERE.parent / "generated"))
MODULE_PATHS = sorted(p for p in GENERATED.glob("*/*.py") if not p.name.startswith("_"))
B = 2
TOL = dict(rtol=1e-10, atol=1e-10)


def _unrolled_modules() -> list[Path]:
    """Every Elman preset in --style unrolled (gated cells have the loop style only), built
    into a scratch folder (not committed)."""
    from derive import build, spec

    out = Path(tempfile.mkdtemp(prefix="derive-unrolled-"))
    for name in spec.preset_names():
        if spec.preset(name).model.cell != "elman":
            continue
        build.build(spec.preset(name), out / name, formats=["py"], style="unrolled", command="pytest")
    return sorted(out.glob("*/*.py"))


if "DERIVE_GENERATED_DIR" not in os.environ:
    MODULE_PATHS += _unrolled_modules()

if MODULE_PATHS:
    MODULE_PARAMS = [pytest.param(p, id=f"{'unrolled:' if p.is_relative_to(tempfile.gettempdir()) else ''}"
                                         f"{p.parent.name}/{p.stem}") for p in MODULE_PATHS]
else:
    MODULE_PARAMS = [
        pytest.param(
            None,
            id="no-modules",
            marks=pytest.mark.skip(reason=f"no generated modules in {GENERATED}/*/*.py yet; run `derive build --all`"),
        )
    ]

_loaded: dict[Path, ModuleType] = {}


def load(path: Path) -> ModuleType:
    """Import a generated module from its file path (once per session)."""
    if path not in _loaded:
        spec = importlib.util.spec_from_file_location(f"_derive_gen_{path.parent.name}_{path.stem}", path)
        assert spec is not None and spec.loader is not None, f"cannot import {path}"
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _loaded[path] = mod
    return _loaded[path]


def sizes(mod: ModuleType) -> tuple[int, int, list[int], int]:
    """(T, input_size, hidden_sizes, prediction width) from the module's SPEC."""
    m = mod.SPEC["model"]
    hidden = list(m["hidden_sizes"])
    return mod.SPEC["bptt"]["steps"], m["input_size"], hidden, (m["output_size"] or hidden[-1])


def problem(mod: ModuleType, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """float64 params, xs (T, B, in), h0 and targets drawn per loss kind and `at`.

    Params are init_params(seed=1, scale=0.5) with biases made nonzero, so bias terms
    are exercised and relu pre-activations are not exactly 0 (where FD is undefined).
    """
    rng = np.random.default_rng(seed)
    T, n_in, hidden, out = sizes(mod)
    params = {n: np.asarray(v, dtype=np.float64).copy() for n, v in mod.init_params(seed=1, scale=0.5).items()}
    assert list(params) == list(mod.PARAMS), "init_params must follow PARAMS order"
    for n, meta in mod.PARAMS.items():
        assert params[n].shape == tuple(meta["shape"]), n
        if meta["role"] in ("bias", "output_bias"):
            params[n] += 0.1 * rng.standard_normal(params[n].shape)
    xs = rng.standard_normal((T, B, n_in))
    h0 = [0.5 * rng.standard_normal((B, H)) for H in hidden]
    if mod.SPEC["model"].get("cell") == "lstm":   # the LSTM's state is (h, c) per layer
        h0 = [(h, 0.5 * rng.standard_normal(h.shape)) for h in h0]
    loss = mod.SPEC["loss"]
    lead = (T, B) if loss["at"] == "every_step" else (B,)
    if loss["kind"] == "cross_entropy":
        targets = rng.integers(0, out, size=lead)
    elif loss["kind"] == "bce":
        targets = rng.uniform(0.0, 1.0, size=lead + (out,))
    else:  # mse, none: arbitrary floats
        targets = rng.standard_normal(lead + (out,))
    return params, xs, h0, targets


def assert_grads_equal(got: dict[str, Any], want: dict[str, Any], names: list[str], h0: bool = True) -> None:
    """Every param gradient, xs and (optionally) each h0 entry equal to TOL."""
    for n in names + ["xs"]:
        assert n in got, f"grads lacks {n!r}"
        assert np.shape(got[n]) == np.shape(want[n]), n
        np.testing.assert_allclose(got[n], want[n], err_msg=n, **TOL)
    if h0:
        assert len(got["h0"]) == len(want["h0"]), "h0 grads: one per layer"
        for l, (a, b) in enumerate(zip(got["h0"], want["h0"])):
            if isinstance(b, tuple):   # LSTM: (dh, dc)
                assert isinstance(a, tuple) and len(a) == 2, f"h0[{l}]: (dh, dc)"
                a, b = np.concatenate(a, axis=-1), np.concatenate(b, axis=-1)
            np.testing.assert_allclose(a, b, err_msg=f"h0[{l}]", **TOL)


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_loss_and_grads_match_reference(path: Path) -> None:
    """loss_and_grads equals the autograd reference (truncation and clip included)."""
    mod = load(path)
    params, xs, h0, targets = problem(mod)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    ref_loss, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_equal(grads, ref, list(mod.PARAMS))


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_loss_and_grads_default_h0(path: Path) -> None:
    """h0=None means zero initial states: loss, param and xs gradients match the reference."""
    mod = load(path)
    params, xs, _, targets = problem(mod, seed=1)
    loss, grads = mod.loss_and_grads(params, xs, targets)
    ref_loss, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, None)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_equal(grads, ref, list(mod.PARAMS), h0=False)


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_backward_matches_reference(path: Path) -> None:
    """backward(dhs, cache) equals the reference gradient of sum(dhs * hs), output params zero."""
    mod = load(path)
    params, xs, h0, _ = problem(mod, seed=2)
    T, _, hidden, _ = sizes(mod)
    dhs = np.random.default_rng(3).standard_normal((T, B, hidden[-1]))
    _, cache = mod.forward(params, xs, h0)
    grads = mod.backward(dhs, cache)
    ref = reference_backward(mod.SPEC, mod.PARAMS, params, xs, h0, dhs)
    assert_grads_equal(grads, ref, list(mod.PARAMS))


def _central_fd(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of f() over every entry of x (perturbed in place, then restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_finite_differences(path: Path) -> None:
    """Central FD of the module's own loss agree with its gradients (params, xs, h0).

    Skipped with truncation (the truncated gradient is by design not the gradient of
    the loss) and with clipping (clipped entries are not derivatives); both are checked
    against the autograd reference instead.
    """
    mod = load(path)
    bptt = mod.SPEC["bptt"]
    if bptt["truncate"] > 0:
        pytest.skip("truncate > 0: the gradient is not the loss's derivative; checked against the reference")
    if bptt["clip"] > 0:
        pytest.skip("clip > 0: clipped entries are not derivatives; checked against the reference")
    params, xs, h0, targets = problem(mod, seed=4)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    f = lambda: float(mod.loss_and_grads(params, xs, targets, h0)[0])  # noqa: E731
    floor = 1e-8 * max(1.0, abs(float(loss)))  # rounding error of the difference quotient
    arrays = [(n, params[n], grads[n]) for n in mod.PARAMS] + [("xs", xs, grads["xs"])]
    arrays += [(f"h0[{l}]", h, grads["h0"][l]) for l, h in enumerate(h0) if not isinstance(h, tuple)]
    arrays += [(f"h0[{l}][{k}]", s[k], grads["h0"][l][k]) for l, s in enumerate(h0) if isinstance(s, tuple) for k in (0, 1)]
    for name, x, g in arrays:
        fd = _central_fd(f, x)
        g = np.asarray(g)
        bad = np.abs(fd - g) > 1e-6 * np.maximum(np.abs(fd), np.abs(g)) + floor
        assert not bad.any(), f"{name}: finite differences {fd[bad]} vs gradient {g[bad]}"


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_forward_states_and_h_final(path: Path) -> None:
    """forward returns top states (T, B, H_top); cache['h_final'] is every layer's last state."""
    mod = load(path)
    params, xs, h0, _ = problem(mod, seed=5)
    T, _, hidden, _ = sizes(mod)
    hs, cache = mod.forward(params, xs, h0)
    ref_hs, _ = reference_forward(mod.SPEC, mod.PARAMS, params, xs, h0)
    assert np.shape(hs) == (T, B, hidden[-1])
    np.testing.assert_allclose(hs, ref_hs[-1], **TOL)
    h_final = cache["h_final"]
    assert len(h_final) == len(hidden), "h_final: one entry per layer"
    for l, (got, want) in enumerate(zip(h_final, ref_hs)):
        got = got[0] if isinstance(got, tuple) else got   # LSTM: (h, c); c is checked in test_gated.py
        assert np.shape(got) == (B, hidden[l]), f"h_final[{l}]"
        np.testing.assert_allclose(got, want[-1], err_msg=f"h_final[{l}]", **TOL)


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_predict_shape_and_values(path: Path) -> None:
    """predict gives (T, B, out) (top hidden states without an output layer), as the reference."""
    mod = load(path)
    params, xs, h0, _ = problem(mod, seed=6)
    T, _, _, out = sizes(mod)
    ys = mod.predict(params, xs, h0)
    assert np.shape(ys) == (T, B, out)
    _, ref_ys = reference_forward(mod.SPEC, mod.PARAMS, params, xs, h0)
    np.testing.assert_allclose(ys, ref_ys, **TOL)


@pytest.mark.parametrize("path", MODULE_PARAMS)
def test_relu_derivative_at_zero(path: Path) -> None:
    """relu modules use f'(0) = 0: with xs, h0 and biases all zero every pre-activation is 0.

    Random data never hits the kink, so this is the only check of that convention.
    """
    mod = load(path)
    if mod.SPEC["model"]["activation"] != "relu":
        pytest.skip("activation is not relu")
    params, xs, _, targets = problem(mod, seed=8)
    params = {n: (np.zeros_like(v) if mod.PARAMS[n]["role"] in ("bias", "output_bias") else v)
              for n, v in params.items()}
    xs = np.zeros_like(xs)
    loss, grads = mod.loss_and_grads(params, xs, targets)
    ref_loss, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, None)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_equal(grads, ref, list(mod.PARAMS), h0=False)
