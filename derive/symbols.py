"""The vocabulary shared by every stage: what each matrix symbol stands for.

Every quantity (x^l_t, a^l_t, h^l_t, the weights, ...) is a `MatrixSymbol` whose
dimensions are symbols (n_x, n_1, ...), so building and differentiating a graph costs
the same for any layer size. `Symbols` makes them and remembers the `Quantity` each
stands for; the printers use that to write it in the course's notation.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import notation
from derive.cells import CELLS
from derive.spec import Spec

#: The symbolic time index of the generic step rule.
t = sp.Symbol("t", integer=True, positive=True)

VECTOR_ROLES = ("input", "hidden", "pre_activation", "logits", "output", "target",
                "upstream", "delta", "output_delta", "hidden_grad", "projection",
                # gated cells: a gate's value, the LSTM's cell state, their adjoints
                "gate", "cell", "cell_delta", "hidden_delta", "saved")


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
        self.names = notation.Names(notation.PRESETS[spec.preset], dict(spec.notation.names), m.layers)

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
               for p in self.cell.PARAMS if p.present(m)]
        if m.output_size:
            out.append(self("output_weight", m.layers + 1))
            if m.bias:
                out.append(self("output_bias", m.layers + 1))
        return out
