"""Gradients: the delta recursion (reverse mode over a small graph of matrix operations),
the path sums with explicit Jacobian products, and the generic step rule.

The graph is the list of `Assign`s from `unroll`. Each rule below is one vector-Jacobian
product written as a SymPy matrix expression (the table `vjp`): MatAdd passes the
gradient on, MatMul multiplies by the transposed neighbours, an activation multiplies
elementwise by its slope written through its output (tanh' = 1 - h^2). Reverse mode
visits each assignment once, so the cost grows linearly in T and does not depend on the
layer sizes (they are symbols).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from derive.matrices import Assign, elementwise
from derive.rules import ACTIVATIONS, LOSSES, u, v
from derive.spec import Spec
from derive.unroll import Symbols, Unrolled, step, t, unroll

#: Nodes whose adjoint gets a name (a delta) instead of being written inline: the output
#: layer's, and the cell's own (`NAMED` of the cell module).
NAMED = {"logits": "output_delta"}
PARAM_ROLES = ("input_weight", "recurrent_weight", "bias", "output_weight", "output_bias", "recurrent_bias")


def slope(function: sp.Lambda, output: sp.MatrixExpr | None, argument: sp.MatrixExpr | None = None) -> sp.MatrixExpr | None:
    """f'(a) as an elementwise function of the output h = f(a) (tanh' = 1 - h^2), or, when
    the output has no name of its own (o ⊙ tanh(c)), of the argument (1 - tanh(c)^2);
    None when it is 1."""
    for act in ACTIVATIONS.values():
        if function == sp.Lambda(u, act.value):
            if output is None:
                body = act.slope.xreplace({v: act.value})
                return None if body == 1 else elementwise(body, argument)
            body = act.slope.xreplace({v: u})
            return None if body == 1 else elementwise(body, output)
    raise KeyError(f"no rule for {function}")


#: The vector-Jacobian products, one row per kind of expression (as HIPS autograd's
#: `defvjp`): each maps (expression, its output, the gradient reaching it) to the
#: (argument, gradient) pairs to pass on. Adding a kind of expression is one row.
VJPS: dict[type, Callable[[sp.Expr, sp.MatrixSymbol, sp.MatrixExpr], list[tuple[sp.Expr, sp.MatrixExpr]]]] = {}


def defvjp(kind: type):
    def register(rule):
        VJPS[kind] = rule
        return rule
    return register


def _product(factors: tuple, grad: sp.MatrixExpr, i: int) -> sp.MatrixExpr:
    """The gradient reaching factor i of a matrix product: left^T grad right^T."""
    left, right = factors[:i], factors[i + 1:]
    pieces = [sp.MatMul(*left).T] if left else []
    pieces.append(grad)
    if right:
        pieces.append(sp.MatMul(*right).T)
    return sp.MatMul(*pieces) if len(pieces) > 1 else grad


defvjp(sp.MatAdd)(lambda rhs, lhs, grad: [(arg, grad) for arg in rhs.args])
# constants pass nothing on (the 1 of a GRU's 1 - z)
for _constant in (sp.OneMatrix, sp.ZeroMatrix, sp.Identity):
    defvjp(_constant)(lambda rhs, lhs, grad: [])


@defvjp(sp.MatMul)
def _matmul(rhs: sp.MatMul, lhs, grad: sp.MatrixExpr):
    coeff, factors = rhs.as_coeff_matrices()
    if coeff != 1:   # -z: the scalar multiplies the gradient
        grad = sp.MatMul(coeff, grad)
    if len(factors) == 1:
        return [(factors[0], grad)]
    return [(f, _product(tuple(factors), grad, i)) for i, f in enumerate(factors)]



defvjp(sp.HadamardProduct)(lambda rhs, lhs, grad: [
    (f, sp.HadamardProduct(grad, *(g for j, g in enumerate(rhs.args) if j != i))) for i, f in enumerate(rhs.args)])


@defvjp(ElementwiseApplyFunction)
def _elementwise(rhs: ElementwiseApplyFunction, lhs: sp.MatrixSymbol | None, grad: sp.MatrixExpr):
    s = slope(rhs.function, lhs, rhs.expr)
    return [(rhs.expr, grad if s is None else sp.HadamardProduct(grad, s))]


def vjp(rhs: sp.Expr, lhs: sp.MatrixSymbol | None, grad: sp.MatrixExpr) -> list[tuple[sp.MatrixSymbol, sp.MatrixExpr]]:
    """The gradient reaching each leaf of `rhs`, by the table `VJPS`. `lhs` names the
    value of `rhs` (None inside an expression: a rule then cannot read its output)."""
    if isinstance(rhs, sp.MatrixSymbol):
        return [(rhs, grad)]
    rule = next((r for kind, r in VJPS.items() if isinstance(rhs, kind)), None)
    if rule is None:
        raise TypeError(f"no vector-Jacobian product for {type(rhs).__name__}")
    return [pair for arg, g in rule(rhs, lhs, grad) for pair in vjp(arg, None, g)]


def output_rule(unrolled: Unrolled, time: sp.Expr, scale: sp.Expr = sp.Integer(1)) -> tuple[sp.MatrixSymbol, sp.MatrixExpr]:
    """dE_t/d(logits) (or dE_t/dh when there is no output layer): the loss table's fused rule."""
    node, rule = LOSSES[unrolled.spec.loss.kind].rule(unrolled.at(time))
    return node, scale * rule


#: Batch size and run-time sequence length, as the generated module sees them.
BATCH, STEPS = sp.Symbol("B", integer=True, positive=True), sp.Symbol("T", integer=True, positive=True)


def loss_scale(spec: Spec, symbolic: bool = False) -> sp.Expr:
    """The reduction: mean divides by the batch size and, for every_step, by T.

    The derivation works on one sequence (B = 1, T = steps); the generated module keeps
    B and T as the sizes of the arrays it is given.
    """
    if spec.loss.reduction != "mean":
        return sp.Integer(1)
    steps = STEPS if symbolic else sp.Integer(spec.bptt.steps)
    batch = BATCH if symbolic else sp.Integer(1)
    return 1 / (batch * steps) if spec.loss.at == "every_step" else 1 / batch


@dataclass
class Backward:
    """The result of reverse mode over a list of assignments."""

    deltas: list[Assign] = field(default_factory=list)
    #: parameter -> [(step, contribution)] in backward order (several ages may share a step)
    uses: dict[sp.MatrixSymbol, list[tuple[sp.Expr, sp.MatrixExpr]]] = field(default_factory=lambda: defaultdict(list))
    #: leaf data (x_t, h_0, or h_{t-1} of a step rule) -> contributions
    leaves: dict[sp.MatrixSymbol, list[sp.MatrixExpr]] = field(default_factory=lambda: defaultdict(list))


def reverse(assigns: list[Assign], seeds: list[tuple[sp.MatrixSymbol, sp.MatrixExpr]], sym: Symbols,
            truncate: int = 0, givens: dict[sp.MatrixSymbol, sp.MatrixExpr] | None = None,
            style: str = "window") -> Backward:
    """Reverse mode over `assigns`, naming the adjoint of every pre-activation and logit.

    With window truncation each adjoint carries its age, the number of steps it has
    travelled back from its loss term, and contributions aged `truncate` or more are
    dropped. With chunk truncation the steps are cut into chunks of `truncate` steps and
    no gradient crosses a chunk border: the state h_j that ends a chunk (j a multiple of
    `truncate`) is read by the next chunk as a constant, its h0 (PyTorch's detach).
    `givens` are adjoints taken as known (the step rule's delta_{t+1}).
    """
    givens = givens or {}
    named = {**sym.cell.NAMED, **NAMED}
    chunk = bool(truncate) and style == "chunk"
    chunk_size = truncate
    if chunk:
        truncate = 0    # no ages: a chunk border cuts every path through it
    ages = list(range(truncate)) if truncate else [None]
    first_age = ages[0]
    defined = {a.lhs for a in assigns}
    pending: dict[tuple[sp.MatrixSymbol, int | None], list[sp.MatrixExpr]] = defaultdict(list)
    for node, expr in seeds:
        pending[(node, first_age)].append(expr)
    out = Backward()
    for a in reversed(assigns):
        q = sym.info[a.lhs]
        for age in ages:
            if a.lhs in givens:
                grad = sym(named[q.role], q.layer, q.time, age, q.gate)
            else:
                terms = pending.pop((a.lhs, age), [])
                if not terms:
                    continue
                grad = sp.MatAdd(*terms) if len(terms) > 1 else terms[0]
                if q.role in named:
                    name = sym(named[q.role], q.layer, q.time, age, q.gate)
                    out.deltas.append(Assign(name, grad, q.time, q.layer))
                    grad = name
            for leaf, expr in vjp(a.rhs, a.lhs, grad):
                lq = sym.info[leaf]
                if lq.role in PARAM_ROLES:
                    out.uses[leaf].append((a.time, expr))
                    continue
                leaf_age = age
                if truncate and leaf in defined:   # h0 and x_t are used where they are read
                    leaf_age = age + int(a.time - lq.time)
                    if leaf_age >= truncate:
                        continue
                if chunk and leaf in defined and lq.time != a.time and int(lq.time) % chunk_size == 0:
                    continue    # h_j ends a chunk: the next chunk reads it as its constant h0
                if leaf in defined:
                    pending[(leaf, leaf_age)].append(expr)
                else:
                    out.leaves[leaf].append(expr)
    return out


def _group(pairs: list[tuple[sp.Expr, sp.MatrixExpr]]) -> list[tuple[sp.Expr, sp.MatrixExpr]]:
    """Contributions per step, in increasing step order (ages of one step are added)."""
    by_step: dict[sp.Expr, list[sp.MatrixExpr]] = defaultdict(list)
    for when, expr in pairs:
        by_step[when].append(expr)
    return [(s, sp.MatAdd(*e) if len(e) > 1 else e[0]) for s, e in sorted(by_step.items(), key=lambda kv: kv[0])]


@dataclass
class Derivation:
    """Every gradient of one spec, as SymPy objects: form (a), the delta recursion."""

    unrolled: Unrolled
    deltas: list[Assign]
    seeds: list[tuple[sp.MatrixSymbol, sp.MatrixExpr]]
    uses: dict[sp.MatrixSymbol, list[tuple[sp.Expr, sp.MatrixExpr]]]
    totals: dict[sp.MatrixSymbol, sp.MatrixExpr]
    data_grads: dict[sp.MatrixSymbol, sp.MatrixExpr]
    #: the generic step t, from which the loop module is printed
    rule: "StepRule"
    #: the delta recursion of the recurrent layers seeded by an upstream gradient on every
    #: top hidden state (the module's `backward(dhs)`), from which the unrolled module is printed
    upstream: Backward

    @property
    def spec(self) -> Spec:
        return self.unrolled.spec

    @property
    def sym(self) -> Symbols:
        return self.unrolled.sym

    def kept_steps(self, s: int) -> range:
        """The steps whose terms the loss term at step s keeps (by truncation style)."""
        return kept_steps(self.spec, s)

    @property
    def scale(self) -> sp.Expr:
        """The reduction's factor on L (mean divides by B and T; the derivation has B = 1)."""
        return loss_scale(self.spec)


def derive(spec: Spec) -> Derivation:
    """Every gradient of one spec, once: reverse mode over the whole unrolled graph (form (a)),
    the generic step rule, and the recursion seeded by an upstream gradient."""
    unrolled = unroll(spec)
    sym = unrolled.sym
    scale = loss_scale(spec)
    seeds = [output_rule(unrolled, time, scale) for time in unrolled.loss_steps]
    style = spec.bptt.truncate_style
    back = reverse(unrolled.forward, seeds, sym, spec.bptt.truncate, style=style)
    uses = {p: _group(back.uses.get(p, [])) for p in sym.params()}
    totals = {p: (sp.MatAdd(*[e for _, e in c]) if len(c) > 1 else c[0][1]) if c
              else sp.ZeroMatrix(*p.shape) for p, c in uses.items()}
    data = {leaf: sp.MatAdd(*e) if len(e) > 1 else e[0] for leaf, e in back.leaves.items()}
    L = spec.model.layers
    recurrent = [a for a in unrolled.forward if a.layer is not None and a.layer <= L]
    upstream = reverse(recurrent, [(sym("hidden", L, time), sym("hidden_grad", L, time)) for time in unrolled.times],
                       sym, spec.bptt.truncate, style=style)
    return Derivation(unrolled, back.deltas, seeds, uses, totals, data, step_rule(spec, sym), upstream)


# --------------------------------------------------------------------------- the step rule

@dataclass
class LayerRule:
    """One layer's generic step t: forward, and backward given its upstream gradient."""

    layer: int
    forward: list[Assign]           # the layer's assignments at step t
    delta: list[Assign]             # the named adjoints at t (per age), from the upstream and step t+1's
    carried: list[sp.MatrixSymbol]  # step t+1's named adjoints that the rule reads
    uses: dict[sp.MatrixSymbol, sp.MatrixExpr]   # per-step contribution to each parameter
    down: sp.MatrixExpr | None      # gradient sent to the layer below (or to x_t)
    upstream: sp.MatrixSymbol       # the gradient arriving at h_t from above
    initial: dict[str, sp.MatrixExpr]   # state role -> gradient reaching it at step 0 (h_0, c_0)
    # an Elman layer's parts, from which its loop code is printed
    projection: sp.MatrixExpr | None = None   # the part of a_t without h_{t-1}: hoisted over all t
    recurrence: sp.MatrixExpr | None = None   # the part with h_{t-1}
    activation: sp.Expr | None = None         # h_t = f(a_t)


@dataclass
class StepRule:
    """The generic step of forward and backward, from which the loop code is printed."""

    spec: Spec
    sym: Symbols
    layers: list[LayerRule]
    output: list[Assign]            # logits (and prediction) at step t
    output_delta: Assign | None     # delta^y_t from the fused output rule
    output_uses: dict[sp.MatrixSymbol, sp.MatrixExpr]
    top_upstream: sp.MatrixExpr | None   # gradient reaching h^L_t from the output layer
    initial: dict[int, sp.MatrixExpr]     # gradient reaching h^l_0: the h0 gradient rule


def _sum(parts: list[sp.MatrixExpr] | None) -> sp.MatrixExpr | None:
    if not parts:
        return None
    return sp.MatAdd(*parts) if len(parts) > 1 else parts[0]


def step_rule(spec: Spec, sym: Symbols | None = None) -> StepRule:
    """Reverse mode over one symbolic step t, with step t+1's named adjoints (delta_{t+1},
    and a gated cell's delta^c_{t+1}, delta^h_{t+1}) taken as known.

    Truncation is not part of the rule: the loop code applies it by giving each delta an
    age axis and shifting the ages by one where a step t+1 adjoint is read.
    """
    sym = sym or Symbols(spec)
    now, after, first = step(sym, t), step(sym, t + 1), step(sym, sp.Integer(1))
    named = {**sym.cell.NAMED, **NAMED}
    layers = []
    L = spec.model.layers
    for l in range(1, L + 1):
        mine = [a for a in now if a.layer == l]
        h_now = next(a for a in mine if sym.info[a.lhs].role == "hidden")
        carried = {a.lhs: None for a in after if a.layer == l and sym.info[a.lhs].role in named}
        up = sym("hidden_grad", l, t)
        back = reverse(mine + [a for a in after if a.layer == l], [(h_now.lhs, up)], sym, givens=carried)
        below = sym("input", None, t) if l == 1 else sym("hidden", l - 1, t)
        uses = {}
        for p, c in back.uses.items():
            here = [e for time, e in c if time == t]   # step t+1 is only there for its adjoints
            if here:
                uses[p] = _sum(here)
        read = set().union(*(d.rhs.free_symbols for d in back.deltas))
        carried_read = [sym(named[sym.info[a].role], l, t + 1, None, sym.info[a].gate) for a in carried]
        # h_0 (and c_0) enter step 1: their gradients, given step 1's adjoints
        start = [a for a in first if a.layer == l]
        back0 = reverse(start, [], sym, givens={a.lhs: None for a in start if sym.info[a.lhs].role in named})
        initial = {role: _sum(back0.leaves.get(sym(role, l, sp.Integer(0)))) for role in sym.cell.STATE}
        rule = LayerRule(l, mine, back.deltas, [c for c in carried_read if c in read], uses,
                         _sum(back.leaves.get(below)), up, initial)
        if not sym.cell.GATES:
            a_now = next(a for a in mine if sym.info[a.lhs].role == "pre_activation")
            h_prev = sym("hidden", l, t - 1)
            terms = a_now.rhs.args
            rule.projection = sp.MatAdd(*[e for e in terms if h_prev not in e.free_symbols])
            rule.recurrence = sp.MatAdd(*[e for e in terms if h_prev in e.free_symbols])
            rule.activation = h_now.rhs
        layers.append(rule)
    # the output layer alone, seeded by the fused rule
    unrolled = Unrolled(spec, sym, [t])
    outs = [a for a in now if a.layer == L + 1]
    output_delta, output_uses, top = None, {}, None
    if spec.model.output_size:
        node, rule = output_rule(unrolled, t, loss_scale(spec, symbolic=True))
        back = reverse(outs, [(node, rule)], sym)
        output_delta = back.deltas[0]
        output_uses = {p: c[0][1] for p, c in back.uses.items()}
        top = back.leaves[sym("hidden", L, t)][0]
    else:
        top = output_rule(unrolled, t, loss_scale(spec, symbolic=True))[1]
    initial = {r.layer: r.initial["hidden"] for r in layers}
    return StepRule(spec, sym, layers, outs, output_delta, output_uses, top, initial)


# --------------------------------------------------------------------------- path sums

def kept_steps(spec: Spec, s: int) -> range:
    """The steps k whose terms the loss term E_s keeps in the path sum, by truncation style:
    full BPTT 1..s; window k > s - truncate (Williams & Peng BPTT(k;1)); chunk, the steps of
    s's own chunk of `truncate` steps (BPTT(k;k), PyTorch's detach at chunk borders)."""
    k = spec.bptt.truncate
    if not k:
        return range(1, s + 1)
    if spec.bptt.truncate_style == "chunk":
        return range((s - 1) // k * k + 1, s + 1)
    return range(max(1, s - k + 1), s + 1)


def _output_terms(unrolled: Unrolled, s: int, scale: sp.Expr, col) -> tuple[sp.MatrixExpr, dict]:
    """Form (b) at the output layer for the loss term E_s: the gradient reaching h^L_s (in
    column math; `col` transposes a row layout in and out) and the output parameters' terms."""
    sym, m = unrolled.sym, unrolled.spec.model
    L = m.layers
    _, rule = output_rule(unrolled, sp.Integer(s), scale)
    if not m.output_size:
        return col(rule), {}
    V = col(sym("output_weight", L + 1))
    terms = {sym("output_weight", L + 1): col(sp.MatMul(col(rule), col(sym("hidden", L, s)).T))}
    if m.bias:
        terms[sym("output_bias", L + 1)] = col(col(rule))
    return sp.MatMul(V.T, col(rule)), terms


def path_sums(spec: Spec, unrolled: Unrolled | None = None) -> dict[sp.MatrixSymbol, sp.MatrixExpr]:
    """Form (b): dL/dθ = Σ_s Σ_k dE_s/dh_s (Π_j ∂h_j/∂h_{j-1}) ∂⁺h_k/∂θ, with explicit Jacobians.

    Written in column-vector math (row layouts are transposed in and out), with the
    stacked state's Jacobian assembled block by block, and the kept (s, k) pairs of the
    truncation style applied to the sum (`kept_steps`).
    """
    unrolled = unrolled or unroll(spec)
    sym, m = unrolled.sym, spec.model
    L = m.layers
    # unevaluated transposes: letting SymPy distribute them over long products is slow
    col = (lambda e: sp.Transpose(e)) if sym.row else (lambda e: e)
    W = {l: col(sym("input_weight", l)) for l in range(1, L + 1)}
    U = {l: col(sym("recurrent_weight", l)) for l in range(1, L + 1)}
    act = ACTIVATIONS[m.activation]
    body = act.slope.xreplace({v: u})

    def D(l: int, k: int) -> sp.MatrixExpr:
        h = col(sym("hidden", l, k))
        return sp.Identity(h.shape[0]) if body == 1 else DiagMatrix(elementwise(body, h))

    def P(top: int, l: int, k: int) -> sp.MatrixExpr:
        """∂h^top_k / ∂a^l_k within one step: D W D W ... D."""
        factors = [D(top, k)]
        for j in range(top, l, -1):
            factors += [W[j], D(j - 1, k)]
        return sp.MatMul(*factors)

    def J(l: int, n: int, j: int) -> sp.MatrixExpr | None:
        """Block (l, n) of ∂s_j/∂s_{j-1}: ∂h^l_j/∂h^n_{j-1}."""
        return sp.MatMul(P(l, n, j), U[n]) if l >= n else None

    terms: dict[sp.MatrixSymbol, list[sp.MatrixExpr]] = defaultdict(list)
    scale = loss_scale(spec)
    for s in unrolled.loss_steps:
        s = int(s)
        g_top, output_terms = _output_terms(unrolled, s, scale, col)
        for p, e in output_terms.items():
            terms[p].append(e)
        # adjoint of the stacked state at step k from E_s alone: (J_{k+1}...J_s)^T g_s
        state: dict[int, sp.MatrixExpr] = {L: g_top}
        # the steps whose terms E_s keeps: window, s - k < truncate; chunk, k in s's chunk
        first = kept_steps(spec, s).start
        for k in range(s, first - 1, -1):
            for l in range(1, L + 1):
                parts = [sp.MatMul(P(top, l, k).T, state[top]) for top in range(l, L + 1) if top in state]
                if not parts:
                    continue
                delta = sp.MatAdd(*parts) if len(parts) > 1 else parts[0]
                below = sym("input", None, k) if l == 1 else sym("hidden", l - 1, k)
                terms[sym("input_weight", l)].append(col(sp.MatMul(delta, col(below).T)))
                terms[sym("recurrent_weight", l)].append(col(sp.MatMul(delta, col(sym("hidden", l, k - 1)).T)))
                if m.bias:
                    terms[sym("bias", l)].append(col(delta))
            if k - 1 < first:
                continue
            state = {n: sp.MatAdd(*[sp.MatMul(J(l, n, k).T, state[l]) for l in range(n, L + 1) if l in state])
                     for n in range(1, L + 1) if any(l in state for l in range(n, L + 1))}
    return {p: (sp.MatAdd(*terms[p]) if terms[p] else sp.ZeroMatrix(*p.shape)) for p in sym.params()}


# --------------------------------------------------------------------------- path sums of gated cells

@dataclass
class LocalJacobian:
    """One assignment of a step, `lhs = rhs(args)`, scalar-expanded on fresh symbols at the
    spec's sizes, and its Jacobian with respect to each argument by `sympy.Matrix.jacobian`
    (entries in row-major order of each matrix)."""

    lhs: sp.MatrixSymbol
    fresh: dict[sp.MatrixSymbol, sp.Matrix]     # argument -> its matrix of fresh symbols
    jacobians: dict[sp.MatrixSymbol, sp.Matrix]  # argument -> ∂vec(lhs)/∂vec(argument)


def _jacobian(entries: list[sp.Expr], wrt: list[sp.Symbol]) -> sp.Matrix:
    """`sympy.Matrix.jacobian`, calling `sympy.diff` only where the entry has the symbol (a
    pre-activation's entry i reads row i of each weight: most entries are 0)."""
    free = [e.free_symbols for e in entries]
    return sp.Matrix(len(entries), len(wrt), lambda i, j: sp.diff(entries[i], wrt[j]) if wrt[j] in free[i] else 0)


def step_jacobians(sym: Symbols, layer: int, backend) -> list[LocalJacobian]:
    """The Jacobians of one layer's step at the symbolic t, one per assignment, derived (never
    typed) with the step's elementwise functions applied by `backend` (a SymPy backend of
    `derive.evaluate`: σ and tanh as written, or uninterpreted). Composed in order they give
    ∂s_t/∂s_{t-1}, ∂s_t/∂below_t and ∂⁺s_t/∂θ (`gated_path_sums`)."""
    from derive.evaluate import evaluate
    sizes = sym.sizes()
    below = sym("input", None, t) if layer == 1 else sym("hidden", layer - 1, t)
    out = []
    for i, a in enumerate(sym.cell.step(sym, layer, t, below)):
        args = sorted((x for x in a.rhs.free_symbols if isinstance(x, sp.MatrixSymbol)), key=str)
        fresh = {}
        for j, arg in enumerate(args):
            rows, cols = (int(sp.sympify(d).xreplace(sizes)) for d in arg.shape)
            fresh[arg] = sp.Matrix(rows, cols, lambda r, c, j=j: sp.Symbol(f"j{layer}_{i}_{j}_{r}_{c}", real=True))
        value = list(evaluate(a.rhs, fresh, backend, sizes))
        out.append(LocalJacobian(a.lhs, fresh, {arg: _jacobian(value, list(m)) for arg, m in fresh.items()}))
    return out


def gated_path_sums(spec: Spec, unrolled: Unrolled, values: dict, backend) -> dict:
    """Form (b) for a gated cell, evaluated: dL/dθ = Σ_s Σ_k ∂E_s/∂s_s (Π_j ∂s_j/∂s_{j-1})
    ∂⁺s_k/∂θ over the kept (s, k) pairs (`kept_steps`), with the stacked state's Jacobian
    taken layer by layer within a step (the layer above reads h^l_k as its input).

    `values` holds the forward pass (numbers, or SymPy matrices); `backend` is the
    `derive.evaluate` backend that computed them. The Jacobians of each layer's step are
    derived once with SymPy (`step_jacobians`), then read at every step k: compiled by
    `lambdify` for numbers, substituted for symbols. The cost is O(T^2) Jacobian-vector
    products: `derive check` runs it at small T.
    """
    import numpy as np
    from derive.evaluate import NumPyBackend, SymPyBackend, evaluate
    from derive.rules.activations import stable
    sym, m = unrolled.sym, spec.model
    L = m.layers
    sizes = sym.sizes()
    numeric = isinstance(backend, NumPyBackend)
    steps = {l: step_jacobians(sym, l, SymPyBackend() if numeric else backend) for l in range(1, L + 1)}
    flat = (lambda x: np.asarray(x, dtype=float).reshape(-1, 1)) if numeric else (lambda x: sp.Matrix(list(x)))
    zeros = (lambda n: np.zeros((n, 1))) if numeric else (lambda n: sp.zeros(n, 1))
    dot = (lambda a, b: a @ b) if numeric else (lambda a, b: a * b)

    def reader(local: LocalJacobian):
        """The local Jacobians at one step, from the values of the assignment's arguments."""
        if numeric:
            args = [x for m in local.fresh.values() for x in m]
            pieces = list(local.jacobians.values())
            exprs = [stable(e) for piece in pieces for e in piece]
            compiled = sp.lambdify(args, exprs, modules=[{"Max": np.maximum, "Heaviside": np.heaviside}, "numpy"])

            def read(arg_values: list) -> list:
                out = compiled(*[float(x) for v in arg_values for x in np.ravel(v)])
                got, at = [], 0
                for piece in pieces:
                    size = piece.rows * piece.cols
                    got.append(np.array(out[at:at + size], dtype=float).reshape(piece.shape))
                    at += size
                return got
        else:
            def read(arg_values: list) -> list:
                table = {x: y for m, v in zip(local.fresh.values(), arg_values) for x, y in zip(m, sp.Matrix(v))}
                return [piece.xreplace(table) for piece in local.jacobians.values()]
        return read

    readers = {(l, i): reader(local) for l, locals_ in steps.items() for i, local in enumerate(locals_)}
    cache: dict[tuple[int, int], list] = {}

    def at_step(x: sp.MatrixSymbol, k: int) -> sp.MatrixSymbol:
        """The symbol of the step rule's t read at step k."""
        q = sym.info[x]
        return sym(q.role, q.layer, None if q.time is None else q.time.xreplace({t: sp.Integer(k)}), q.age, q.gate)

    def at(l: int, k: int) -> list:
        """Layer l's step k: [∂s_k/∂s_{k-1}, ∂s_k/∂below_k, ∂⁺s_k/∂θ for each θ], composing
        the local Jacobians in forward order (each step is read once)."""
        if (l, k) not in cache:
            below = sym("input", None, t) if l == 1 else sym("hidden", l - 1, t)
            previous = [sym(role, l, t - 1) for role in sym.cell.STATE]
            size = lambda x: int(sp.sympify(x.shape[0] * x.shape[1]).xreplace(sizes))
            eye = (lambda n: np.eye(n)) if numeric else sp.eye
            # d[node][leaf] = ∂vec(node)/∂vec(leaf), for the leaves s_{k-1}, below_k and θ
            d = {x: {x: eye(size(x))} for x in previous + [below] + layer_params[l]}
            for i, local in enumerate(steps[l]):
                local_values = readers[(l, i)]([values[at_step(arg, k)] for arg in local.fresh])
                row: dict = {}
                for arg, J in zip(local.fresh, local_values):
                    for leaf, D in d.get(arg, {}).items():
                        term = dot(J, D)
                        row[leaf] = row[leaf] + term if leaf in row else term
                d[local.lhs] = row
            state = [sym(role, l, t) for role in sym.cell.STATE]

            def block(leaf: sp.MatrixSymbol) -> Any:
                none = (lambda r, c: np.zeros((r, c))) if numeric else sp.zeros
                parts = [d[x].get(leaf, none(size(x), size(leaf))) for x in state]
                return np.vstack(parts) if numeric else sp.Matrix.vstack(*parts)

            whole = [block(x) for x in previous]
            cache[(l, k)] = [np.hstack(whole) if numeric else sp.Matrix.hstack(*whole), block(below),
                             *[block(p) for p in layer_params[l]]]
        return cache[(l, k)]

    shapes = {p: tuple(int(sp.sympify(e).xreplace(sizes)) for e in p.shape) for p in sym.params()}
    layer_params = {l: [p for p in sym.params() if sym.info[p].layer == l] for l in range(1, L + 1)}

    n = {l: sum(int(sp.sympify(sym(role, l, t).shape[0] * sym(role, l, t).shape[1]).xreplace(sizes))
                for role in sym.cell.STATE) for l in range(1, L + 1)}
    h_size = {l: int(sp.sympify(sym("hidden", l, t).shape[0] * sym("hidden", l, t).shape[1]).xreplace(sizes))
              for l in range(1, L + 1)}
    hidden_first = sym.cell.STATE.index("hidden") == 0

    def embed(l: int, g_h):
        """A gradient on h^l as one on the state s^l = (h, c): zeros for c."""
        rest = zeros(n[l] - h_size[l])
        parts = [g_h, rest] if hidden_first else [rest, g_h]
        if n[l] == h_size[l]:
            return g_h
        return np.vstack(parts) if numeric else sp.Matrix.vstack(*parts)

    col = (lambda e: sp.Transpose(e)) if sym.row else (lambda e: e)
    ev = lambda e: evaluate(e, values, backend, sizes)
    params = {p: [] for p in sym.params()}
    scale = loss_scale(spec)
    for s in unrolled.loss_steps:
        s = int(s)
        g_top, output_terms = _output_terms(unrolled, s, scale, col)
        g_top = ev(g_top)
        for p, e in output_terms.items():
            params[p].append(ev(e))
        state = {L: embed(L, flat(g_top))}   # the adjoint of s^l_k from E_s alone
        first = kept_steps(spec, s).start
        for k in range(s, first - 1, -1):
            total = {}
            for l in range(L, 0, -1):   # within step k, from the top layer down
                parts = [state[l]] if l in state else []
                if l < L and (l + 1) in total:
                    parts.append(embed(l, dot(at(l + 1, k)[1].T, total[l + 1])))
                if parts:
                    total[l] = parts[0] if len(parts) == 1 else parts[0] + parts[1]
            for l, g in total.items():
                for p, J in zip(layer_params[l], at(l, k)[2:]):
                    contribution = dot(J.T, g)
                    params[p].append(contribution.reshape(shapes[p]) if numeric else contribution.reshape(*shapes[p]))
            if k - 1 < first:
                break
            state = {l: dot(at(l, k)[0].T, g) for l, g in total.items()}
    return {p: sum(terms, np.zeros(shapes[p]) if numeric else sp.zeros(*shapes[p])) for p, terms in params.items()}
