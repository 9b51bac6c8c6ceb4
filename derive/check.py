"""`derive check`: the proofs and the numeric checks that the gradients are right.

Exact rows (SymPy, at reduced sizes, with the hidden activation an uninterpreted f; for
LSTM and GRU cells the gates' σ and the tanh of the candidate and cell output are the
uninterpreted s and f):

* the activation table: for every row, the slope written through the output equals f'
  (relu on each side of 0; f'(0) is taken as 0);
* the generic step rule at a symbolic t: given delta_{t+1} and the upstream gradient, the
  delta_t, the parameter uses and the gradient sent down that the rule gives equal
  `sympy.diff` through one step; the output rule equals the derivative of E_t; for a gated
  cell every named adjoint (each gate's delta, delta^c, delta^h) given every named adjoint
  of step t+1, and the h_0 and c_0 rules (`_gated_layer_pairs`);
* at small T (at most `EXACT_STEPS`, `EXACT_STEPS_GATED` for gated cells, or
  `--exact-steps N`), the full unrolling: (a) the delta recursion and (b) the path sums
  equal (c) `sympy.diff` of the unrolled loss.

Numeric rows (float64, at the spec's sizes, or reduced above `NUMERIC_CAP`): (a) against
(b) and central differences; the generated NumPy module, rendered in memory, against
(a) and central differences, for `loss_and_grads` and for `backward` (and, for gated
cells, the state `h_final` it hands on). A gated cell's (b) reads Jacobians derived with
SymPy (`bptt.gated_path_sums`, at sizes at most `PATH_SUM_SIZE_GATED`), and its central
differences are taken at `FD_ENTRIES_GATED` entries of each array.

With truncation the loss term at step s is differentiated with the states entering its
window (s - k < truncate), or its chunk (truncate_style = "chunk"), held constant, which
is the definition of truncated BPTT.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import sympy as sp

from derive import bptt
from derive.evaluate import NumPyBackend, SymPyBackend, evaluate
from derive.rules import ACTIVATIONS, LOSSES, u, v
from derive.rules.activations import elementary
from derive.cells import CELLS
from derive.spec import Loss, Spec
from derive.unroll import Unrolled, step
from derive.unroll import t as T_SYM

#: Sizes of the exact proofs (scalar-expanded): every size above this is reduced to it.
EXACT_SIZE = 2
#: Sizes of the full unrolling (outputs keep 2 classes): the step rule at EXACT_SIZE already
#: covers every matrix product and transpose; the unrolling checks how the steps connect.
UNROLL_SIZE = 1
#: The full unrolling is proven exactly up to this many steps (the step rule covers any T).
EXACT_STEPS = 3
#: ... and for gated cells (an LSTM's step reads h_{t-1} four times: the expanded loss grows
#: about 5x per step); T = 2 already carries every adjoint of step t+1 into step t.
EXACT_STEPS_GATED = 2
#: Numeric checks run at the spec's sizes up to this; larger sizes are reduced to it.
NUMERIC_CAP = 8
#: The path sums have O(T^2) terms: the numeric (a)-vs-(b) row runs at most this many steps.
PATH_SUM_STEPS = 10
#: A gated cell's path sums read Jacobians derived with SymPy entry by entry: the numeric
#: (a)-vs-(b) row runs at sizes at most this (the structure is the spec's).
PATH_SUM_SIZE_GATED = 4
#: Numeric tolerances, relative to max(1, max |reference|).
RTOL_FORMS = 1e-10
RTOL_FD = 1e-6


@dataclass(frozen=True)
class Row:
    """One line of the report: what is compared with what, and how close they are."""

    form: str
    max_abs_diff: float
    ok: bool
    tolerance: float = 0.0     # 0 means exact: the difference simplifies to 0
    detail: str = ""


# --------------------------------------------------------------------------- the generic f

class f(sp.Function):
    """The hidden activation as an uninterpreted differentiable function (a gated cell's
    candidate and cell-output tanh)."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return df(self.args[0])


class df(sp.Function):
    """f', the derivative of the uninterpreted activation."""


class s(sp.Function):
    """A gated cell's gate function σ as an uninterpreted differentiable function."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return ds(self.args[0])


class ds(sp.Function):
    """s', the derivative of the uninterpreted gate function."""


class GenericBackend(SymPyBackend):
    """SymPy evaluation where the cell's elementwise functions are uninterpreted: the hidden
    activation (an Elman cell's f, a gated cell's tanh) is f, a gated cell's σ is s. A rule's
    slope written through the output v = f(a) is read as f'(a), one written through the
    argument (1 - tanh(c)^2) as f'(c). Elementwise functions outside the cell (the output
    sigmoid) are evaluated as written: `outer` is this backend with the cell's functions
    written out, for the output layer and the loss."""

    def __init__(self, spec: Spec, cell: bool = True):
        functions = {spec.model.activation: (f, df)}
        if CELLS[spec.model.cell].GATES:
            functions["sigmoid"] = (s, ds)
        self.layers = spec.model.layers
        acts = {name: ACTIVATIONS[name] for name in functions}
        self.forward = {sp.Lambda(u, act.value): functions[n] for n, act in acts.items()}
        self.through_output = {sp.Lambda(u, act.slope.xreplace({v: u})): functions[n] for n, act in acts.items()}
        self.through_argument = {sp.Lambda(u, act.slope.xreplace({v: act.value})): functions[n]
                                 for n, act in acts.items()}
        #: the hidden activation's slope through the output, read as f'
        self.slope = sp.Lambda(u, acts[spec.model.activation].slope.xreplace({v: u}))
        self.cell = cell
        self.outer = self
        if cell:
            self.outer = GenericBackend.__new__(GenericBackend)
            self.outer.__dict__.update(self.__dict__, cell=False)
            self.outer.outer = self.outer

    def apply(self, function: sp.Lambda, x: sp.Matrix) -> sp.Matrix:
        if function in self.through_output:
            F, dF = self.through_output[function]
            if all(isinstance(e, F) for e in x):
                return x.applyfunc(lambda e: dF(e.args[0]))
        if self.cell and function in self.through_argument:
            return x.applyfunc(self.through_argument[function][1])
        if self.cell and function in self.forward:
            return x.applyfunc(self.forward[function][0])
        return super().apply(function, x)


def generic_text(spec: Spec) -> str:
    """What the exact rows leave uninterpreted, as the rows say it."""
    return "sigma, tanh generic" if CELLS[spec.model.cell].GATES else "f generic"


def generic(spec: Spec) -> bool:
    """The proof uses an uninterpreted f unless the activation is the identity (slope 1)."""
    return ACTIVATIONS[spec.model.activation].slope != 1


def _backend(spec: Spec) -> SymPyBackend:
    return GenericBackend(spec) if generic(spec) else SymPyBackend()


def _scope(backend: Any, layer: int | None) -> Any:
    """The backend for an assignment of `layer`: outside the recurrent layers (the output
    layer and the loss) the cell's uninterpreted functions are written out."""
    if isinstance(backend, GenericBackend) and (layer is None or layer > backend.layers):
        return backend.outer
    return backend


# --------------------------------------------------------------------------- values

def _shape(symbol: sp.MatrixSymbol, sizes: dict[sp.Symbol, int]) -> tuple[int, int]:
    return tuple(int(sp.sympify(d).xreplace(sizes)) for d in symbol.shape)


def data_leaves(unrolled: Unrolled) -> list[sp.MatrixSymbol]:
    """Every symbol the forward pass and the seeds read: params, x_t, h_0, targets."""
    sym, spec = unrolled.sym, unrolled.spec
    leaves = list(sym.params())
    leaves += [sym("input", None, tm) for tm in unrolled.times]
    leaves += initial_states(sym)
    role = "upstream" if spec.loss.kind == "none" else "target"
    leaves += [sym(role, None, tm) for tm in unrolled.loss_steps]
    return leaves


def initial_states(sym) -> list[sp.MatrixSymbol]:
    """h_0 of every layer (and a gated cell's c_0), layer by layer."""
    return [sym(role, l, sp.Integer(0)) for l in range(1, sym.spec.model.layers + 1) for role in sym.cell.STATE]


def numeric_env(unrolled: Unrolled, rng: np.random.Generator, zero_h0: bool = False) -> dict:
    """Random values for every leaf; one-hot targets for cross-entropy, (0,1) for bce."""
    sizes = unrolled.sym.sizes()
    env: dict[sp.MatrixSymbol, Any] = {}
    for leaf in data_leaves(unrolled):
        q = unrolled.sym.info[leaf]
        shape = _shape(leaf, sizes)
        value = rng.normal(scale=0.8, size=shape)
        if q.role in unrolled.sym.cell.STATE and zero_h0:
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


def _matrix(tag: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda r, c: sp.Symbol(f"{tag}_{r}_{c}", real=True))


def _target(tag: str, rows: int, cols: int) -> sp.Matrix:
    """A symbolic probability vector: its entries sum to 1 (what p - y needs)."""
    m = _matrix(tag, rows, cols)
    m[-1] = 1 - sum(list(m)[:-1])
    return m


def symbolic_env(unrolled: Unrolled) -> dict:
    """Explicit matrices of scalar symbols for every leaf; CE targets sum to 1."""
    sizes = unrolled.sym.sizes()
    env: dict[sp.MatrixSymbol, Any] = {}
    for i, leaf in enumerate(data_leaves(unrolled)):
        q = unrolled.sym.info[leaf]
        rows, cols = _shape(leaf, sizes)
        make = _target if q.role == "target" and unrolled.spec.loss.kind == "cross_entropy" else _matrix
        env[leaf] = make(f"v{i}", rows, cols)
    return env


def _value(a, values: dict, backend: Any, sizes: dict) -> Any:
    """One forward assignment; the cell's functions are uninterpreted when the backend is generic."""
    return evaluate(a.rhs, values, _scope(backend, a.layer), sizes)


def run_forward(unrolled: Unrolled, env: dict, backend: Any) -> dict:
    env = dict(env)
    sizes = unrolled.sym.sizes()
    for a in unrolled.forward:
        env[a.lhs] = _value(a, env, backend, sizes)
    return env


def _recursion(d: bptt.Derivation, env: dict, backend: Any) -> tuple[dict, dict]:
    """The forward pass, then every delta in order: the values the totals read."""
    env = run_forward(d.unrolled, env, backend)
    sizes = d.sym.sizes()
    for a in d.deltas:
        env[a.lhs] = evaluate(a.rhs, env, _scope(backend, d.sym.info[a.lhs].layer), sizes)
    return env, sizes


def form_a(d: bptt.Derivation, env: dict, backend: Any) -> dict:
    """The delta recursion: the parameters' totals."""
    env, sizes = _recursion(d, env, backend)
    return {p: evaluate(e, env, backend, sizes) for p, e in d.totals.items()}


def form_a_all(d: bptt.Derivation, env: dict, backend: Any) -> tuple[dict, dict]:
    """The delta recursion evaluated once for the parameters and for x_t and h_0."""
    env, sizes = _recursion(d, env, backend)
    return ({p: evaluate(e, env, backend, sizes) for p, e in d.totals.items()},
            {leaf: evaluate(e, env, backend, sizes) for leaf, e in d.data_grads.items()})


def form_b(d: bptt.Derivation, env: dict, backend: Any) -> dict:
    env = run_forward(d.unrolled, env, backend)
    if d.sym.cell.GATES:   # the cell's Jacobians derived with SymPy, read at every step
        return bptt.gated_path_sums(d.spec, d.unrolled, env, backend)
    sums = bptt.path_sums(d.spec, d.unrolled)
    return {p: evaluate(e, env, backend, d.sym.sizes()) for p, e in sums.items()}


def windowed_loss(d: bptt.Derivation, env: dict, backend: Any, live: dict, frozen: dict) -> Any:
    """L = scale * sum_s E_s; with truncation k, the states entering the window of E_s
    (steps s-k+1..s) come from a forward pass on `frozen` values and are constants.

    `env` holds the data, `live` the leaves that are differentiated, `frozen` their
    constant copies. Without truncation this is the plain unrolled loss.
    """
    unrolled, spec, sym = d.unrolled, d.spec, d.sym
    sizes = sym.sizes()
    k = spec.bptt.truncate
    values = {**env, **live}
    if not k or k >= spec.bptt.steps:
        for a in unrolled.forward:
            values[a.lhs] = _value(a, values, backend, sizes)
        total = sum((_term(d, term, values, backend) for term in unrolled.losses), 0)
        return _scale(spec) * total
    const = {**env, **frozen}
    for a in unrolled.forward:
        const[a.lhs] = _value(a, const, backend, sizes)
    by_step: dict[int, list] = {}
    for a in unrolled.forward:
        by_step.setdefault(int(a.time), []).append(a)
    total = 0
    for term in unrolled.losses:
        s = int(term.time)
        # the steps E_s reaches: window, the k steps ending at s; chunk, s's own chunk of k steps
        start = (s - 1) // k * k + 1 if spec.bptt.truncate_style == "chunk" else max(1, s - k + 1)
        local = {**env, **live}
        for l in range(1, spec.model.layers + 1):
            for role in sym.cell.STATE if start > 1 else ():
                entering = sym(role, l, sp.Integer(start - 1))
                local[entering] = const[entering]
        for step_time in range(start, s + 1):   # only the window: the cost is O(T k), not O(T^2)
            for a in by_step[step_time]:
                local[a.lhs] = _value(a, local, backend, sizes)
        total += _term(d, term, local, backend)
    return _scale(spec) * total


def _term(d: bptt.Derivation, term, values: dict, backend: Any) -> Any:
    """E_s. On numbers, cross-entropy and bce are evaluated from the logits without
    cancellation (log(1 - sigmoid(z)) loses every digit for large z, and central
    differences of a loss computed that way are noise)."""
    kind = d.spec.loss.kind
    if isinstance(backend, NumPyBackend) and kind in ("cross_entropy", "bce"):
        z = np.asarray(values[d.sym("logits", None, term.time)], dtype=float)
        y = np.asarray(values[d.sym("target", None, term.time)], dtype=float)
        if kind == "bce":
            return float(np.sum(np.logaddexp(0.0, z) - y * z))
        shift = z.max()
        return float(-np.sum(y * (z - shift - np.log(np.sum(np.exp(z - shift))))))
    return evaluate(term.rhs, values, _scope(backend, None), d.sym.sizes())[0, 0]


def _scale(spec: Spec, batch: sp.Expr = sp.Integer(1), steps: sp.Expr | None = None) -> sp.Expr:
    """The reduction, stated here from the spec and not taken from the engine."""
    if spec.loss.reduction == "sum":
        return sp.Integer(1)
    steps = sp.Integer(spec.bptt.steps) if steps is None else steps
    return 1 / (batch * steps) if spec.loss.at == "every_step" else 1 / batch


def form_c(d: bptt.Derivation, env: dict, backend: Any | None = None) -> dict:
    """sympy.diff of the scalar-expanded loss; `env` may hold numbers or symbols."""
    backend = backend or SymPyBackend()
    sizes = d.sym.sizes()
    params = d.sym.params()
    fresh = lambda tag: {p: _matrix(f"{tag}{i}", *_shape(p, sizes)) for i, p in enumerate(params)}
    live, frozen = fresh("p"), fresh("q")
    data = {k: sp.Matrix(v) for k, v in env.items() if k not in live}
    loss = windowed_loss(d, data, backend, live, frozen)
    back = {}
    for p in params:
        back.update(dict(zip(live[p], sp.Matrix(env[p]))))
        back.update(dict(zip(frozen[p], sp.Matrix(env[p]))))
    return {p: live[p].applyfunc(lambda x: sp.diff(loss, x).xreplace(back)) for p in params}


#: A gated cell has four (LSTM) or three (GRU) times an Elman cell's parameters, each loss
#: evaluation costs about five times as much: its central differences are taken at most at
#: this many entries of each array (chosen by the seed; the others are NaN, not compared).
FD_ENTRIES_GATED = 4


def fd_entries(d: bptt.Derivation, leaves: list[sp.MatrixSymbol], seed: int = 0) -> dict | None:
    """The entries whose central differences are taken: all of them for an Elman cell; for a
    gated cell at most FD_ENTRIES_GATED of each array, drawn from `seed`."""
    if not d.sym.cell.GATES:
        return None
    rng = np.random.default_rng(seed)
    out = {}
    for leaf in leaves:
        shape = _shape(leaf, d.sym.sizes())
        size = shape[0] * shape[1]
        picked = range(size) if size <= FD_ENTRIES_GATED else sorted(rng.choice(size, FD_ENTRIES_GATED, replace=False))
        out[leaf] = [np.unravel_index(int(i), shape) for i in picked]
    return out


def finite_differences(d: bptt.Derivation, env: dict, eps: float = 1e-6,
                       leaves: list[sp.MatrixSymbol] | None = None, entries: dict | None = None) -> dict:
    """Central differences of the (windowed) loss in float64, entry by entry (only at
    `entries`, leaf -> indices, when given: the other entries are NaN)."""
    backend = NumPyBackend()
    leaves = d.sym.params() if leaves is None else leaves
    frozen = {p: env[p] for p in leaves}
    out = {}
    for p in leaves:
        grad = np.zeros_like(env[p]) if entries is None else np.full(np.shape(env[p]), np.nan)
        for idx in np.ndindex(*grad.shape) if entries is None else entries[p]:
            losses = []
            for sign in (1, -1):
                value = env[p].copy()
                value[idx] += sign * eps
                losses.append(windowed_loss(d, env, backend, {**frozen, p: value}, frozen))
            grad[idx] = (losses[0] - losses[1]) / (2 * eps)
        out[p] = grad
    return out


# --------------------------------------------------------------------------- exactness

def atomize(expr: sp.Expr, table: dict) -> sp.Expr:
    """Replace each function application by a symbol, bottom up; exp(a + 2b) -> e_a e_b^2.

    If the result is identically 0 as a rational function, so is `expr`: equal
    applications get equal symbols. This decides the proofs in seconds where
    `simplify` takes minutes.
    """
    if expr.is_Atom:
        return expr
    done = table.setdefault(_ATOMIZED, {})   # the trees share subtrees: each is atomized once
    if expr in done:
        return done[expr]
    done[expr] = out = _atomize(expr, table)
    return out


_ATOMIZED = sp.Dummy("atomized")


def _atomize(expr: sp.Expr, table: dict) -> sp.Expr:
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


def _fraction(expr: sp.Expr, gens: dict, one: Any) -> tuple[Any, dict]:
    """`expr` as a numerator in a polynomial ring over QQ and its denominator as a product
    of base polynomials with exponents, built node by node with sparse polynomial
    arithmetic (where `Expr.expand` of the same products takes minutes). A sum takes the
    least common multiple of the factored denominators, so the softmax's sum of exps is
    not multiplied in once per term. `expr` is identically 0 exactly when the numerator is."""
    memo: dict = {}

    def times(num: Any, den: dict, want: dict) -> Any:
        """num / den written over the denominator `want` (a multiple of den): its numerator."""
        for base, n in want.items():
            if n > den.get(base, 0):
                num = num * base ** (n - den.get(base, 0))
        return num

    def add(x: tuple, y: tuple) -> tuple:
        if x[1] == y[1]:
            return x[0] + y[0], x[1]
        common = {b: max(x[1].get(b, 0), y[1].get(b, 0)) for b in {**x[1], **y[1]}}
        return times(*x, common) + times(*y, common), common

    def go(e: sp.Expr) -> tuple:
        if e in memo:
            return memo[e]
        if e.is_Symbol:
            out = gens[e], {}
        elif e.is_Rational:
            out = one * e, {}
        elif e.is_Add:
            out = go(e.args[0])
            for a in e.args[1:]:
                out = add(out, go(a))
        elif e.is_Mul:
            num, den = one, {}
            for a in e.args:
                x = go(a)
                num = num * x[0]
                for b, n in x[1].items():
                    den[b] = den.get(b, 0) + n
            out = num, den
        elif e.is_Pow and e.exp.is_Integer:
            num, den = go(e.base)
            n = int(e.exp)
            if n >= 0:
                out = num ** n, {b: k * n for b, k in den.items()}
            else:   # 1 / (num / den) = den / num
                top = one
                for b, k in den.items():
                    top = top * b ** (k * -n)
                if num.is_ground:
                    out = top * (one / num.LC) ** -n, {}
                else:
                    out = top, {num: -n}
        else:
            raise TypeError(f"not a rational function of symbols: {type(e).__name__}")
        memo[e] = out
        return out

    return go(expr)


def is_zero(expr: sp.Expr, table: dict) -> bool:
    """Whether `expr` is identically 0: each function application is an atom, and the rest
    is a rational function of the atoms and symbols, decided by exact sparse arithmetic over QQ."""
    expr = atomize(sp.sympify(expr), table)
    symbols = sorted(expr.free_symbols, key=sp.default_sort_key)
    if not symbols:
        return sp.simplify(expr) == 0
    ring = sp.polys.rings.ring(symbols, sp.QQ)
    try:
        numerator, denominator = _fraction(expr, dict(zip(symbols, ring[1:])), ring[0].one)
    except TypeError:
        return sp.cancel(sp.together(expr)) == 0
    if any(base == 0 for base in denominator):
        raise ZeroDivisionError(f"a denominator of {expr} is identically 0")
    return numerator == 0


def _residual(pairs: list[tuple[Any, Any]]) -> tuple[int, int]:
    """(entries that are not identically 0, entries) over pairs of equal-shape matrices."""
    table: dict = {}
    bad = total = 0
    for got, want in pairs:
        got, want = sp.Matrix(got), sp.Matrix(want)
        if got.shape != want.shape:
            return max(1, want.rows * want.cols), max(1, want.rows * want.cols)
        for x in got - want:
            total += 1
            bad += not is_zero(x, table)
    return bad, total


def _exact_row(form: str, pairs: list[tuple[Any, Any]]) -> Row:
    bad, total = _residual(pairs)
    detail = f"{total} entries identically 0" if not bad else f"{bad} of {total} entries not identically 0"
    return Row(form, 0.0 if not bad else math.nan, bad == 0, 0.0, detail)


def activation_rows() -> tuple[Row, ...]:
    """For every row of the activation table: the slope through the output equals f'.

    Checked on each side of 0 (relu is piecewise linear there); at 0 the slope must be
    f'(0) where f is differentiable, and relu's f'(0) is taken as 0.
    """
    rows = []
    pos, neg = sp.Symbol("p", positive=True), sp.Symbol("n", negative=True)
    for name, act in ACTIVATIONS.items():
        value = elementary(act.value)   # sigma and relu by their definitions
        through_output = act.slope.xreplace({v: value})
        derivative = elementary(sp.diff(act.value, u))
        bad = 0
        for side in (pos, neg):
            gap = (through_output - derivative).xreplace({u: side})
            bad += sp.simplify(gap.rewrite(sp.exp)) != 0
        at_zero = through_output.xreplace({u: 0})
        kink = not value.is_polynomial(u) and isinstance(value, (sp.Max, sp.Min))
        want_zero = sp.Integer(0) if kink else derivative.xreplace({u: 0})
        bad += sp.simplify(at_zero - want_zero) != 0
        note = " (each side of 0; f'(0) taken as 0)" if kink else " (u < 0, u = 0, u > 0)"
        rows.append(Row(f"activation {name}: slope via the output vs f'{note}",
                        0.0 if not bad else math.nan, bad == 0, 0.0,
                        "3 points identically 0" if not bad else f"{bad} of 3 points differ"))
    return tuple(rows)


def exact_spec(spec: Spec, steps: int | None = None, size: int = EXACT_SIZE) -> Spec:
    """The spec's structure at scalar-expandable sizes (every size at most `size`, the
    outputs at most 2), and at most `steps` steps."""
    m = spec.model
    model = dataclasses.replace(
        m, input_size=min(m.input_size, size),
        hidden_sizes=tuple(min(h, size) for h in m.hidden_sizes),
        output_size=min(m.output_size, max(size, 2)))
    out = dataclasses.replace(spec, model=model)
    if steps is not None and steps < spec.bptt.steps:
        b = spec.bptt
        out = dataclasses.replace(out, bptt=dataclasses.replace(b, steps=steps, truncate=b.truncate if b.truncate < steps else 0))
    return out


#: Backwards compatible name.
small = exact_spec


def sizes_text(spec: Spec) -> str:
    m = spec.model
    out = f"input {m.input_size}, hidden {list(m.hidden_sizes)}"
    return out + (f", output {m.output_size}" if m.output_size else ", no output layer")


def _inner(a: sp.Matrix, b: sp.Matrix) -> sp.Expr:
    return sum(a.multiply_elementwise(b))


def _gated_layer_pairs(rule: bptt.StepRule, layer: bptt.LayerRule, env: dict, ev, symbols) -> tuple[list, list]:
    """A gated layer's step rule at symbolic t against sympy.diff through one step.

    The leaves are free symbols: the parameters, the inputs x_t, x_{t+1} (or the layer
    below's h), the state s_{t-1} (h, and the LSTM's c), the upstream g_t, and the
    adjoint Delta_M of every named node M of step t+1 (each gate's pre-activation, h, c).
    The future is cut at step t+1's named nodes: each contributes <Delta_M, M> and is a
    constant for the rest of step t+1, so the chain rule gives exactly the rule's
    reading of step t+1's adjoints. For every named node N of step t (its value a free
    symbol nu, step t recomputed from it):
      Phi_N = <g_t, h_t> + sum_M <Delta_M, M>, and delta^N_t must be dPhi_N/dnu at nu = N_t.
    With free adjoints d_N of step t's named nodes, the step cut at them:
      Psi = sum_N <d_N, N_t>; each parameter use and the gradient sent below must be
      dPsi/dtheta and dPsi/d below_t; at t = 1, the h_0 (and c_0) rules are dPsi_1/ds_0.
    """
    sym = rule.sym
    l = layer.layer
    named = {**sym.cell.NAMED, **bptt.NAMED}
    mine = lambda time: [a for a in step(sym, time) if a.layer == l]
    now, after, first = mine(T_SYM), mine(T_SYM + 1), mine(sp.Integer(1))

    def adjoint(node: sp.MatrixSymbol) -> sp.MatrixSymbol:
        q = sym.info[node]
        return sym(named[q.role], l, q.time, None, q.gate)

    def is_named(node: sp.MatrixSymbol) -> bool:
        return sym.info[node].role in named

    def leaves(assigns: list) -> list[sp.MatrixSymbol]:
        defined = {a.lhs for a in assigns}
        found = set().union(*(a.rhs.free_symbols for a in assigns)) - defined
        return sorted((x for x in found if isinstance(x, sp.MatrixSymbol) and x not in env), key=str)

    local = dict(env)
    for leaf in leaves(now + after) + [layer.upstream]:
        local[leaf] = symbols(leaf)
    actual = dict(local)
    for a in now + after:
        actual[a.lhs] = ev(a.rhs, actual)
    for a in after:
        if is_named(a.lhs):
            local[adjoint(a.lhs)] = symbols(adjoint(a.lhs), "D")

    def cut(assigns: list, values: dict, weights: dict, back: dict, actual: dict, free: dict | None = None) -> sp.Expr:
        """Run `assigns`; a node in `free` takes its free value; a named node in `weights`
        adds <weights[node], value> and is then a constant (back: constant -> its value)."""
        total = sp.Integer(0)
        for a in assigns:
            if free and a.lhs in free:
                values[a.lhs] = free[a.lhs]
                continue
            value = ev(a.rhs, values)
            if a.lhs in weights:
                total += _inner(weights[a.lhs], value)
                const = symbols(a.lhs, "k")
                back.update(zip(const, actual[a.lhs]))
                value = const
            values[a.lhs] = value
        return total

    pairs_delta: list = []
    # the rule's named adjoints at t, evaluated in order (each may read the previous ones)
    got = dict(local)
    got.update({a.lhs: actual[a.lhs] for a in now + after})
    for a in layer.delta:
        got[a.lhs] = ev(a.rhs, got)
    future = {a.lhs: local[adjoint(a.lhs)] for a in after if is_named(a.lhs)}
    h_now = sym("hidden", l, T_SYM)
    for a in now:
        if not is_named(a.lhs):
            continue
        nu = symbols(a.lhs, "a")
        values, back = dict(local), {}
        cut(now, values, {}, back, actual, free={a.lhs: nu})
        phi = _inner(local[layer.upstream], values[h_now]) + cut(after, values, future, back, actual)
        back.update(zip(nu, actual[a.lhs]))
        want = nu.applyfunc(lambda x: sp.diff(phi, x).xreplace(back))
        mine_delta = [d for d in layer.delta if d.lhs == adjoint(a.lhs)]
        pairs_delta.append((got[mine_delta[0].lhs] if len(mine_delta) == 1 else sp.zeros(*want.shape) + 1, want))
    # the parameter uses at t, the gradient sent below, and h_0 (c_0) through step 1
    pairs_uses: list = []
    for assigns, when in ((now, T_SYM), (first, sp.Integer(1))):
        values = dict(local)
        for leaf in leaves(assigns):
            values.setdefault(leaf, symbols(leaf))
        weights = {a.lhs: symbols(adjoint(a.lhs), "d") for a in assigns if is_named(a.lhs)}
        at = dict(values)
        for a in assigns:
            at[a.lhs] = ev(a.rhs, at)
        at.update({adjoint(node): w for node, w in weights.items()})
        back: dict = {}
        psi = cut(assigns, values, weights, back, at)
        derivative = lambda leaf: values[leaf].applyfunc(lambda x: sp.diff(psi, x).xreplace(back))
        if when == T_SYM:
            for p in (p for p in sym.params() if sym.info[p].layer == l):
                want = derivative(p)
                pairs_uses.append((ev(layer.uses[p], at) if p in layer.uses else sp.zeros(*want.shape), want))
            below = sym("input", None, T_SYM) if l == 1 else sym("hidden", l - 1, T_SYM)
            want = derivative(below)
            pairs_uses.append((ev(layer.down, at) if layer.down is not None else sp.zeros(*want.shape), want))
        else:
            for role in sym.cell.STATE:
                want = derivative(sym(role, l, sp.Integer(0)))
                rule_0 = layer.initial.get(role)
                pairs_uses.append((ev(rule_0, at) if rule_0 is not None else sp.zeros(*want.shape), want))
    return pairs_delta, pairs_uses


def step_rule_rows(spec: Spec) -> list[Row]:
    """The generic step rule at a symbolic t against sympy.diff through one step.

    For layer l, with a_t free symbols and h_t = f(a_t):
      Phi = <g_t, h_t> + <delta_{t+1}, a_{t+1}(h_t)>, and delta_t must be dPhi/da_t;
      Psi = <delta_t, a_t(theta, below_t, h_{t-1})>, and each use of theta and the gradient
      sent below must be dPsi/dtheta and dPsi/d below_t; dPsi_1/dh_0 is the h_0 rule.
    For the output layer, with the logits z_t free symbols, delta^y_t must be
    scale * dE_t/dz_t, with the reduction's scale 1/(B T) (or 1/B) stated here, read at B = 7, T = 11.
    """
    small_spec = exact_spec(spec)
    rule = bptt.step_rule(small_spec)
    sym, m = rule.sym, small_spec.model
    sizes = sym.sizes()
    backend = _backend(small_spec)
    counter = iter(range(10**6))
    # the rule keeps the batch size B and the run-time T as symbols: read them at two
    # primes that no spec's T is tied to, so 1/(B T) is checked, not just "some factor"
    at = {bptt.BATCH: sp.Integer(7), bptt.STEPS: sp.Integer(11)}

    def ev(expr: sp.Expr, values: dict, backend: Any, sizes: dict) -> Any:
        return evaluate(expr.xreplace(at), values, backend, sizes)

    def symbols(symbol: sp.MatrixSymbol, tag: str = "s") -> sp.Matrix:
        return _matrix(f"{tag}{next(counter)}", *_shape(symbol, sizes))

    env: dict = {p: symbols(p, "w") for p in sym.params()}
    now, after = step(sym, T_SYM), step(sym, T_SYM + 1)
    first = step(sym, sp.Integer(1))
    pairs_delta, pairs_uses, pairs_out = [], [], []
    for layer in rule.layers if sym.cell.GATES else ():
        got_delta, got_uses = _gated_layer_pairs(rule, layer, env, lambda e, vals: ev(e, vals, backend, sizes), symbols)
        pairs_delta += got_delta
        pairs_uses += got_uses
    for layer in rule.layers if not sym.cell.GATES else ():
        l = layer.layer
        a_now = next(a for a in now if a.layer == l and sym.info[a.lhs].role == "pre_activation")
        a_next = next(a for a in after if a.layer == l and sym.info[a.lhs].role == "pre_activation")
        h_now = sym("hidden", l, T_SYM)
        below = sym("input", None, T_SYM) if l == 1 else sym("hidden", l - 1, T_SYM)
        below_next = sym("input", None, T_SYM + 1) if l == 1 else sym("hidden", l - 1, T_SYM + 1)
        h_prev = sym("hidden", l, T_SYM - 1)
        d_next, d_now = sym("delta", l, T_SYM + 1), sym("delta", l, T_SYM)
        local = dict(env)
        for leaf in (below, below_next, h_prev, d_next, layer.upstream):
            local[leaf] = symbols(leaf)
        alpha = symbols(a_now.lhs, "a")
        local[a_now.lhs] = alpha
        local[h_now] = alpha.applyfunc(f) if generic(small_spec) else alpha
        phi = sum(local[layer.upstream].multiply_elementwise(local[h_now])) + \
            sum(local[d_next].multiply_elementwise(ev(a_next.rhs, local, backend, sizes)))
        want = alpha.applyfunc(lambda x: sp.diff(phi, x))
        assigns = [a for a in layer.delta if a.lhs == d_now]
        if len(assigns) != 1:
            pairs_delta.append((sp.zeros(*want.shape), sp.ones(*want.shape)))
            continue
        pairs_delta.append((ev(assigns[0].rhs, local, backend, sizes), want))
        # uses of the parameters at step t, and the gradient sent below
        local[d_now] = symbols(d_now, "d")
        psi = sum(local[d_now].multiply_elementwise(ev(a_now.rhs, local, backend, sizes)))
        mine = [p for p in sym.params() if sym.info[p].layer == l]
        for p in mine:
            want_p = local[p].applyfunc(lambda x: sp.diff(psi, x))
            got_p = ev(layer.uses[p], local, backend, sizes) if p in layer.uses else sp.zeros(*want_p.shape)
            pairs_uses.append((got_p, want_p))
        want_down = local[below].applyfunc(lambda x: sp.diff(psi, x))
        got_down = ev(layer.down, local, backend, sizes) if layer.down is not None else sp.zeros(*want_down.shape)
        pairs_uses.append((got_down, want_down))
        # h_0 enters step 1 only
        a1 = next(a for a in first if a.layer == l and sym.info[a.lhs].role == "pre_activation")
        h0, d1 = sym("hidden", l, sp.Integer(0)), sym("delta", l, sp.Integer(1))
        local1 = dict(env)
        for leaf in a1.rhs.free_symbols | {d1}:
            if isinstance(leaf, sp.MatrixSymbol) and leaf not in local1:
                local1[leaf] = symbols(leaf)
        psi1 = sum(local1[d1].multiply_elementwise(ev(a1.rhs, local1, backend, sizes)))
        pairs_uses.append((ev(rule.initial[l], local1, backend, sizes),
                           local1[h0].applyfunc(lambda x: sp.diff(psi1, x))))
    # the output layer (or the top hidden state) and the loss term E_t, its functions as written
    backend = _scope(backend, None)
    unrolled = Unrolled(small_spec, sym, [T_SYM])
    scale = _scale(small_spec, at[bptt.BATCH], at[bptt.STEPS])
    local = dict(env)
    role = "upstream" if small_spec.loss.kind == "none" else "target"
    y = sym(role, None, T_SYM)
    local[y] = (_target if small_spec.loss.kind == "cross_entropy" else _matrix)("y", *_shape(y, sizes))
    top = sym("hidden", m.layers, T_SYM)
    if m.output_size:
        z = sym("logits", None, T_SYM)
        local[top] = symbols(top, "h")
        zeta = symbols(z, "z")
        local[z] = zeta
        for a in rule.output:
            if a.lhs != z:
                local[a.lhs] = ev(a.rhs, local, backend, sizes)
        e_t = ev(LOSSES[unrolled.spec.loss.kind].value(unrolled.at(T_SYM)), local, backend, sizes)[0, 0]
        want = zeta.applyfunc(lambda x: scale * sp.diff(e_t, x))
        pairs_out.append((ev(rule.output_delta.rhs, local, backend, sizes) if rule.output_delta else
                          sp.zeros(*want.shape), want))
        dy = rule.output_delta.lhs if rule.output_delta else sym("output_delta", None, T_SYM)
        local[dy] = symbols(dy, "dy")
        z_of = next(a for a in rule.output if a.lhs == z)
        psi = sum(local[dy].multiply_elementwise(ev(z_of.rhs, local, backend, sizes)))
        for p in sym.params():
            if sym.info[p].layer == m.layers + 1:
                want_p = local[p].applyfunc(lambda x: sp.diff(psi, x))
                got_p = ev(rule.output_uses[p], local, backend, sizes) if p in rule.output_uses \
                    else sp.zeros(*want_p.shape)
                pairs_out.append((got_p, want_p))
        pairs_out.append((ev(rule.top_upstream, local, backend, sizes),
                          local[top].applyfunc(lambda x: sp.diff(psi, x))))
    else:
        eta = symbols(top, "h")
        local[top] = eta
        e_t = ev(LOSSES[unrolled.spec.loss.kind].value(unrolled.at(T_SYM)), local, backend, sizes)[0, 0]
        pairs_out.append((ev(rule.top_upstream, local, backend, sizes),
                          eta.applyfunc(lambda x: scale * sp.diff(e_t, x))))
    initial = ", ".join(f"{'h' if role == 'hidden' else 'c'}_0" for role in sym.cell.STATE)
    where = f"symbolic t, {generic_text(small_spec)}, {sizes_text(small_spec)}" if generic(small_spec) else \
        f"symbolic t, {sizes_text(small_spec)}"
    return [_exact_row(f"step rule delta_t vs sympy.diff of one step ({where})", pairs_delta),
            _exact_row(f"step rule: parameter uses, gradient below, {initial} vs sympy.diff", pairs_uses),
            _exact_row("output rule vs scale * sympy.diff of E_t", pairs_out)]


#: `exact`'s default number of steps: EXACT_STEPS, or EXACT_STEPS_GATED for a gated cell.
DEFAULT_STEPS = -1


def exact(spec: Spec, steps: int | None = DEFAULT_STEPS, with_path_sums: bool = True,
          linear_loss: bool = False) -> list[Row]:
    """Full unrolling: (a) - (c) (and (b) - (c)) are identically 0 with symbolic entries, at
    UNROLL_SIZE and at most `steps` steps (None: the spec's own T; by default EXACT_STEPS, or
    EXACT_STEPS_GATED for a gated cell). `derive check` leaves
    (b) to the numeric rows: its exact row doubles the cost and proves nothing the step
    rule and (a) do not. With `linear_loss` the loss is E_t = <g_t, z_t> on the logits (the
    output and loss rules are the step rule's output row): the unrolling then checks how
    the steps connect, in polynomial algebra."""
    if steps == DEFAULT_STEPS:
        steps = EXACT_STEPS_GATED if CELLS[spec.model.cell].GATES else EXACT_STEPS
    small_spec = exact_spec(spec, steps, UNROLL_SIZE)
    if linear_loss:
        model = dataclasses.replace(small_spec.model, output_activation="identity")
        small_spec = dataclasses.replace(small_spec, model=model, loss=dataclasses.replace(small_spec.loss, kind="none"))
    d = bptt.derive(small_spec)
    env = symbolic_env(d.unrolled)
    backend = _backend(small_spec)
    c = form_c(d, env, backend)
    where = f"T = {small_spec.bptt.steps}, {sizes_text(small_spec)}" + (f", {generic_text(small_spec)}" if generic(small_spec) else "")
    if small_spec.bptt.truncate:
        where += f", truncate {small_spec.bptt.truncate}"
    if linear_loss:
        where += ", E_t = <g_t, z_t>"
    forms = (("(a) delta recursion", form_a),) + ((("(b) path sums", form_b),) if with_path_sums else ())
    rows = []
    for name, form in forms:
        value = form(d, env, backend)
        rows.append(_exact_row(f"{name} vs (c) sympy.diff, unrolled ({where})",
                               [(value[p], c[p]) for p in c]))
    return rows


# --------------------------------------------------------------------------- numbers

def numeric_spec(spec: Spec, cap: int = NUMERIC_CAP) -> Spec:
    """The same structure with every size at most `cap`."""
    m = spec.model
    model = dataclasses.replace(
        m, input_size=min(m.input_size, cap), hidden_sizes=tuple(min(h, cap) for h in m.hidden_sizes),
        output_size=min(m.output_size, cap))
    return dataclasses.replace(spec, model=model)


def _clip(values: dict, c: float, norm: float = 0.0, by: dict | None = None) -> dict:
    """Elementwise clipping to [-c, c], or torch's clip_grad_norm_ (its 1e-6 included) with
    the norm of `values` (or of `by`, when `values` holds sampled entries)."""
    if norm:
        total = np.sqrt(sum(float(np.sum(v * v)) for v in (by or values).values()))
        return {p: v * min(1.0, norm / (total + 1e-6)) for p, v in values.items()}
    return {p: np.clip(v, -c, c) for p, v in values.items()} if c else values


def _max_diff(a: dict, b: dict) -> tuple[float, float]:
    """max |a - b| and the scale max(1, max |b|): b is the reference."""
    def gap(p) -> float:
        mask = ~np.isnan(b[p])   # NaN: an entry the reference did not compute
        got = np.asarray(a[p], dtype=float).reshape(np.shape(b[p]))
        return float(np.max(np.abs(got[mask] - np.asarray(b[p])[mask]), initial=0.0))

    diff = max((gap(p) for p in b), default=0.0)
    scale = max([1.0] + [float(np.nanmax(np.abs(b[p]))) for p in b if np.size(b[p]) and not np.all(np.isnan(b[p]))])
    return diff, scale


def _row(form: str, got: dict, want: dict, rtol: float) -> Row:
    diff, scale = _max_diff(got, want)
    tol = rtol * scale
    return Row(form, diff, bool(diff <= tol), tol)


def numeric(spec: Spec, seed: int = 0, exact_diff: bool = False, path_sums_only: bool = False,
            path_sums: bool = True) -> list[Row]:
    """(a) against (b), and against central differences (or, if asked, sympy.diff), on
    random numbers, clipped as the spec says."""
    d = bptt.derive(spec)
    env = numeric_env(d.unrolled, np.random.default_rng(seed))
    backend = NumPyBackend()
    a = form_a(d, env, backend)
    clip = spec.bptt.clip, spec.bptt.clip_norm
    rows = []
    if path_sums:
        b = form_b(d, env, backend)
        rows.append(_row("(a) delta recursion vs (b) path sums", _clip(a, *clip), _clip(b, *clip), RTOL_FORMS))
    if path_sums_only:
        return rows
    if exact_diff:
        c = {p: np.array(g.evalf(), dtype=float) for p, g in form_c(d, env).items()}
        rows.append(_row("(a) delta recursion vs (c) sympy.diff", _clip(a, *clip), _clip(c, *clip), 1e-12))
    else:
        c = finite_differences(d, env, entries=fd_entries(d, d.sym.params(), seed))
        rows.append(_row("(a) delta recursion vs central differences", _clip(a, *clip), _clip(c, *clip, by=a if d.sym.cell.GATES else None),
                         RTOL_FD))
    return rows


def load_module(spec: Spec) -> types.ModuleType:
    """The generated NumPy module (loop style), rendered in memory and executed."""
    from derive import build
    text = build.render_all(spec, ["py"], "loop", "derive check")["py"]
    mod = types.ModuleType(f"_derive_check_{spec.name}")
    exec(compile(text, f"<derive check: {spec.name}.py>", "exec"), mod.__dict__)
    return mod


def backward_spec(spec: Spec) -> Spec:
    """The hidden layers alone with the upstream gradient as the loss: what `backward` computes."""
    model = dataclasses.replace(spec.model, output_size=0, output_activation="identity")
    return dataclasses.replace(spec, model=model, loss=Loss(kind="none", at="every_step", reduction="sum"))


def _module_inputs(d: bptt.Derivation, env: dict) -> tuple[dict, np.ndarray, list, Any]:
    """The engine's numbers laid out as the module's arrays (batch of one)."""
    sym, spec = d.sym, d.spec
    T = spec.bptt.steps
    params = {}
    for p in sym.params():
        q = sym.info[p]
        params[sym.names.python(q.role, q.layer, q.gate)] = env[p]
    xs = np.stack([env[sym("input", None, sp.Integer(k))].reshape(1, -1) for k in range(1, T + 1)])
    h0 = [tuple(env[sym(role, l, sp.Integer(0))].reshape(1, -1) for role in sym.cell.STATE)
          for l in range(1, spec.model.layers + 1)]
    if len(sym.cell.STATE) == 1:
        h0 = [h for (h,) in h0]
    kind = spec.loss.kind
    values = [env[sym("upstream" if kind == "none" else "target", None, s)].reshape(-1) for s in d.unrolled.loss_steps]
    if kind == "cross_entropy":
        labels = np.array([[int(np.argmax(y))] for y in values])
        targets = labels[-1] if spec.loss.at == "last_step" else labels
    else:
        arr = np.stack([y.reshape(1, -1) for y in values])
        targets = arr[-1] if spec.loss.at == "last_step" else arr
    return params, xs, h0, targets


def _module_grads(d: bptt.Derivation, grads: dict) -> dict:
    """The module's gradients keyed by the engine's symbols."""
    sym, spec = d.sym, d.spec
    out = {}
    for p in sym.params():
        q = sym.info[p]
        out[p] = np.asarray(grads[sym.names.python(q.role, q.layer, q.gate)])
    for k in range(1, spec.bptt.steps + 1):
        out[sym("input", None, sp.Integer(k))] = np.asarray(grads["xs"])[k - 1, 0]
    for l in range(1, spec.model.layers + 1):
        pair = grads["h0"][l - 1] if len(sym.cell.STATE) > 1 else (grads["h0"][l - 1],)
        if len(pair) != len(sym.cell.STATE):
            raise ValueError(f"grads['h0'][{l - 1}]: expected one array per state {sym.cell.STATE}")
        for role, value in zip(sym.cell.STATE, pair):
            out[sym(role, l, sp.Integer(0))] = np.asarray(value)[0]
    return out


def _engine_all(d: bptt.Derivation, env: dict) -> dict:
    """(a) for the parameters (clipped as the spec says) and for x_t and h_0."""
    backend = NumPyBackend()
    params, data = form_a_all(d, env, backend)
    a = _clip(params, d.spec.bptt.clip, d.spec.bptt.clip_norm)
    for leaf in _data_leaves(d):
        a[leaf] = data.get(leaf, np.zeros(_shape(leaf, d.sym.sizes())))
    return a


def _data_leaves(d: bptt.Derivation) -> list[sp.MatrixSymbol]:
    sym, spec = d.sym, d.spec
    return [sym("input", None, sp.Integer(k)) for k in range(1, spec.bptt.steps + 1)] + initial_states(sym)


#: Central differences of x_t are taken at most at these steps (each costs a pass over T).
FD_INPUT_STEPS = 4


def _fd_all(d: bptt.Derivation, env: dict, seed: int = 0) -> dict:
    """Central differences for every parameter, h_0 and x_t at the first and last steps
    (FD_INPUT_STEPS in all): the cost stays linear in T."""
    T = d.spec.bptt.steps
    steps = sorted({1, 2, T - 1, T} & set(range(1, T + 1)))[:FD_INPUT_STEPS]
    leaves = d.sym.params() + [leaf for leaf in _data_leaves(d)
                               if d.sym.info[leaf].role != "input" or int(d.sym.info[leaf].time) in steps]
    fd = finite_differences(d, env, leaves=leaves, entries=fd_entries(d, leaves, seed))
    params = d.sym.params()
    unclipped = form_a(d, env, NumPyBackend()) if d.spec.bptt.clip_norm and d.sym.cell.GATES else None
    clipped = _clip({p: fd[p] for p in params}, d.spec.bptt.clip, d.spec.bptt.clip_norm, by=unclipped)
    return {**fd, **clipped}


def module_rows(spec: Spec, seed: int = 0) -> list[Row]:
    """The generated module's loss_and_grads and backward against (a) and central differences."""
    rows = []
    mod = load_module(spec)
    d = bptt.derive(spec)
    env = numeric_env(d.unrolled, np.random.default_rng(seed + 1))
    params, xs, h0, targets = _module_inputs(d, env)
    params = {k: v.reshape(mod.PARAMS[k]["shape"]) for k, v in params.items()}
    gated = bool(d.sym.cell.GATES)
    if gated:   # the state the module hands on: h_final, (h, c) pairs for the LSTM
        loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0=h0, return_state=True)
    else:
        loss, grads = mod.loss_and_grads(params, xs, targets, h0=h0)
    got = _module_grads(d, grads)
    # the loss value: frozen copies equal to the live values give the plain loss
    engine_loss = float(windowed_loss(d, env, NumPyBackend(), {}, {}))
    got_value, want_value = {"L": np.array(float(loss))}, {"L": np.array(engine_loss)}
    what = "loss"
    if gated:
        final = run_forward(d.unrolled, env, NumPyBackend())
        states = d.sym.cell.STATE
        for l in range(1, spec.model.layers + 1):
            pair = h_final[l - 1] if len(states) > 1 else (h_final[l - 1],)
            for role, value in zip(states, pair):
                key = d.sym(role, l, sp.Integer(spec.bptt.steps))
                got_value[key], want_value[key] = np.asarray(value).reshape(-1), final[key].reshape(-1)
        what = "loss, h_final (h, c)" if len(states) > 1 else "loss, h_final"
    rows.append(_row(f"module loss_and_grads: {what} vs the forward pass", got_value, want_value, RTOL_FORMS))
    rows.append(_row("module loss_and_grads vs (a) delta recursion", got, _engine_all(d, env), RTOL_FORMS))
    rows.append(_row("module loss_and_grads vs central differences", got, _fd_all(d, env, seed), RTOL_FD))
    # backward with a random upstream on the top hidden states
    bspec = backward_spec(spec)
    db = bptt.derive(bspec)
    benv = numeric_env(db.unrolled, np.random.default_rng(seed + 2))
    for key in benv:
        if key in env:   # the same parameters, inputs and h_0 (equal names and shapes)
            benv[key] = env[key]
    bparams, bxs, bh0, dhs = _module_inputs(db, benv)
    full = dict(params)
    full.update({k: v.reshape(mod.PARAMS[k]["shape"]) for k, v in bparams.items()})
    _, cache = mod.forward(full, bxs, bh0)
    bgrads = mod.backward(dhs, cache)
    got_b = _module_grads(db, bgrads)
    rows.append(_row("module backward (random upstream) vs (a) delta recursion", got_b, _engine_all(db, benv),
                     RTOL_FORMS))
    rows.append(_row("module backward (random upstream) vs central differences", got_b, _fd_all(db, benv, seed), RTOL_FD))
    return rows


# --------------------------------------------------------------------------- the report

def _diff_text(row: Row) -> str:
    if row.tolerance:
        return f"{row.max_abs_diff:.2e}"
    return "0" if row.ok else "not 0"


def report(spec: Spec, *, quick: bool = False, exact_steps: int | None = None, seed: int = 0,
           out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run every check of `spec`, print the report on `out` and progress on `err`.

    Returns the exit code: 0 when every check passed, 1 otherwise.
    """
    out = out or sys.stdout
    start = time.perf_counter()

    def progress(what: str) -> None:
        if err is not None:
            print(f"derive check: {what} ({time.perf_counter() - start:.1f} s)", file=err, flush=True)

    m, b = spec.model, spec.bptt
    nspec = numeric_spec(spec)
    reduced = nspec.model != m
    gated = bool(CELLS[m.cell].GATES)
    default_steps = EXACT_STEPS_GATED if gated else EXACT_STEPS
    unroll_steps = 0 if quick else min(b.steps, default_steps if exact_steps is None else exact_steps)
    print(f"derive check: {spec.name}, T = {b.steps}, {sizes_text(spec)}, seed {seed}", file=out)
    extra = [f"activation {m.activation}", f"loss {spec.loss.kind} ({spec.loss.at}, {spec.loss.reduction})",
             f"layout {spec.layout}"]
    if b.truncate:
        extra.append(f"truncate {b.truncate} ({b.truncate_style})")
    if b.clip:
        extra.append(f"clip {b.clip:g}")
    if b.clip_norm:
        extra.append(f"clip_norm {b.clip_norm:g}")
    print("  " + ", ".join(extra), file=out)
    if quick:
        print("  exact rows: skipped (--quick)", file=out)
    else:
        steps_text = f"full unrolling at T = {unroll_steps}" if unroll_steps else "full unrolling skipped (--exact-steps 0)"
        functions = ("the cell's sigma and tanh uninterpreted functions s, f" if gated
                     else "hidden activation an uninterpreted f")
        print(f"  exact rows: SymPy, tolerance 'exact' (the difference is identically 0); {functions}; step rule at symbolic t, sizes at most {EXACT_SIZE}; {steps_text}, "
              f"sizes at most {UNROLL_SIZE}", file=out)
    sizes_note = (f"reduced to {sizes_text(nspec)} (sizes above {NUMERIC_CAP} are capped, same structure)"
                  if reduced else "at the spec's sizes")
    sampled = (f", taken at {FD_ENTRIES_GATED} entries of each array (drawn from the seed)" if gated else "")
    print(f"  numeric rows: float64, batch 1, random point from seed {seed}, {sizes_note}; tolerance "
          f"rtol * max(1, max |reference|) with rtol {RTOL_FORMS:g} between forms, {RTOL_FD:g} against "
          f"central differences (eps 1e-6{sampled})", file=out)
    rows: list[Row] = []
    if not quick:
        progress("activation table")
        rows += activation_rows()
        progress("step rule at symbolic t")
        rows += step_rule_rows(spec)
        if unroll_steps:
            progress(f"full unrolling at T = {unroll_steps}")
            rows += exact(spec, unroll_steps, with_path_sums=False, linear_loss=True)
    progress("numeric forms")
    short, where = nspec, []
    if b.steps > PATH_SUM_STEPS:   # (b) has O(T^2) terms: compare it at PATH_SUM_STEPS steps
        short = nspec.with_steps(PATH_SUM_STEPS)
        if short.bptt.truncate >= PATH_SUM_STEPS:
            short = dataclasses.replace(short, bptt=dataclasses.replace(short.bptt, truncate=0))
        where.append(f"at T = {PATH_SUM_STEPS}")
    if gated and numeric_spec(short, PATH_SUM_SIZE_GATED).model != short.model:
        short = numeric_spec(short, PATH_SUM_SIZE_GATED)
        where.append(f"sizes at most {PATH_SUM_SIZE_GATED}")
    numeric_rows = numeric(nspec, seed, path_sums=not where)
    if where:
        numeric_rows.insert(0, dataclasses.replace(numeric(short, seed, path_sums_only=True)[0],
                                                   form="(a) delta recursion vs (b) path sums " + ", ".join(where)))
    rows += numeric_rows
    progress("generated module")
    rows += module_rows(nspec, seed)
    width = max(len(r.form) for r in rows)
    print(file=out)
    print(f"{'check':<{width}}  {'max abs diff':>12}  {'tolerance':>9}  verdict", file=out)
    for r in rows:
        tol = f"{r.tolerance:.1e}" if r.tolerance else "exact"
        verdict = "ok" if r.ok else "FAILED" + (f" ({r.detail})" if r.detail else "")
        print(f"{r.form:<{width}}  {_diff_text(r):>12}  {tol:>9}  {verdict}", file=out)
    elapsed = time.perf_counter() - start
    failed = [r for r in rows if not r.ok]
    if failed:
        print(f"derive check: {len(failed)} of {len(rows)} checks FAILED in {elapsed:.1f} s: "
              + "; ".join(r.form for r in failed), file=out, flush=True)
        return 1
    print(f"derive check: {len(rows)} checks passed in {elapsed:.1f} s", file=out, flush=True)
    return 0
