"""Derivative rules as data: one row per activation.

Every body is a SymPy expression of a dummy scalar, so the handout prints it with a
LaTeX printer and the generated module prints it with a NumPy printer. Adding an
activation is one row. The fused output-and-loss rules (softmax with cross-entropy gives
p - y, ...) are matrix expressions and live in `bptt.output_rule`.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

#: The scalar a rule is written in: the pre-activation ``u`` or the output ``v``.
u, v = sp.symbols("u v", real=True)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``v = f(u)`` with ``f'`` written through the output ``v``."""

    name: str
    latex: str          # the function's name in a handout
    value: sp.Expr      # f(u)
    slope: sp.Expr      # f'(u) written in v = f(u), the textbook form (tanh' = 1 - v**2)
    slope_range: str    # where f' lies, for the vanishing-gradient remark of the handout


ACTIVATIONS: dict[str, Activation] = {
    row.name: row
    for row in (
        Activation("tanh", r"\tanh", sp.tanh(u), 1 - v**2, "(0, 1]"),
        # written through tanh so that a large |u| never overflows exp
        Activation("sigmoid", r"\sigma", (1 + sp.tanh(u / 2)) / 2, v * (1 - v), "(0, 1/4]"),
        Activation("relu", r"\operatorname{relu}", sp.Max(0, u), sp.Heaviside(v, 0), "{0, 1}"),
        Activation("identity", r"\operatorname{id}", u, sp.Integer(1), "{1}"),
    )
}

#: Output activations of the output layer (softmax acts on the whole vector).
OUTPUT_ACTIVATIONS = ("identity", "softmax", "sigmoid")

#: Loss kinds; `none` means the targets are the upstream gradient on the predictions.
LOSSES = ("mse", "cross_entropy", "bce", "none")

#: Loss kinds allowed without an output layer (the top hidden state is the prediction).
LOSSES_WITHOUT_OUTPUT_LAYER = ("mse", "none")
