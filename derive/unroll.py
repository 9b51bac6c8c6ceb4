"""SymPy: the RNN unrolled for T steps, as assignments between matrix symbols.

Every quantity (x^l_t, a^l_t, h^l_t, the weights, ...) is a `MatrixSymbol` whose
dimensions are symbols (n_x, n_1, ...), so building and differentiating the graph costs
the same for any layer size. `Symbols` remembers what each symbol stands for; the
printers use that to write it in the course's notation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive import notation
from derive.cells import CELLS
from derive.matrices import Assign, Softmax, elementwise
from derive.rules import ACTIVATIONS, LOSSES
from derive.rules.losses import At
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
    gate: str | None = None  # the gate of a gated cell's parameter or quantity


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
        self.cell = CELLS[spec.model.cell]
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
                 age: int | None = None, gate: str | None = None) -> sp.MatrixSymbol:
        q = Quantity(role, layer, None if time is None else sp.sympify(time), age, gate)
        if q in self._made:
            return self._made[q]
        if role in VECTOR_ROLES:
            shape = self.vector(self.dim(role, layer))
        elif role == "loss":
            shape = (1, 1)
        else:
            shape = self._param_shape(role, layer, gate)
        key = f"{role}[{layer}]@{q.time}#{age}" + (f".{gate}" if gate else "")
        symbol = sp.MatrixSymbol(key, *shape)
        self._made[q] = symbol
        self.info[symbol] = q
        return symbol

    def _param_shape(self, role: str, layer: int | None, gate: str | None = None) -> tuple[sp.Expr, sp.Expr]:
        if role == "output_weight":
            shape = (self.output_dim, self.hidden_dims[-1])
        elif role == "output_bias":
            return self.vector(self.output_dim)
        else:
            declared = next(p for p in self.cell.PARAMS if (p.role, p.gate) == (role, gate))
            words = {"hidden": self.hidden_dims[layer - 1],
                     "below": self.input_dim if layer == 1 else self.hidden_dims[layer - 2]}
            if len(declared.shape) == 1:
                return self.vector(words[declared.shape[0]])
            shape = tuple(words[w] for w in declared.shape)
        return shape[::-1] if self.row else shape

    def product(self, weight: sp.MatrixExpr, vector: sp.MatrixExpr) -> sp.MatrixExpr:
        """W x in column layout, x W in row layout."""
        return sp.MatMul(vector, weight) if self.row else sp.MatMul(weight, vector)

    def params(self) -> list[sp.MatrixSymbol]:
        """Every parameter in PARAMS order (CONVENTIONS.md): the cell's, layer by layer,
        then the output layer's."""
        m = self.spec.model
        out = [self(p.role, l, gate=p.gate) for l in range(1, m.layers + 1)
               for p in self.cell.PARAMS if m.bias or not p.bias]
        if m.output_size:
            out.append(self("output_weight", m.layers + 1))
            if m.bias:
                out.append(self("output_bias", m.layers + 1))
        return out


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

    def at(self, time: sp.Expr) -> At:
        """What the loss sees at a step, for the loss table."""
        m, sym = self.spec.model, self.sym
        return At(sym.row, self.prediction(time), sym("logits", None, time) if m.output_size else None,
                  m.output_activation if m.output_size else None,
                  sym("upstream" if self.spec.loss.kind == "none" else "target", None, time))


def step(sym: Symbols, time: sp.Expr) -> list[Assign]:
    """The forward equations of one time step: the cell layer by layer, then the output layer."""
    m = sym.spec.model
    out: list[Assign] = []
    below = sym("input", None, time)
    for l in range(1, m.layers + 1):
        out += sym.cell.step(sym, l, time, below)
        below = sym("hidden", l, time)
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


def unroll(spec: Spec, times: list[sp.Expr] | None = None) -> Unrolled:
    """The forward pass for steps 1..T, and the loss terms L = sum_t E_t (or E_T)."""
    sym = Symbols(spec)
    if times is None:
        times = [sp.Integer(k) for k in range(1, spec.bptt.steps + 1)]
    result = Unrolled(spec, sym, times)
    for time in times:
        result.forward += step(sym, time)
    last = [times[-1]] if spec.loss.at == "last_step" else times
    loss = LOSSES[spec.loss.kind]
    for time in last:
        result.losses.append(Assign(sym("loss", None, time), loss.value(result.at(time)), time))
        result.loss_steps.append(time)
    return result
