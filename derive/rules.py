"""Derivative rules as data: one row per activation, one row per (output, loss) pair.

Every body is a SymPy expression of dummy scalars, so the handout prints it with a
LaTeX printer and the generated module prints it with a NumPy printer. Adding an
activation is one row.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

#: The scalar a rule is written in: the pre-activation ``u`` or the output ``v``.
u, v = sp.symbols("u v", real=True)
#: Prediction, target and upstream-gradient scalars of the loss rules.
p, q, g = sp.symbols("p q g", real=True)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``v = f(u)`` with ``f'`` written through the output ``v``."""

    name: str
    latex: str          # the function's name in a handout
    value: sp.Expr      # f(u)
    slope: sp.Expr      # f'(u) written in v = f(u), the textbook form (tanh' = 1 - v**2)
    slope_range: str    # where f' lies, for the vanishing-gradient remark of the handout

    def at(self, x: sp.Expr) -> sp.Expr:
        return self.value.xreplace({u: x})

    def slope_at(self, x: sp.Expr) -> sp.Expr:
        """f'(x) as a function of x itself, for the scalar proof path."""
        return self.slope.xreplace({v: self.value}).xreplace({u: x})


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

#: (output activation, loss) -> dE/dz in terms of the prediction p and target q,
#: elementwise; softmax-with-mse needs the full Jacobian and is handled in bptt.
#: Pairs missing here are rejected by the spec validation.
OUTPUT_RULES: dict[tuple[str, str], sp.Expr] = {
    ("identity", "mse"): p - q,
    ("sigmoid", "mse"): (p - q) * p * (1 - p),
    ("softmax", "cross_entropy"): p - q,
    ("identity", "cross_entropy"): p - q,   # identity outputs are logits: p = softmax(z)
    ("sigmoid", "bce"): p - q,
    ("identity", "bce"): p - q,             # identity outputs are logits: p = sigmoid(z)
    ("identity", "none"): g,
    ("sigmoid", "none"): g * p * (1 - p),
}
#: Pairs whose rule needs the softmax Jacobian: dE/dz = p * (r - sum(p * r)).
SOFTMAX_JACOBIAN_RULES = {("softmax", "mse"): p - q, ("softmax", "none"): g}

#: Loss kinds allowed without an output layer (the top hidden state is the prediction).
LOSSES_WITHOUT_OUTPUT_LAYER = ("mse", "none")
