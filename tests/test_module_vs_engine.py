"""The generated modules (both styles) agree with the engine's own delta recursion, form (a),
evaluated on the same numbers: the code and the handout come from one derivation."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive import bptt, build, check, spec
from derive.evaluate import NumPyBackend

ROOT = Path(__file__).resolve().parents[1]


def module(s: spec.Spec, style: str) -> types.ModuleType:
    text = build.render_all(s, ["py"], style, "test")["py"]
    mod = types.ModuleType(f"_engine_{s.name}_{style}")
    exec(compile(text, mod.__name__, "exec"), mod.__dict__)
    return mod


CASES = [(name, style) for name in spec.preset_names() for style in ("loop", "unrolled")
         if style == "loop" or spec.preset(name).model.cell == "elman"]   # gated cells: loop style only


@pytest.mark.parametrize("name, style", CASES)
def test_module_gradients_equal_the_delta_recursion(name: str, style: str) -> None:
    s = spec.preset(name)
    mod = module(s, style)
    d = bptt.derive(s)
    sym, T = d.sym, s.bptt.steps
    rng = np.random.default_rng(7)
    params = mod.init_params(seed=3, scale=0.7)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # nonzero biases
    xs = rng.standard_normal((T, 1, s.model.input_size))
    h0 = [rng.standard_normal((1, n)) for n in s.model.hidden_sizes]
    c0 = [rng.standard_normal((1, n)) for n in s.model.hidden_sizes]   # an LSTM's cell state
    width = s.model.output_size or s.model.hidden_sizes[-1]
    steps = [T] if s.loss.at == "last_step" else list(range(1, T + 1))
    if s.loss.kind == "cross_entropy":
        labels = rng.integers(0, width, size=(len(steps), 1))
        values = np.eye(width)[labels[:, 0]]
    else:
        values = rng.uniform(0.1, 0.9, size=(len(steps), width))
        labels = values[:, None, :]
    targets = labels[-1] if s.loss.at == "last_step" else labels
    state = [(h, c) for h, c in zip(h0, c0)] if s.model.cell == "lstm" else h0
    loss, grads = mod.loss_and_grads(params, xs, targets, h0=state)

    # the same numbers, laid out as the engine's vectors (rows or columns, B = 1)
    def vector(a: np.ndarray, symbol: sp.MatrixSymbol) -> np.ndarray:
        shape = tuple(int(sp.sympify(e).xreplace(sym.sizes())) for e in symbol.shape)
        return np.asarray(a, dtype=float).reshape(shape)

    env = {}
    for p in sym.params():
        q = sym.info[p]
        env[p] = vector(params[sym.names.python(q.role, q.layer, q.gate)], p)
    for k in range(1, T + 1):
        x = sym("input", None, sp.Integer(k))
        env[x] = vector(xs[k - 1, 0], x)
    for layer, h in enumerate(h0, start=1):
        symbol = sym("hidden", layer, sp.Integer(0))
        env[symbol] = vector(h[0], symbol)
        if s.model.cell == "lstm":
            symbol = sym("cell", layer, sp.Integer(0))
            env[symbol] = vector(c0[layer - 1][0], symbol)
    for i, k in enumerate(steps):
        symbol = sym("target", None, sp.Integer(k))
        env[symbol] = vector(values[i], symbol)
    engine = check._clip(check.form_a(d, env, NumPyBackend()), 0.0, s.bptt.clip_norm)   # by norm, if set
    for p, value in engine.items():
        q = sym.info[p]
        name_ = sym.names.python(q.role, q.layer, q.gate)
        if s.bptt.clip:
            value = np.clip(value, -s.bptt.clip, s.bptt.clip)
        np.testing.assert_allclose(grads[name_].reshape(value.shape), value, rtol=1e-10, atol=1e-12,
                                   err_msg=f"{name} {style} {name_}")
