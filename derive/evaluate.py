"""Evaluate the derivation's matrix expressions on numbers (NumPy) or on symbols (SymPy).

The proofs need the same expression tree evaluated two ways: with NumPy at the preset's
sizes, and with explicit SymPy matrices (small sizes) to show differences simplify to 0.
"""
from __future__ import annotations

from functools import lru_cache, reduce
from typing import Any, Callable

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from derive.matrices import LogSumExp, Softmax
from derive.rules.activations import stable


@lru_cache(maxsize=None)
def _numpy_function(function: sp.Lambda) -> Callable[[np.ndarray], np.ndarray]:
    modules = [{"Max": np.maximum, "Heaviside": np.heaviside}, "numpy"]
    return sp.lambdify(function.variables, stable(function.expr), modules=modules)


class NumPyBackend:
    def matmul(self, a: Any, b: Any) -> Any:
        return a @ b if np.ndim(a) and np.ndim(b) else a * b

    def hadamard(self, a: Any, b: Any) -> Any:
        return a * b

    def apply(self, function: sp.Lambda, x: np.ndarray) -> np.ndarray:
        return np.asarray(_numpy_function(function)(x), dtype=float) * np.ones_like(x)

    def softmax(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    def logsumexp(self, x: np.ndarray) -> np.ndarray:
        m = x.max()
        return np.array([[m + np.log(np.exp(x - m).sum())]])

    def diag(self, x: np.ndarray) -> np.ndarray:
        return np.diagflat(x)

    def constant(self, value: float, shape: tuple[int, int]) -> np.ndarray:
        return np.full(shape, value)

    def number(self, value: sp.Expr) -> float:
        return float(value)


class SymPyBackend:
    def matmul(self, a: Any, b: Any) -> Any:
        return a * b

    def hadamard(self, a: Any, b: Any) -> Any:
        return a.multiply_elementwise(b)

    def apply(self, function: sp.Lambda, x: sp.Matrix) -> sp.Matrix:
        return x.applyfunc(function)

    def softmax(self, x: sp.Matrix) -> sp.Matrix:
        e = x.applyfunc(sp.exp)
        return e / sum(e)

    def logsumexp(self, x: sp.Matrix) -> sp.Matrix:
        return sp.Matrix([[sp.log(sum(x.applyfunc(sp.exp)))]])

    def diag(self, x: sp.Matrix) -> sp.Matrix:
        return sp.diag(*x)

    def constant(self, value: sp.Expr, shape: tuple[int, int]) -> sp.Matrix:
        return sp.Matrix.ones(*shape) * value

    def number(self, value: sp.Expr) -> sp.Expr:
        return value


def evaluate(expr: sp.Expr, env: dict[sp.MatrixSymbol, Any], backend: Any,
             sizes: dict[sp.Symbol, int]) -> Any:
    """The value of a matrix expression, with every symbol looked up in `env`."""
    memo: dict[sp.Expr, Any] = {}

    def shape(e: sp.MatrixExpr) -> tuple[int, int]:
        return tuple(int(sp.sympify(d).xreplace(sizes)) for d in e.shape)

    def go(e: sp.Expr) -> Any:
        if e in memo:
            return memo[e]
        if isinstance(e, sp.MatrixSymbol):
            value = env[e]
        elif isinstance(e, sp.MatAdd):
            value = reduce(lambda a, b: a + b, map(go, e.args))
        elif isinstance(e, sp.MatMul):
            value = reduce(backend.matmul, map(go, e.args))
        elif isinstance(e, sp.HadamardProduct):
            value = reduce(backend.hadamard, map(go, e.args))
        elif isinstance(e, sp.MatPow) and e.exp.is_Integer and e.exp > 0:
            # SymPy folds a product of equal factors (U^T U^T) into a power
            base = go(e.base)
            value = reduce(backend.matmul, [base] * int(e.exp))
        elif isinstance(e, sp.Transpose):
            value = go(e.arg).T
        elif isinstance(e, ElementwiseApplyFunction):
            value = backend.apply(e.function, go(e.expr))
        elif isinstance(e, Softmax):
            value = backend.softmax(go(e.arg))
        elif isinstance(e, LogSumExp):
            value = backend.logsumexp(go(e.arg))
        elif isinstance(e, DiagMatrix):
            value = backend.diag(go(e.args[0]))
        elif isinstance(e, sp.OneMatrix):
            value = backend.constant(1, shape(e))
        elif isinstance(e, sp.ZeroMatrix):
            value = backend.constant(0, shape(e))
        elif isinstance(e, sp.Identity):
            value = backend.diag(backend.constant(1, (shape(e)[0], 1)))
        elif e.is_Number:
            value = backend.number(e)
        else:
            raise TypeError(f"cannot evaluate {type(e).__name__}: {e}")
        memo[e] = value
        return value

    return go(expr)
