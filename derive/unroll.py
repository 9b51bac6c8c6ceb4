"""SymPy: the RNN unrolled for T steps, as assignments between matrix symbols.

Every quantity (x^l_t, a^l_t, h^l_t, the weights, ...) is a `MatrixSymbol` whose
dimensions are symbols (n_x, n_1, ...), so building and differentiating the graph costs
the same for any layer size. `Symbols` remembers what each symbol stands for; the
printers use that to write it in the course's notation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from derive import notation
from derive.rules import ACTIVATIONS, u
from derive.spec import Spec

#: The symbolic time index of the generic step rule.
t = sp.Symbol("t", integer=True, positive=True)

VECTOR_ROLES = ("input", "hidden", "pre_activation", "logits", "output", "target",
                "upstream", "delta", "output_delta", "hidden_grad", "projection")


@dataclass(frozen=True)
class Quantity:
    """What a matrix symbol stands for: a role, its layer, its time step and BPTT age."""

    role: str
    layer: int | None = None
    time: sp.Expr | None = None
    age: int | None = None   # with truncation: how many steps this delta has travelled back


class Softmax(sp.MatrixExpr):
    """softmax over the entries of a vector (a whole-vector function, not elementwise)."""

    def __new__(cls, arg: sp.MatrixExpr):
        return super().__new__(cls, arg)

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return self.arg.shape

    def _eval_transpose(self) -> "Softmax":
        return Softmax(self.arg.T)   # softmax of the same entries, laid out as a row


def elementwise(function: sp.Expr, x: sp.MatrixExpr) -> ElementwiseApplyFunction:
    """f applied to every entry of x; `function` is written in the scalar `u`."""
    return ElementwiseApplyFunction(sp.Lambda(u, function), x)


class Symbols:
    """Creates the matrix symbols of one spec and remembers the quantity of each."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.row = spec.layout == "row"
        m = spec.model
        self.input_dim = sp.Symbol("n_x", integer=True, positive=True)
        self.hidden_dims = [sp.Symbol(f"n_{l}", integer=True, positive=True)
                            for l in range(1, m.layers + 1)]
        self.output_dim = sp.Symbol("n_y", integer=True, positive=True)
        self.info: dict[sp.MatrixSymbol, Quantity] = {}
        self._made: dict[Quantity, sp.MatrixSymbol] = {}
        self.names = notation.Names(notation.PRESETS[spec.notation.preset],
                                    dict(spec.notation.names), m.layers)

    def sizes(self) -> dict[sp.Symbol, int]:
        """The dimension symbols with the spec's own sizes."""
        m = self.spec.model
        out = {self.input_dim: m.input_size, self.output_dim: max(m.output_size, 1)}
        out.update(zip(self.hidden_dims, m.hidden_sizes))
        return out

    def dim(self, role: str, layer: int | None) -> sp.Symbol:
        if role in ("input",) or (role == "hidden_grad" and layer == 0):
            return self.input_dim
        if role in ("logits", "output_delta") or (role in ("output", "target", "upstream")
                                                   and self.spec.model.output_size):
            return self.output_dim
        top = self.spec.model.layers
        return self.hidden_dims[(layer or top) - 1]

    def vector(self, n: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
        return (1, n) if self.row else (n, 1)

    def __call__(self, role: str, layer: int | None = None, time: sp.Expr | int | None = None,
                 age: int | None = None) -> sp.MatrixSymbol:
        q = Quantity(role, layer, None if time is None else sp.sympify(time), age)
        if q in self._made:
            return self._made[q]
        if role in VECTOR_ROLES:
            shape = self.vector(self.dim(role, layer))
        elif role == "loss":
            shape = (1, 1)
        else:
            shape = self._param_shape(role, layer)
        key = f"{role}[{layer}]@{q.time}#{age}"
        symbol = sp.MatrixSymbol(key, *shape)
        self._made[q] = symbol
        self.info[symbol] = q
        return symbol

    def _param_shape(self, role: str, layer: int | None) -> tuple[sp.Expr, sp.Expr]:
        n = self.hidden_dims[layer - 1] if role in ("input_weight", "recurrent_weight", "bias") else None
        if role == "input_weight":
            fan_in = self.input_dim if layer == 1 else self.hidden_dims[layer - 2]
            shape = (n, fan_in)
        elif role == "recurrent_weight":
            shape = (n, n)
        elif role == "output_weight":
            shape = (self.output_dim, self.hidden_dims[-1])
        elif role in ("bias", "output_bias"):
            return self.vector(n if role == "bias" else self.output_dim)
        else:
            raise KeyError(role)
        return shape[::-1] if self.row else shape

    def product(self, weight: sp.MatrixExpr, vector: sp.MatrixExpr) -> sp.MatrixExpr:
        """W x in column layout, x W in row layout."""
        return sp.MatMul(vector, weight) if self.row else sp.MatMul(weight, vector)

    def params(self) -> list[sp.MatrixSymbol]:
        """Every parameter in PARAMS order (CONVENTIONS.md)."""
        m = self.spec.model
        out = []
        for l in range(1, m.layers + 1):
            out += [self("input_weight", l), self("recurrent_weight", l)]
            if m.bias:
                out.append(self("bias", l))
        if m.output_size:
            out.append(self("output_weight", m.layers + 1))
            if m.bias:
                out.append(self("output_bias", m.layers + 1))
        return out


@dataclass(frozen=True)
class Assign:
    """One equation `lhs = rhs` of the forward pass or of the backward pass."""

    lhs: sp.MatrixSymbol
    rhs: sp.Expr
    time: sp.Expr | None = None
    layer: int | None = None


@dataclass
class Unrolled:
    """The forward pass for steps 1..T (or for the generic steps t, t+1)."""

    spec: Spec
    sym: Symbols
    times: list[sp.Expr]
    forward: list[Assign] = field(default_factory=list)
    losses: list[Assign] = field(default_factory=list)     # E_t = loss(y_hat_t, y_t), scalar
    loss_steps: list[sp.Expr] = field(default_factory=list)

    def prediction(self, time: sp.Expr) -> sp.MatrixSymbol:
        """The quantity the loss sees at a step: y_hat_t, or the top hidden state."""
        m = self.spec.model
        if not m.output_size:
            return self.sym("hidden", m.layers, time)
        if m.output_activation == "identity":
            return self.sym("logits", None, time)
        return self.sym("output", None, time)


def step(sym: Symbols, time: sp.Expr) -> list[Assign]:
    """The forward equations of one time step, layer by layer, then the output layer."""
    m = sym.spec.model
    act = ACTIVATIONS[m.activation]
    out: list[Assign] = []
    below = sym("input", None, time)
    for l in range(1, m.layers + 1):
        a = sym("pre_activation", l, time)
        terms = [sym.product(sym("input_weight", l), below),
                 sym.product(sym("recurrent_weight", l), sym("hidden", l, time - 1))]
        if m.bias:
            terms.append(sym("bias", l))
        out.append(Assign(a, sp.MatAdd(*terms), time, l))
        h = sym("hidden", l, time)
        out.append(Assign(h, elementwise(act.value, a), time, l))
        below = h
    if m.output_size:
        z = sym("logits", None, time)
        terms = [sym.product(sym("output_weight", m.layers + 1), below)]
        if m.bias:
            terms.append(sym("output_bias", m.layers + 1))
        out.append(Assign(z, sp.MatAdd(*terms), time, m.layers + 1))
        if m.output_activation == "softmax":
            out.append(Assign(sym("output", None, time), Softmax(z), time, m.layers + 1))
        elif m.output_activation == "sigmoid":
            sigmoid = ACTIVATIONS["sigmoid"].value
            out.append(Assign(sym("output", None, time), elementwise(sigmoid, z), time, m.layers + 1))
    return out


def inner(sym: Symbols, a: sp.MatrixExpr, b: sp.MatrixExpr) -> sp.MatrixExpr:
    """The 1x1 product a . b of two vectors in the spec's layout."""
    return sp.MatMul(a, b.T) if sym.row else sp.MatMul(a.T, b)


def loss_term(unrolled: Unrolled, time: sp.Expr) -> sp.Expr:
    """E_t as a 1x1 matrix expression of the prediction and target at one step."""
    sym, spec = unrolled.sym, unrolled.spec
    y_hat, y = unrolled.prediction(time), sym("target", None, time)
    kind = spec.loss.kind
    if kind == "mse":
        e = y_hat - y
        return sp.Rational(1, 2) * inner(sym, e, e)
    if kind == "none":
        return inner(sym, sym("upstream", None, time), y_hat)
    z = sym("logits", None, time)
    log = sp.log(u)
    if kind == "cross_entropy":
        probs = Softmax(z) if spec.model.output_activation == "identity" else y_hat
        return -inner(sym, y, elementwise(log, probs))
    # bce, written through the probabilities sigma(z)
    probs = y_hat if spec.model.output_activation == "sigmoid" else \
        elementwise(ACTIVATIONS["sigmoid"].value, z)
    ones = sp.OneMatrix(*y.shape)
    return -(inner(sym, y, elementwise(log, probs)) +
             inner(sym, ones - y, elementwise(sp.log(1 - u), probs)))


def unroll(spec: Spec, times: list[sp.Expr] | None = None) -> Unrolled:
    """The forward pass for steps 1..T, and the loss terms L = sum_t E_t (or E_T)."""
    sym = Symbols(spec)
    if times is None:
        times = [sp.Integer(k) for k in range(1, spec.bptt.steps + 1)]
    result = Unrolled(spec, sym, times)
    for time in times:
        result.forward += step(sym, time)
    last = [times[-1]] if spec.loss.at == "last_step" else times
    for time in last:
        result.losses.append(Assign(sym("loss", None, time), loss_term(result, time), time))
        result.loss_steps.append(time)
    return result
