"""The GRU cell (PyTorch `nn.GRU`, CONTRACT §4): r = σ(W_r x_t + U_r h_{t-1} + b_r),
z = σ(W_z x_t + U_z h_{t-1} + b_z); with the reset after the product (PyTorch, cuDNN)
n = tanh(W_n x_t + b_n + r ⊙ (U_n h_{t-1} + c_n)), before it (Cho et al. 2014, d2l)
n = tanh(W_n x_t + U_n (r ⊙ h_{t-1}) + b_n); h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp

from derive.cells.base import Param
from derive.matrices import Assign, elementwise
from derive.rules import ACTIVATIONS

if TYPE_CHECKING:
    from derive.symbols import Symbols

#: PyTorch's gate order: reset, update, new (the candidate).
GATES = ("r", "z", "n")
PARAMS = tuple(p for k in GATES for p in (
    Param("input_weight", k, ("hidden", "below")),
    Param("recurrent_weight", k, ("hidden", "hidden")),
    Param("bias", k, ("hidden",), bias=True),
    *([Param("recurrent_bias", k, ("hidden",), bias=True, reset="after")] if k == "n" else [])))
STATE = ("hidden",)
NOTATION = "pytorch"
NAMED = {"pre_activation": "delta", "hidden": "hidden_delta"}
CANDIDATE = "n"


def step(sym: "Symbols", layer: int, time: sp.Expr, below: sp.MatrixSymbol) -> list[Assign]:
    """The reset and update gates, the candidate n, then h_t between h_{t-1} and n."""
    m = sym.spec.model
    out = []
    h_prev = sym("hidden", layer, time - 1)
    gate = {k: sym("gate", layer, time, gate=k) for k in GATES}
    for k in GATES:
        terms = [sym.product(sym("input_weight", layer, gate=k), below)]
        U = sym("recurrent_weight", layer, gate=k)
        if k != CANDIDATE:
            terms.append(sym.product(U, h_prev))
        elif m.gru_reset == "before":
            terms.append(sym.product(U, sp.HadamardProduct(gate["r"], h_prev)))
        if m.bias:
            terms.append(sym("bias", layer, gate=k))
        if k == CANDIDATE and m.gru_reset == "after":
            inner = sym.product(U, h_prev)
            if m.bias:
                inner = sp.MatAdd(inner, sym("recurrent_bias", layer, gate=k))
            terms.append(sp.HadamardProduct(gate["r"], inner))
        pre = sym("pre_activation", layer, time, gate=k)
        out.append(Assign(pre, sp.MatAdd(*terms), time, layer))
        function = ACTIVATIONS[m.activation if k == CANDIDATE else "sigmoid"].value
        out.append(Assign(gate[k], elementwise(function, pre), time, layer))
    z, n = gate["z"], gate["n"]
    keep = sp.MatAdd(sp.OneMatrix(*z.shape), sp.MatMul(sp.Integer(-1), z))
    out.append(Assign(sym("hidden", layer, time),
                      sp.MatAdd(sp.HadamardProduct(keep, n), sp.HadamardProduct(z, h_prev)), time, layer))
    return out
