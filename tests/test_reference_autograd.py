"""Checks of the autograd reference itself, so that it can be trusted as an oracle.

Why: tests/test_generated_numeric.py compares generated modules against
tests/reference_autograd.py to 1e-10; a mistake in the reference would either hide
a generator bug or fail correct code.  Here the reference is checked against
central finite differences of its own plain forward math (every branch of
CONVENTIONS.md without truncation), against hand-derived closed forms for
truncation, and for clipping and the upstream-gradient ``backward``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_autograd import (  # noqa: E402
    reference_backward,
    reference_forward,
    reference_loss,
    reference_loss_and_grads,
)

B = 2


def make_spec(
    *,
    input_size: int = 3,
    hidden_sizes: tuple[int, ...] = (4,),
    output_size: int = 2,
    activation: str = "tanh",
    output_activation: str = "identity",
    bias: bool = True,
    kind: str = "mse",
    at: str = "every_step",
    reduction: str = "sum",
    steps: int = 3,
    truncate: int = 0,
    clip: float = 0.0,
    layout: str = "column",
) -> dict[str, Any]:
    """A SPEC dict with exactly the keys CONVENTIONS.md lists."""
    return {
        "name": "t",
        "title": "t",
        "model": {
            "cell": "elman",
            "input_size": input_size,
            "hidden_sizes": list(hidden_sizes),
            "output_size": output_size,
            "activation": activation,
            "output_activation": output_activation,
            "bias": bias,
        },
        "loss": {"kind": kind, "at": at, "reduction": reduction},
        "bptt": {"steps": steps, "truncate": truncate, "clip": clip},
        "notation": {"preset": "doc000", "layout": layout, "names": {}},
    }


def make_params_meta(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """PARAMS in CONVENTIONS.md order and shapes; names are arbitrary (W1, U1, b1, V, c)."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    meta: dict[str, dict[str, Any]] = {}
    prev = m["input_size"]
    for l, H in enumerate(m["hidden_sizes"], start=1):
        meta[f"W{l}"] = {"role": "input_weight", "layer": l, "shape": (prev, H) if row else (H, prev)}
        meta[f"U{l}"] = {"role": "recurrent_weight", "layer": l, "shape": (H, H)}
        if m["bias"]:
            meta[f"b{l}"] = {"role": "bias", "layer": l, "shape": (H,)}
        prev = H
    L = len(m["hidden_sizes"])
    O = m["output_size"]
    if O > 0:
        meta["V"] = {"role": "output_weight", "layer": L + 1, "shape": (prev, O) if row else (O, prev)}
        if m["bias"]:
            meta["c"] = {"role": "output_bias", "layer": L + 1, "shape": (O,)}
    return meta


def make_problem(spec: dict[str, Any], seed: int = 0) -> tuple:
    """Random params (nonzero biases), xs, h0 and targets drawn per loss kind and `at`."""
    rng = np.random.default_rng(seed)
    meta = make_params_meta(spec)
    params = {n: 0.5 * rng.standard_normal(v["shape"]) for n, v in meta.items()}
    m = spec["model"]
    T = spec["bptt"]["steps"]
    xs = rng.standard_normal((T, B, m["input_size"]))
    h0 = [0.5 * rng.standard_normal((B, H)) for H in m["hidden_sizes"]]
    out = m["output_size"] or m["hidden_sizes"][-1]
    lead = (T, B) if spec["loss"]["at"] == "every_step" else (B,)
    kind = spec["loss"]["kind"]
    if kind == "cross_entropy":
        targets = rng.integers(0, out, size=lead)
    elif kind == "bce":
        targets = rng.uniform(0.0, 1.0, size=lead + (out,))
    else:
        targets = rng.standard_normal(lead + (out,))
    return meta, params, xs, h0, targets


def central_fd(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of f() with respect to every entry of x (mutated in place)."""
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


def assert_fd_close(fd: np.ndarray, g: np.ndarray, scale: float, what: str) -> None:
    """Relative 1e-6 with an absolute floor set by the rounding error of the difference."""
    tol = 1e-6 * np.maximum(np.abs(fd), np.abs(g)) + 1e-8 * max(1.0, abs(scale))
    bad = np.abs(fd - g) > tol
    assert not bad.any(), f"{what}: fd {fd[bad]} vs grad {g[bad]}"


# Hand-built specs covering every branch (no truncation): layouts, stacking, every
# activation and output activation, output_size 0, bias on/off, every loss kind,
# every_step/last_step, sum/mean.
FD_SPECS = {
    "row_tanh_softmax_ce_every_sum": make_spec(
        layout="row", activation="tanh", output_activation="softmax", output_size=3, kind="cross_entropy"
    ),
    "col_stack_relu_identity_mse_last_mean": make_spec(
        hidden_sizes=(3, 2), activation="relu", kind="mse", at="last_step", reduction="mean", steps=4
    ),
    "col_sigmoid_sigmoid_bce_every_mean_nobias": make_spec(
        activation="sigmoid", output_activation="sigmoid", kind="bce", reduction="mean", bias=False
    ),
    "row_identity_noout_none_last_sum": make_spec(
        layout="row", activation="identity", output_size=0, kind="none", at="last_step"
    ),
    "row_stack3_tanh_identity_bce_last_sum": make_spec(
        layout="row", hidden_sizes=(2, 3, 2), output_activation="identity", kind="bce", at="last_step"
    ),
    "col_relu_identity_ce_every_mean": make_spec(
        activation="relu", output_activation="identity", output_size=3, kind="cross_entropy", reduction="mean"
    ),
    "col_tanh_noout_mse_every_sum_nobias": make_spec(output_size=0, kind="mse", bias=False),
    "row_stack_sigmoid_softmax_mse_every_sum": make_spec(
        layout="row", hidden_sizes=(3, 2), activation="sigmoid", output_activation="softmax", kind="mse"
    ),
    "col_tanh_softmax_none_every_mean": make_spec(output_activation="softmax", kind="none", reduction="mean"),
    "col_noout_ce_last_sum": make_spec(output_size=0, kind="cross_entropy", at="last_step"),
    "row_noout_sigmoid_bce_every_sum": make_spec(
        layout="row", output_size=0, activation="sigmoid", kind="bce"
    ),
}


@pytest.mark.parametrize("name", list(FD_SPECS))
def test_reference_loss_grads_match_finite_differences(name: str) -> None:
    """Every gradient of the reference (params, xs, h0) equals FD of its forward math."""
    spec = FD_SPECS[name]
    meta, params, xs, h0, targets = make_problem(spec)
    loss, grads = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    f = lambda: reference_loss(spec, meta, params, xs, targets, h0)  # noqa: E731
    assert loss == pytest.approx(f(), rel=1e-14, abs=1e-14)
    assert set(grads) == set(meta) | {"xs", "h0"}
    for n in meta:
        assert grads[n].shape == params[n].shape
        assert_fd_close(central_fd(f, params[n]), grads[n], loss, n)
    assert_fd_close(central_fd(f, xs), grads["xs"], loss, "xs")
    for l, h in enumerate(h0):
        assert_fd_close(central_fd(f, h), grads["h0"][l], loss, f"h0[{l}]")


@pytest.mark.parametrize("layout", ["row", "column"])
def test_reference_backward_matches_finite_differences(layout: str) -> None:
    """backward = gradient of sum(dhs * hs_top); output-layer params get zeros."""
    spec = make_spec(layout=layout, hidden_sizes=(3, 2), activation="tanh", steps=3)
    meta, params, xs, h0, _ = make_problem(spec)
    dhs = np.random.default_rng(5).standard_normal((3, B, 2))
    grads = reference_backward(spec, meta, params, xs, h0, dhs)

    def f() -> float:
        hs, _ = reference_forward(spec, meta, params, xs, h0)
        return float(np.sum(dhs * hs[-1]))

    for n, v in meta.items():
        if v["role"] in ("output_weight", "output_bias"):
            assert np.all(grads[n] == 0) and grads[n].shape == params[n].shape
        else:
            assert_fd_close(central_fd(f, params[n]), grads[n], f(), n)
    assert_fd_close(central_fd(f, xs), grads["xs"], f(), "xs")
    for l, h in enumerate(h0):
        assert_fd_close(central_fd(f, h), grads["h0"][l], f(), f"h0[{l}]")


def test_reference_forward_shapes_and_defaults() -> None:
    """Forward returns per-layer states and predictions; h0=None means zeros."""
    spec = make_spec(hidden_sizes=(3, 2), output_size=4, output_activation="softmax", kind="cross_entropy")
    meta, params, xs, h0, targets = make_problem(spec)
    hs, ys = reference_forward(spec, meta, params, xs, h0)
    assert [h.shape for h in hs] == [(3, B, 3), (3, B, 2)]
    assert ys.shape == (3, B, 4)
    np.testing.assert_allclose(ys.sum(axis=-1), 1.0, rtol=0, atol=1e-14)
    zeros = [np.zeros_like(h) for h in h0]
    a = reference_loss_and_grads(spec, meta, params, xs, targets, None)
    b = reference_loss_and_grads(spec, meta, params, xs, targets, zeros)
    assert a[0] == b[0]
    for n in meta:
        np.testing.assert_array_equal(a[1][n], b[1][n])


def test_reference_clip_applies_to_params_only() -> None:
    """Clip = elementwise clip of the reduced parameter gradients; xs and h0 untouched."""
    base = make_spec(hidden_sizes=(3,), kind="mse", steps=4)
    clipped = make_spec(hidden_sizes=(3,), kind="mse", steps=4, clip=0.3)
    meta, params, xs, h0, targets = make_problem(base)
    l0, g0 = reference_loss_and_grads(base, meta, params, xs, targets, h0)
    l1, g1 = reference_loss_and_grads(clipped, meta, params, xs, targets, h0)
    assert l0 == l1
    assert any(np.abs(g0[n]).max() > 0.3 for n in meta), "test needs some clipping to happen"
    for n in meta:
        np.testing.assert_array_equal(g1[n], np.clip(g0[n], -0.3, 0.3))
    np.testing.assert_array_equal(g1["xs"], g0["xs"])
    for a, b in zip(g1["h0"], g0["h0"]):
        np.testing.assert_array_equal(a, b)
    dhs = np.random.default_rng(3).standard_normal((4, B, 3)) * 5
    b0 = reference_backward(base, meta, params, xs, h0, dhs)
    b1 = reference_backward(clipped, meta, params, xs, h0, dhs)
    for n in meta:
        np.testing.assert_array_equal(b1[n], np.clip(b0[n], -0.3, 0.3))
    np.testing.assert_array_equal(b1["xs"], b0["xs"])


def _scalar_spec(T: int, k: int, activation: str, at: str = "every_step") -> dict[str, Any]:
    """Scalar Elman RNN, no output layer, mse: h_t = f(w x_t + u h_{t-1} + b)."""
    return make_spec(
        input_size=1, hidden_sizes=(1,), output_size=0, activation=activation, kind="mse",
        at=at, steps=T, truncate=k, layout="row",
    )


def _scalar_params(w: float, u: float, b: float) -> dict[str, np.ndarray]:
    return {"W1": np.array([[w]]), "U1": np.array([[u]]), "b1": np.array([b])}


def test_truncation_k1_T2_closed_form() -> None:
    """T=2, k=1, tanh, batch 1: each E_s reaches only the uses at step s.

    h1 = tanh(w x1 + u h0 + b), h2 = tanh(w x2 + u h1 + b), E = 1/2 (h1-y1)^2 + 1/2 (h2-y2)^2,
    d_s = (h_s - y_s)(1 - h_s^2).  Truncated: dw = d1 x1 + d2 x2, du = d1 h0 + d2 h1,
    db = d1 + d2, dx1 = d1 w, dx2 = d2 w, dh0 = d1 u (E_2 does not reach h0).
    """
    w, u, b, h0, x1, x2, y1, y2 = 0.7, -1.3, 0.2, 0.4, 0.9, -0.6, 0.1, -0.5
    h1 = np.tanh(w * x1 + u * h0 + b)
    h2 = np.tanh(w * x2 + u * h1 + b)
    d1 = (h1 - y1) * (1 - h1**2)
    d2 = (h2 - y2) * (1 - h2**2)
    spec = _scalar_spec(2, 1, "tanh")
    meta = make_params_meta(spec)
    xs = np.array([x1, x2]).reshape(2, 1, 1)
    ys = np.array([y1, y2]).reshape(2, 1, 1)
    loss, g = reference_loss_and_grads(spec, meta, _scalar_params(w, u, b), xs, ys, [np.array([[h0]])])
    assert loss == pytest.approx(0.5 * (h1 - y1) ** 2 + 0.5 * (h2 - y2) ** 2, rel=1e-15)
    assert g["W1"][0, 0] == pytest.approx(d1 * x1 + d2 * x2, rel=1e-14)
    assert g["U1"][0, 0] == pytest.approx(d1 * h0 + d2 * h1, rel=1e-14)
    assert g["b1"][0] == pytest.approx(d1 + d2, rel=1e-14)
    np.testing.assert_allclose(g["xs"].ravel(), [d1 * w, d2 * w], rtol=1e-14)
    assert g["h0"][0][0, 0] == pytest.approx(d1 * u, rel=1e-14)
    # Full BPTT (k=0) adds the cross-step path d2 * u * (1 - h1^2) * (...).
    _, gf = reference_loss_and_grads(_scalar_spec(2, 0, "tanh"), meta, _scalar_params(w, u, b), xs, ys,
                                     [np.array([[h0]])])
    c = d2 * u * (1 - h1**2)
    assert gf["W1"][0, 0] == pytest.approx(d1 * x1 + d2 * x2 + c * x1, rel=1e-14)
    assert gf["h0"][0][0, 0] == pytest.approx(d1 * u + c * u, rel=1e-14)


def test_truncation_k2_T3_linear_closed_form() -> None:
    """T=3, k=2, identity activation, last_step vs every_step; E_3 stops before step 1.

    e_s = h_s - y_s.  every_step: dw = e1 x1 + e2 (x2 + u x1) + e3 (x3 + u x2),
    dh0 = e1 u + e2 u^2 (E_3 does not reach h0: 3 - 1 >= 2).  last_step: dw = e3 (x3 + u x2).
    """
    w, u, b, h0 = 0.8, 0.6, -0.1, 0.3
    x = [0.5, -1.1, 0.7]
    y = [0.2, 0.4, -0.3]
    h = [h0]
    for t in range(3):
        h.append(w * x[t] + u * h[-1] + b)
    e = [h[t + 1] - y[t] for t in range(3)]
    xs = np.array(x).reshape(3, 1, 1)
    meta = make_params_meta(_scalar_spec(3, 2, "identity"))
    p = _scalar_params(w, u, b)
    _, g = reference_loss_and_grads(_scalar_spec(3, 2, "identity"), meta, p, xs,
                                    np.array(y).reshape(3, 1, 1), [np.array([[h0]])])
    assert g["W1"][0, 0] == pytest.approx(e[0] * x[0] + e[1] * (x[1] + u * x[0]) + e[2] * (x[2] + u * x[1]))
    assert g["U1"][0, 0] == pytest.approx(e[0] * h[0] + e[1] * (h[1] + u * h[0]) + e[2] * (h[2] + u * h[1]))
    assert g["b1"][0] == pytest.approx(e[0] + e[1] * (1 + u) + e[2] * (1 + u))
    np.testing.assert_allclose(
        g["xs"].ravel(), [e[0] * w + e[1] * u * w, e[1] * w + e[2] * u * w, e[2] * w], rtol=1e-14
    )
    assert g["h0"][0][0, 0] == pytest.approx(e[0] * u + e[1] * u**2)
    _, gl = reference_loss_and_grads(_scalar_spec(3, 2, "identity", at="last_step"), meta, p, xs,
                                     np.array([[y[2]]]), [np.array([[h0]])])
    assert gl["W1"][0, 0] == pytest.approx(e[2] * (x[2] + u * x[1]))
    np.testing.assert_allclose(gl["xs"].ravel(), [0.0, e[2] * u * w, e[2] * w], rtol=1e-14, atol=0)
    assert gl["h0"][0][0, 0] == 0.0
    # backward: dhs[t] acts as a loss term at step t, truncated the same way.
    dhs = np.array([1.5, -0.5, 2.0]).reshape(3, 1, 1)
    gb = reference_backward(_scalar_spec(3, 2, "identity"), meta, p, xs, [np.array([[h0]])], dhs)
    d = dhs.ravel()
    assert gb["W1"][0, 0] == pytest.approx(d[0] * x[0] + d[1] * (x[1] + u * x[0]) + d[2] * (x[2] + u * x[1]))
    assert gb["h0"][0][0, 0] == pytest.approx(d[0] * u + d[1] * u**2)


@pytest.mark.parametrize("layout", ["row", "column"])
def test_truncation_at_least_T_equals_full_stacked(layout: str) -> None:
    """k >= T truncates nothing: the per-term windowed path equals the single full pass."""
    full = make_spec(layout=layout, hidden_sizes=(3, 2), steps=4, kind="cross_entropy", output_size=3)
    trunc = make_spec(layout=layout, hidden_sizes=(3, 2), steps=4, kind="cross_entropy", output_size=3,
                      truncate=4)
    meta, params, xs, h0, targets = make_problem(full)
    _, a = reference_loss_and_grads(full, meta, params, xs, targets, h0)
    _, b = reference_loss_and_grads(trunc, meta, params, xs, targets, h0)
    for n in list(meta) + ["xs"]:
        np.testing.assert_allclose(b[n], a[n], rtol=1e-12, atol=1e-14)
    for x, y in zip(b["h0"], a["h0"]):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_truncation_stacked_k1_only_same_step() -> None:
    """Stacked, k=1: E_s reaches xs[s] (through both layers, same step) but not xs[s-1].

    With last_step, only xs[T-1] and params get gradient; xs[:T-1] and h0 get zeros,
    while the second layer's h0 would need step 1 - so zero too (T > 1).
    """
    spec = make_spec(hidden_sizes=(3, 2), steps=3, at="last_step", truncate=1)
    meta, params, xs, h0, targets = make_problem(spec)
    _, g = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    assert np.all(g["xs"][:2] == 0) and np.any(g["xs"][2] != 0)
    assert all(np.all(h == 0) for h in g["h0"])


def _naive_loss(spec: dict[str, Any], params: dict[str, np.ndarray], xs: np.ndarray,
                targets: np.ndarray, h0: list[np.ndarray]) -> float:
    """CONVENTIONS.md forward math written a second way: per row, matrix-vector, textbook formulas."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    f = {"tanh": np.tanh, "relu": lambda a: np.where(a > 0, a, 0.0),
         "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "identity": lambda a: a}[m["activation"]]
    mv = (lambda W, v: W.T @ v) if row else (lambda W, v: W @ v)
    L, T = len(m["hidden_sizes"]), xs.shape[0]
    kind, at = spec["loss"]["kind"], spec["loss"]["at"]
    total = 0.0
    for r in range(xs.shape[1]):
        h = [h0[l][r].copy() for l in range(L)]
        for t in range(T):
            x = xs[t, r]
            for l in range(L):
                a = mv(params[f"W{l + 1}"], x) + mv(params[f"U{l + 1}"], h[l])
                if m["bias"]:
                    a = a + params[f"b{l + 1}"]
                h[l] = f(a)
                x = h[l]
            if at == "last_step" and t < T - 1:
                continue
            y = targets[t, r] if at == "every_step" else targets[r]
            z = h[-1]
            if m["output_size"]:
                z = mv(params["V"], h[-1]) + (params["c"] if m["bias"] else 0)
            g = {"identity": lambda v: v, "softmax": lambda v: np.exp(v) / np.exp(v).sum(),
                 "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[m["output_activation"] if m["output_size"] else "identity"]
            if kind == "mse":
                total += 0.5 * np.sum((g(z) - y) ** 2)
            elif kind == "cross_entropy":
                total += -np.log(np.exp(z[y]) / np.exp(z).sum())
            elif kind == "bce":
                s = 1 / (1 + np.exp(-z))
                total += -np.sum(y * np.log(s) + (1 - y) * np.log(1 - s))
            else:
                total += np.sum(y * g(z))
    if spec["loss"]["reduction"] == "mean":
        total /= xs.shape[1] * (T if at == "every_step" else 1)
    return float(total)


@pytest.mark.parametrize("name", list(FD_SPECS))
def test_reference_loss_matches_naive_loop(name: str) -> None:
    """The reference's forward math (what FD checks are relative to) matches a second, naive version."""
    spec = FD_SPECS[name]
    meta, params, xs, h0, targets = make_problem(spec, seed=7)
    expected = _naive_loss(spec, params, xs, targets, h0)
    assert reference_loss(spec, meta, params, xs, targets, h0) == pytest.approx(expected, rel=1e-12, abs=1e-12)
