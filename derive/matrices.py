"""Matrix-expression building blocks shared by the stages: softmax, log-sum-exp,
elementwise application, the inner product of two vectors in either layout, and the
assignment `lhs = rhs` that graphs are made of."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

#: The scalar a rule is written in: the pre-activation ``u`` or the output ``v``.
u, v = sp.symbols("u v", real=True)


class _OfVector(sp.MatrixExpr):
    """A function of a whole vector (not elementwise), kept unevaluated."""

    def __new__(cls, arg: sp.MatrixExpr):
        return super().__new__(cls, arg)

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[0]


class Softmax(_OfVector):
    """softmax over the entries of a vector."""

    @property
    def shape(self):
        return self.arg.shape

    def _eval_transpose(self) -> "Softmax":
        return Softmax(self.arg.T)   # softmax of the same entries, laid out as a row


class LogSumExp(_OfVector):
    """log Σ_k exp(z_k) of a vector, as a 1 x 1 matrix (the stable cross-entropy's term)."""

    @property
    def shape(self):
        return (sp.Integer(1), sp.Integer(1))

    def _eval_transpose(self) -> "LogSumExp":
        return self


def elementwise(function: sp.Expr, x: sp.MatrixExpr) -> ElementwiseApplyFunction:
    """f applied to every entry of x; `function` is written in the scalar `u`."""
    return ElementwiseApplyFunction(sp.Lambda(u, function), x)


def inner(row: bool, a: sp.MatrixExpr, b: sp.MatrixExpr) -> sp.MatrixExpr:
    """The 1x1 product a . b of two vectors laid out as rows (`row`) or columns."""
    return sp.MatMul(a, b.T) if row else sp.MatMul(a.T, b)


@dataclass(frozen=True)
class Assign:
    """One equation `lhs = rhs` of the forward pass or of the backward pass."""

    lhs: sp.MatrixSymbol
    rhs: sp.Expr
    time: sp.Expr | None = None
    layer: int | None = None
