"""The Elman cell: a_t = W x_t + U h_{t-1} + b, h_t = f(a_t) (row layout: x_t W + h_{t-1} U + b)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from derive.cells.base import Param
from derive.matrices import Assign, elementwise
from derive.rules import ACTIVATIONS

if TYPE_CHECKING:
    from derive.symbols import Symbols

#: The parameters of one layer, in PARAMS order (CONVENTIONS.md).
PARAMS = (Param("input_weight", None, ("hidden", "below")),
          Param("recurrent_weight", None, ("hidden", "hidden")),
          Param("bias", None, ("hidden",), bias=True))
#: The layer's state: what step t passes to step t + 1.
STATE = ("hidden",)
#: The gates, in PyTorch's order (none: an Elman cell has one pre-activation).
GATES: tuple[str, ...] = ()
#: The notation preset a spec gets when it names none.
NOTATION = "d2l"
#: Nodes whose adjoint gets a name (a delta) in the recursion.
NAMED = {"pre_activation": "delta"}


def step(sym: "Symbols", layer: int, time: sp.Expr, below: sp.MatrixSymbol) -> list[Assign]:
    """One layer at one step: the pre-activation, then the activation."""
    terms = [sym.product(sym("input_weight", layer), below),
             sym.product(sym("recurrent_weight", layer), sym("hidden", layer, time - 1))]
    if sym.spec.model.bias:
        terms.append(sym("bias", layer))
    a, h = sym("pre_activation", layer, time), sym("hidden", layer, time)
    activation = ACTIVATIONS[sym.spec.model.activation].value
    return [Assign(a, sp.MatAdd(*terms), time, layer), Assign(h, elementwise(activation, a), time, layer)]
