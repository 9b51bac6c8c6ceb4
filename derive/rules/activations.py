"""The activation table: one row per elementwise activation, the single source of truth.

A row names a SymPy function (σ is its own `Function`, so it prints as ``\\sigma`` and is
never rewritten), its slope written through its output (tanh' = 1 - v², the textbook
form the handouts print and the code computes from the stored h), the range of that
slope, and a numerically stable NumPy form (σ(u) = (tanh(u/2) + 1)/2 never overflows,
is exact to within 1.2e-16 absolutely, and costs four cheap in-place passes: the gates of an
LSTM or GRU apply it at every step. exp(-logaddexp(0, -u)) keeps the relative accuracy of
σ(u) < 1e-16 too, but is 6x slower). Adding an activation is one row: see `README.md`, "How to add".
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.matrices import u, v


class TableFunction(sp.Function):
    """An activation that prints by its row: LaTeX by name, NumPy by its stable form."""

    latex_name: str = ""
    definition: sp.Expr = u               # f(u) in elementary functions, for evalf
    numpy_form: sp.Expr = u
    derivative: sp.Expr = sp.Integer(1)   # f'(u), for sympy.diff in the proofs

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return self.derivative.xreplace({u: self.args[0]})

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.definition.xreplace({u: self.args[0]})._eval_evalf(prec)

    def _latex(self, printer) -> str:
        return rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"

    def stable(self) -> sp.Expr:
        """This application in the row's numerically stable NumPy form."""
        return self.numpy_form.xreplace({u: self.args[0]})


def elementary(expr: sp.Expr) -> sp.Expr:
    """`expr` with every table function written by its definition (Max, exp, ...)."""
    return expr.replace(lambda e: isinstance(e, TableFunction), lambda e: e.definition.xreplace({u: e.args[0]}))


def stable(expr: sp.Expr) -> sp.Expr:
    """`expr` with every table function in its stable NumPy form, for lambdify."""
    return expr.replace(lambda e: isinstance(e, TableFunction), lambda e: e.stable())


def table_function(name: str, latex: str, definition: sp.Expr, numpy_form: sp.Expr,
                   derivative) -> type[TableFunction]:
    """A `TableFunction` subclass; `derivative` maps the class to f'(u)."""
    cls = type(name, (TableFunction,), {"latex_name": latex, "definition": definition, "numpy_form": numpy_form})
    cls.derivative = derivative(cls)
    return cls


#: 0.5 as a float, so that the code reads 0.5 * np.tanh(0.5 * z) + 0.5
HALF = sp.Float(0.5)
sigmoid = table_function("sigmoid", r"\sigma", 1 / (1 + sp.exp(-u)), HALF * sp.tanh(HALF * u) + HALF,
                         lambda f: f(u) * (1 - f(u)))
relu = table_function("relu", r"\operatorname{relu}", sp.Max(u, 0), sp.Max(u, 0), lambda f: sp.Heaviside(u, 0))


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``v = f(u)`` with ``f'`` written through the output ``v``."""

    name: str
    value: sp.Expr      # f(u): a SymPy function of u
    slope: sp.Expr      # f'(u) written in v = f(u)
    slope_range: str    # where f' lies, for the vanishing-gradient remark of the handout


ACTIVATIONS: dict[str, Activation] = {
    row.name: row
    for row in (
        Activation("tanh", sp.tanh(u), 1 - v**2, "(0, 1]"),
        Activation("sigmoid", sigmoid(u), v * (1 - v), "(0, 1/4]"),
        # f'(0) is taken as 0: the slope through the output is 1 exactly where v > 0
        Activation("relu", relu(u), sp.Heaviside(v, 0), "{0, 1}"),
        Activation("identity", u, sp.Integer(1), "{1}"),
    )
}
