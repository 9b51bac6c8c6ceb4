"""The LSTM cell (PyTorch `nn.LSTM`, CONTRACT §4): for each gate k in i, f, g, o
pre_k = W_k x_t + U_k h_{t-1} + b_k; i, f, o = σ(pre); g = tanh(pre_g);
c_t = f ⊙ c_{t-1} + i ⊙ g; h_t = o ⊙ tanh(c_t)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from derive.cells.base import Param
from derive.matrices import Assign, elementwise
from derive.rules import ACTIVATIONS

if TYPE_CHECKING:
    from derive.symbols import Symbols

#: PyTorch's gate order: input, forget, cell candidate, output.
GATES = ("i", "f", "g", "o")
PARAMS = tuple(p for k in GATES for p in (
    Param("input_weight", k, ("hidden", "below")),
    Param("recurrent_weight", k, ("hidden", "hidden")),
    Param("bias", k, ("hidden",), bias=True)))
#: A layer's state is the pair (h, c).
STATE = ("hidden", "cell")
NOTATION = "pytorch"
NAMED = {"pre_activation": "delta", "cell": "cell_delta", "hidden": "hidden_delta"}
#: The candidate gate, whose function is the model's activation (tanh); the others are σ.
CANDIDATE = "g"


def step(sym: "Symbols", layer: int, time: sp.Expr, below: sp.MatrixSymbol) -> list[Assign]:
    """The four gates' pre-activations and values, then the cell state and the output."""
    out = []
    h_prev = sym("hidden", layer, time - 1)
    for k in GATES:
        terms = [sym.product(sym("input_weight", layer, gate=k), below),
                 sym.product(sym("recurrent_weight", layer, gate=k), h_prev)]
        if sym.spec.model.bias:
            terms.append(sym("bias", layer, gate=k))
        pre = sym("pre_activation", layer, time, gate=k)
        out.append(Assign(pre, sp.MatAdd(*terms), time, layer))
        function = ACTIVATIONS[sym.spec.model.activation if k == CANDIDATE else "sigmoid"].value
        out.append(Assign(sym("gate", layer, time, gate=k), elementwise(function, pre), time, layer))
    i, f, g, o = (sym("gate", layer, time, gate=k) for k in GATES)
    c = sym("cell", layer, time)
    out.append(Assign(c, sp.MatAdd(sp.HadamardProduct(f, sym("cell", layer, time - 1)), sp.HadamardProduct(i, g)),
                      time, layer))
    tanh = ACTIVATIONS[sym.spec.model.activation].value
    out.append(Assign(sym("hidden", layer, time), sp.HadamardProduct(o, elementwise(tanh, c)), time, layer))
    return out
