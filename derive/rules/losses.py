"""The loss table: one row per loss, the single source of truth for the loss.

A row gives, at one step (`At`): its value E_t as the textbook writes it (the handout and
the proofs), the same value in a numerically stable form (the generated module computes
it; `tests/test_rules.py` proves the two equal), the fused rule dE_t/d(node) that seeds the
delta recursion, the output activations it allows and the kind of target it reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
from sympy.codegen.numpy_nodes import logaddexp

from derive.matrices import LogSumExp, Softmax, elementwise, inner
from derive.rules.activations import ACTIVATIONS, u, v

#: Output activations of the output layer (softmax acts on the whole vector).
OUTPUT_ACTIVATIONS = ("identity", "softmax", "sigmoid")


@dataclass(frozen=True)
class At:
    """What the loss sees at one step."""

    row: bool                              # layout: vectors are rows
    prediction: sp.MatrixSymbol            # y_hat_t (the top hidden state without output layer)
    logits: sp.MatrixSymbol | None         # z_t, None without an output layer
    output_activation: str | None          # None without an output layer
    target: sp.MatrixSymbol                # y_t, or the upstream gradient for `none`

    def probabilities(self, activation: str) -> sp.MatrixExpr:
        """softmax(z) or σ(z): the prediction itself when the output layer applies it."""
        if self.output_activation == activation:
            return self.prediction
        return Softmax(self.logits) if activation == "softmax" else \
            elementwise(ACTIVATIONS["sigmoid"].value, self.logits)


def _through_output(at: At, residual: sp.MatrixExpr) -> tuple[sp.MatrixSymbol, sp.MatrixExpr]:
    """dE/dz from dE/dy_hat = residual, through the output activation (or dE/dh without one)."""
    if at.output_activation is None:
        return at.prediction, residual
    if at.output_activation == "identity":
        return at.logits, residual
    if at.output_activation == "sigmoid":
        slope = ACTIVATIONS["sigmoid"].slope.xreplace({v: u})
        return at.logits, sp.HadamardProduct(residual, elementwise(slope, at.prediction))
    # the softmax Jacobian: p * (r - (p . r) 1)
    p = at.prediction
    ones, dot = sp.OneMatrix(*p.shape), inner(at.row, p, residual)
    return at.logits, sp.HadamardProduct(p, residual - (sp.MatMul(dot, ones) if at.row else sp.MatMul(ones, dot)))


class Pick(sp.MatrixExpr):
    """y . z for a one-hot y, as the module computes it: the entry of z at y's class index (a
    gather; no one-hot row is built). A 1 x 1 matrix, as the inner product it stands for."""

    def __new__(cls, arg: sp.MatrixExpr, target: sp.MatrixSymbol):
        return super().__new__(cls, arg, target)

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[0]

    @property
    def target(self) -> sp.MatrixSymbol:
        return self.args[1]

    @property
    def shape(self):
        return (sp.Integer(1), sp.Integer(1))

    def _eval_transpose(self) -> "Pick":
        return self


def _mse(at: At) -> sp.MatrixExpr:
    e = at.prediction - at.target
    return sp.Rational(1, 2) * inner(at.row, e, e)


def _cross_entropy(at: At) -> sp.MatrixExpr:
    return -inner(at.row, at.target, elementwise(sp.log(u), at.probabilities("softmax")))


def _bce(at: At) -> sp.MatrixExpr:
    p, y = at.probabilities("sigmoid"), at.target
    ones = sp.OneMatrix(*y.shape)
    return -(inner(at.row, y, elementwise(sp.log(u), p)) + inner(at.row, ones - y, elementwise(sp.log(1 - u), p)))


def _none(at: At) -> sp.MatrixExpr:
    return inner(at.row, at.target, at.prediction)


@dataclass(frozen=True)
class Loss:
    """One loss kind. `target` is what `loss_and_grads` reads: "class" (integer indices),
    "probability" (floats in [0, 1]), "float", or "upstream" (the gradient on the predictions)."""

    name: str
    outputs: tuple[str, ...]      # output activations it allows
    without_output_layer: bool    # the top hidden state may be the prediction
    target: str
    value: Callable[[At], sp.MatrixExpr]     # E_t, the textbook form
    stable: Callable[[At], sp.MatrixExpr]    # E_t as the module computes it
    rule: Callable[[At], tuple[sp.MatrixSymbol, sp.MatrixExpr]]   # (node, dE_t/d node)
    #: code-facing: E_t with the class target read by index (`Pick`), for class targets;
    #: equal to `stable` when the target is one-hot (tests/test_module_table.py)
    gathered: Callable[[At], sp.MatrixExpr] | None = None


LOSSES: dict[str, Loss] = {row.name: row for row in (
    Loss("mse", OUTPUT_ACTIVATIONS, True, "float", _mse, _mse,
         lambda at: _through_output(at, at.prediction - at.target)),
    # with one-hot targets, -y . log softmax(z) = logsumexp(z) - y . z
    Loss("cross_entropy", ("softmax", "identity"), False, "class", _cross_entropy,
         lambda at: LogSumExp(at.logits) - inner(at.row, at.target, at.logits),
         lambda at: (at.logits, at.probabilities("softmax") - at.target),
         lambda at: LogSumExp(at.logits) - Pick(at.logits, at.target)),
    # log σ(z) = -softplus(-z) and log(1 - σ(z)) = -softplus(z): E = Σ softplus(z) - y . z
    Loss("bce", ("sigmoid", "identity"), False, "probability", _bce,
         lambda at: inner(at.row, sp.OneMatrix(*at.logits.shape), elementwise(logaddexp(0, u), at.logits))
         - inner(at.row, at.target, at.logits),
         lambda at: (at.logits, at.probabilities("sigmoid") - at.target)),
    Loss("none", OUTPUT_ACTIVATIONS, True, "upstream", _none, _none,
         lambda at: _through_output(at, at.target)),
)}
