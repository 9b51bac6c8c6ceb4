"""SymPy: the RNN unrolled for T steps, as assignments between matrix symbols.

The cell's step (`derive.cells`) is looped over the layers and the steps, followed by the
output layer; the loss terms come from the loss table. Everything is a matrix symbol of
`derive.symbols`, so the cost does not depend on the layer sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive.matrices import Assign, Softmax, elementwise
from derive.rules import ACTIVATIONS, LOSSES
from derive.rules.losses import At
from derive.spec import Spec
from derive.symbols import VECTOR_ROLES, Quantity, Symbols, t

__all__ = ["Assign", "Quantity", "Symbols", "Unrolled", "VECTOR_ROLES", "step", "t", "unroll"]


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
