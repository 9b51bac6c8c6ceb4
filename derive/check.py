"""The proofs behind `derive check`: forms (a), (b) and (c) agree.

(a) the delta recursion and (b) the path sums are matrix expressions evaluated here on
numbers (NumPy) or on explicit symbolic matrices (SymPy); (c) is `sympy.diff` of the
scalar-expanded unrolled loss. With truncation, (c) differentiates each loss term with
the parameters of the steps outside its window frozen (copies that are not differentiated).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from derive import bptt
from derive.evaluate import NumPyBackend, SymPyBackend, evaluate
from derive.spec import Spec
from derive.unroll import Unrolled

#: Sizes small enough to scalar-expand: differences then simplify to 0 exactly.
EXACT_HIDDEN = 2


@dataclass(frozen=True)
class Row:
    form: str
    max_abs_diff: float
    ok: bool


def _shape(symbol: sp.MatrixSymbol, sizes: dict[sp.Symbol, int]) -> tuple[int, int]:
    return tuple(int(sp.sympify(d).xreplace(sizes)) for d in symbol.shape)


def data_leaves(unrolled: Unrolled) -> list[sp.MatrixSymbol]:
    """Every symbol the forward pass and the seeds read: params, x_t, h_0, targets."""
    sym, spec = unrolled.sym, unrolled.spec
    leaves = list(sym.params())
    leaves += [sym("input", None, tm) for tm in unrolled.times]
    leaves += [sym("hidden", l, sp.Integer(0)) for l in range(1, spec.model.layers + 1)]
    role = "upstream" if spec.loss.kind == "none" else "target"
    leaves += [sym(role, None, tm) for tm in unrolled.loss_steps]
    return leaves


def numeric_env(unrolled: Unrolled, rng: np.random.Generator, zero_h0: bool = False) -> dict:
    """Random values for every leaf; one-hot targets for cross-entropy, (0,1) for bce."""
    sizes = unrolled.sym.sizes()
    env: dict[sp.MatrixSymbol, Any] = {}
    for leaf in data_leaves(unrolled):
        q = unrolled.sym.info[leaf]
        shape = _shape(leaf, sizes)
        value = rng.normal(scale=0.8, size=shape)
        if q.role == "hidden" and zero_h0:
            value = np.zeros(shape)
        if q.role == "target":
            kind = unrolled.spec.loss.kind
            if kind == "cross_entropy":
                value = np.zeros(shape)
                value.flat[rng.integers(value.size)] = 1.0
            elif kind == "bce":
                value = rng.uniform(0.05, 0.95, size=shape)
        env[leaf] = value
    return env


def symbolic_env(unrolled: Unrolled) -> dict:
    """Explicit matrices of scalar symbols for every leaf; targets one-hot for CE."""
    sizes = unrolled.sym.sizes()
    env: dict[sp.MatrixSymbol, Any] = {}
    for i, leaf in enumerate(data_leaves(unrolled)):
        q = unrolled.sym.info[leaf]
        rows, cols = _shape(leaf, sizes)
        if q.role == "target" and unrolled.spec.loss.kind == "cross_entropy":
            value = sp.zeros(rows, cols)
            value[int(q.time) % value.rows if cols == 1 else 0, int(q.time) % value.cols if rows == 1 else 0] = 1
        else:
            value = sp.Matrix(rows, cols, lambda r, c: sp.Symbol(f"v{i}_{r}_{c}", real=True))
        env[leaf] = value
    return env


def run_forward(unrolled: Unrolled, env: dict, backend: Any) -> dict:
    env = dict(env)
    sizes = unrolled.sym.sizes()
    for a in unrolled.forward:
        env[a.lhs] = evaluate(a.rhs, env, backend, sizes)
    return env


def form_a(d: bptt.Derivation, env: dict, backend: Any) -> dict:
    """The delta recursion: evaluate every delta in order, then the totals."""
    env = run_forward(d.unrolled, env, backend)
    sizes = d.sym.sizes()
    for a in d.deltas:
        env[a.lhs] = evaluate(a.rhs, env, backend, sizes)
    return {p: evaluate(e, env, backend, sizes) for p, e in d.totals.items()}


def form_b(d: bptt.Derivation, env: dict, backend: Any) -> dict:
    env = run_forward(d.unrolled, env, backend)
    sums = bptt.path_sums(d.spec, d.unrolled)
    return {p: evaluate(e, env, backend, d.sym.sizes()) for p, e in sums.items()}


def windowed_loss(d: bptt.Derivation, env: dict, backend: Any, live: dict, frozen: dict) -> Any:
    """L, with the parameters of steps outside each loss term's window taken from `frozen`.

    Without truncation every step is inside, and this is the plain unrolled loss.
    """
    unrolled, spec, sym = d.unrolled, d.spec, d.sym
    sizes = sym.sizes()
    total = 0
    for term in unrolled.losses:
        s = int(term.time)
        kept = bptt.kept_steps(spec, s)   # window or chunk: the steps E_s reaches
        values = dict(env)
        for a in unrolled.forward:
            inside = int(a.time) in kept or int(a.time) > s
            values.update(live if inside else frozen)
            values[a.lhs] = evaluate(a.rhs, values, backend, sizes)
        values.update(live)
        total += evaluate(term.rhs, values, backend, sizes)[0, 0]
    return bptt.loss_scale(spec) * total


def form_c(d: bptt.Derivation, env: dict) -> dict:
    """sympy.diff of the scalar-expanded loss; `env` may hold numbers or symbols."""
    sizes = d.sym.sizes()
    params = d.sym.params()
    fresh = lambda tag: {p: sp.Matrix(*_shape(p, sizes), lambda r, c, i=i: sp.Symbol(f"{tag}{i}_{r}_{c}", real=True))
                         for i, p in enumerate(params)}
    live, frozen = fresh("p"), fresh("q")
    loss = windowed_loss(d, {k: sp.Matrix(v) for k, v in env.items()}, SymPyBackend(), live, frozen)
    back = {}
    for p in params:
        back.update(dict(zip(live[p], sp.Matrix(env[p]))))
        back.update(dict(zip(frozen[p], sp.Matrix(env[p]))))
    return {p: live[p].applyfunc(lambda x: sp.diff(loss, x).xreplace(back)) for p in params}


def finite_differences(d: bptt.Derivation, env: dict, eps: float = 1e-6) -> dict:
    """Central differences of the (windowed) loss in float64, entry by entry."""
    backend = NumPyBackend()
    params = d.sym.params()
    frozen = {p: env[p] for p in params}
    out = {}
    for p in params:
        grad = np.zeros_like(env[p])
        for idx in np.ndindex(*grad.shape):
            losses = []
            for sign in (1, -1):
                value = env[p].copy()
                value[idx] += sign * eps
                losses.append(windowed_loss(d, env, backend, {**frozen, p: value}, frozen))
            grad[idx] = (losses[0] - losses[1]) / (2 * eps)
        out[p] = grad
    return out


def atomize(expr: sp.Expr, table: dict) -> sp.Expr:
    """Replace each function application by a symbol, bottom up; exp(a + 2b) -> e_a e_b^2.

    If the result is identically 0 as a rational function, so is `expr`: equal
    applications get equal symbols. This decides the proofs in seconds where
    `simplify` takes minutes.
    """
    if expr.is_Atom:
        return expr
    args = [atomize(a, table) for a in expr.args]

    def atom(key: sp.Expr) -> sp.Symbol:
        return table.setdefault(key, sp.Dummy(f"f{len(table)}"))

    if isinstance(expr, sp.exp):
        out = sp.Integer(1)
        for term in sp.Add.make_args(sp.expand(args[0])):
            coeff, rest = term.as_coeff_Mul()
            if coeff.is_Integer:
                out *= atom(sp.exp(rest, evaluate=False)) ** coeff
            else:
                out *= atom(sp.exp(term, evaluate=False))
        return out
    if isinstance(expr, sp.Function):
        return atom(expr.func(*args))
    return expr.func(*args)


def is_zero(expr: sp.Expr, table: dict) -> bool:
    return sp.cancel(sp.together(atomize(expr, table))) == 0


def _clip(values: dict, c: float, norm: float = 0.0) -> dict:
    """Elementwise clipping to [-c, c], or torch's clip_grad_norm_ (its 1e-6 included)."""
    if norm:
        total = np.sqrt(sum(float(np.sum(v * v)) for v in values.values()))
        return {p: v * min(1.0, norm / (total + 1e-6)) for p, v in values.items()}
    return {p: np.clip(v, -c, c) for p, v in values.items()} if c else values


def _max_diff(a: dict, b: dict) -> tuple[float, float]:
    diff = max(float(np.max(np.abs(a[p] - b[p]))) for p in a)
    scale = max(1.0, max(float(np.max(np.abs(a[p]))) for p in a))
    return diff, scale


def numeric(spec: Spec, seed: int = 0, exact_diff: bool = False) -> list[Row]:
    """(a) against (b), and against central differences (or, if asked, sympy.diff), at the
    spec's own sizes on random numbers, clipped as the spec says."""
    d = bptt.derive(spec)
    env = numeric_env(d.unrolled, np.random.default_rng(seed))
    backend = NumPyBackend()
    a = form_a(d, env, backend)
    b = form_b(d, env, backend)
    clip = spec.bptt.clip, spec.bptt.clip_norm
    rows = []
    diff, scale = _max_diff(_clip(a, *clip), _clip(b, *clip))
    rows.append(Row("(a) delta recursion vs (b) path sums", diff, diff <= 1e-12 * scale))
    if exact_diff:
        c = {p: np.array(g.evalf(), dtype=float) for p, g in form_c(d, env).items()}
        diff, scale = _max_diff(_clip(a, *clip), _clip(c, *clip))
        rows.append(Row("(a) delta recursion vs (c) sympy.diff", diff, diff <= 1e-12 * scale))
    else:
        c = finite_differences(d, env)
        diff, scale = _max_diff(_clip(a, *clip), _clip(c, *clip))
        rows.append(Row("(a) delta recursion vs central differences", diff, diff <= 1e-6 * scale))
    return rows


def small(spec: Spec) -> Spec:
    """The spec's structure at scalar-expandable sizes (hidden 2, input <= 2, output <= 2)."""
    m = spec.model
    model = dataclasses.replace(
        m, input_size=min(m.input_size, 2), hidden_sizes=tuple(min(h, EXACT_HIDDEN) for h in m.hidden_sizes),
        output_size=min(m.output_size, 2))
    return dataclasses.replace(spec, model=model)


def exact(spec: Spec) -> list[Row]:
    """(a) - (c) and (b) - (c) are identically 0 with symbolic entries, at small sizes."""
    d = bptt.derive(small(spec))
    env = symbolic_env(d.unrolled)
    backend = SymPyBackend()
    c = form_c(d, env)
    rows = []
    table: dict = {}
    for name, form in (("(a) delta recursion", form_a), ("(b) path sums", form_b)):
        value = form(d, env, backend)
        residual = sum(not is_zero(x, table) for p in value for x in value[p] - c[p])
        rows.append(Row(f"{name} - (c) sympy.diff, exact at hidden {EXACT_HIDDEN}", float(residual), residual == 0))
    return rows
