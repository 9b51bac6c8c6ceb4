"""SymPy printers for our notation: LaTeX for handouts, NumPy for the generated module.

Both look up what each matrix symbol stands for (`Symbols.info`) and print it in the
course's notation or as the array that holds it. Nothing is patched after printing.
"""
from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import NumPyPrinter

from derive.matrices import u
from derive.rules import TableFunction
from derive.symbols import VECTOR_ROLES, Symbols

#: The order of terms in a printed sum, as the documents write them: W x + U h + b, and
#: in a delta the error or the layer above first, then the recurrent term (e + V delta).
_TERM_ORDER = ("hidden_grad", "projection", "input_weight", "output_weight", "output", "hidden",
               "logits", "target", "upstream", "recurrent_weight", "bias", "output_bias", "delta",
               # gated cells: c_t = f ⊙ c_{t-1} + i ⊙ g; the adjoint carried from step t+1 last
               "cell", "hidden_delta", "cell_delta")


def _ordered(sym: Symbols, terms) -> list[sp.Expr]:
    """Terms ranked by role, then by time step (so step 10 follows step 9), then by text;
    the text (slow to print) is only looked at where role and step tie."""
    gates = tuple(getattr(sym.cell, "GATES", ()))

    def rank(term: sp.Expr) -> tuple[int, int, int]:
        if isinstance(term, (sp.OneMatrix, sp.Identity)):   # 1 - z: the constant first
            return (-2, 0, 0)
        symbols = term.atoms(sp.MatrixSymbol)
        if any(s not in sym.info for s in symbols):   # a document's own name (e^t): the error comes first
            return (-1, 0, 0)
        infos = [sym.info[s] for s in symbols]
        ranks = [_TERM_ORDER.index(q.role) for q in infos if q.role in _TERM_ORDER]
        times = [int(q.time) for q in infos if q.time is not None and q.time.is_Integer]
        # a gated cell's per-gate terms in the cell's gate order (i, f, g, o; r, z, n), by the
        # last gate a term reads (W_hn^T (delta^n ⊙ r) is the n gate's)
        order = [gates.index(q.gate) for q in infos if q.gate in gates]
        return (min(ranks) if ranks else len(_TERM_ORDER), max(times, default=0), max(order, default=0))

    keys = {term: rank(term) for term in terms}
    if len(set(keys.values())) == len(keys) == len(terms):
        return sorted(terms, key=keys.__getitem__)
    return sorted(terms, key=lambda e: (*keys[e], str(e)))


def _ordered_sum(printer: "HandoutLatexPrinter | LoopCodePrinter", expr: sp.MatAdd) -> str:
    """Terms in the documents' order; a term printed with a leading minus is subtracted."""
    terms = _ordered(printer.sym, expr.args)
    out = printer._print(terms[0])
    for term in terms[1:]:
        text = printer._print(term)
        out += f" - {text[1:].lstrip()}" if text.startswith("-") else f" + {text}"
    return out


class HandoutLatexPrinter(LatexPrinter):
    """LaTeX in the spec's notation: `W_{xh} x_{t} + W_{hh} h_{t-1} + b_{h}`."""

    def __init__(self, sym: Symbols, settings: dict | None = None, scalar: bool | None = None):
        super().__init__({"mul_symbol": None, **(settings or {})})
        self.sym = sym
        self.names = sym.names
        self._bound: dict[sp.Symbol, str] = {}
        self._sum_term = False   # printing a term of a matrix sum (1 - z: the ones are "1")
        #: every size is 1: print as scalars (no transposes, no diag, `\cdot` for the
        #: elementwise product), as a textbook writes a scalar model
        self.scalar = all(int(n) == 1 for n in sym.sizes().values()) if scalar is None else scalar

    def time(self, time: sp.Expr | None) -> str | None:
        return None if time is None else self._print(time)

    def _print_MatrixSymbol(self, expr: sp.MatrixSymbol, index: str | None = None) -> str:
        """The symbol in the notation; `index` (an entry of a vector) joins the time index.
        A symbol of no role (a document's own name, such as e^t) prints by its name."""
        if expr not in self.sym.info:
            return self._print(sp.Symbol(expr.name))
        q = self.sym.info[expr]
        time = self.time(q.time)
        if index is not None:
            time = index if time is None else f"{time},{index}"
        if q.role == "target":
            return self._target(time)
        if q.role == "upstream":
            return f"g_{{{time}}}"
        if q.role == "hidden_grad":
            return rf"\bar{{{self.names.latex('hidden', q.layer, time)}}}"
        if q.role == "loss":
            return f"E_{{{time}}}" if self.names.preset.time == "sub" else f"E^{{{time}}}"
        if q.role == "input":
            return self.names.latex("input", None, time)
        text = self.names.latex(q.role, q.layer, time, q.gate)
        if q.age is not None:
            text = rf"{text}^{{[{q.age}]}}" if "^" not in text else text.replace("^{", f"^{{[{q.age}]\\,", 1)
        return text

    def _target(self, time: str | None) -> str:
        head = self.names.latex_head("output")
        if time is None:
            return head
        return f"{head}_{{{time}}}" if self.names.preset.time == "sub" else f"{head}^{{{time}}}"

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        if expr in self._bound:
            return self._bound[expr]
        return super()._print_Symbol(expr, style)

    def _print_Dummy(self, expr: sp.Dummy) -> str:
        return self._bound[expr] if expr in self._bound else super()._print_Dummy(expr)

    def _print_MatrixElement(self, expr: sp.Expr) -> str:
        """An entry of a vector of the notation: `y_{t,c}`; a scalar model drops the index."""
        parent, i, j = expr.args
        if parent not in self.sym.info:     # an entry of softmax(o_t): (softmax(o_t))_c
            index = j if parent.shape[0] == 1 else i
            return rf"\left({self._print(parent)}\right)_{{{self._print(index)}}}"
        if self.scalar:
            return self._print(parent)
        index = j if parent.shape[0] == 1 else i
        return self._print_MatrixSymbol(parent, self._print(index))

    def _print_Norm(self, expr: sp.Expr) -> str:
        inner = self._print(expr.args[0])
        return rf"\left|{inner}\right|" if self.scalar else rf"\left\|{inner}\right\|"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A rational coefficient of a norm stays in front, as ½‖e‖² is written."""
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and coeff != 1 and rest.has(Norm):
            return rf"{self._print(coeff)} {self._print(rest)}"
        return super()._print_Mul(expr)

    def _print_Sum(self, expr: sp.Sum) -> str:
        """A double sum as two sums, the outer one first: Σ_t Σ_k (SymPy merges them into one)."""
        if len(expr.limits) == 1:
            return super()._print_Sum(expr)
        inner = expr.function
        for limit in expr.limits[:-1]:
            inner = sp.Sum(inner, limit)
        var, low, high = expr.limits[-1]
        return rf"\sum_{{{self._print(var)}={self._print(low)}}}^{{{self._print(high)}}} {self._print(inner)}"

    def _print_Slope(self, expr: sp.Expr) -> str:
        return rf"f'\left({self._print(expr.args[0])}\right)"

    def number(self, x: float) -> str:
        """A number of the worked example, to 4 decimals."""
        text = f"{float(x):.4f}"
        return "0.0000" if text == "-0.0000" else text

    def scientific(self, x: float) -> str:
        """A measured number over many orders of magnitude, as 1.0729 times 10 to the power -3."""
        mantissa, exponent = f"{float(x):.4e}".split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"

    def values(self, value, vertical: bool = False) -> str:
        """An array of numbers: a scalar, a vector (a column vector as a transposed row unless
        `vertical`) or a matrix."""
        import numpy as np
        a = np.atleast_2d(np.asarray(value, dtype=float))
        if a.size == 1:
            return self.number(a[0, 0])
        if a.shape[1] == 1 and not vertical:
            body = " & ".join(self.number(x) for x in a[:, 0])
            return rf"\begin{{pmatrix}} {body} \end{{pmatrix}}^{{\top}}"
        rows = r" \\ ".join(" & ".join(self.number(x) for x in row) for row in a)
        return rf"\begin{{pmatrix}} {rows} \end{{pmatrix}}"

    def _print_Transpose(self, expr: sp.Transpose) -> str:
        if self.scalar:   # a 1 x 1 matrix is its own transpose
            text = self._print(expr.arg)
            return rf"\left({text}\right)" if isinstance(expr.arg, (sp.MatAdd, sp.HadamardProduct)) else text
        inner = self._print(expr.arg)
        if not isinstance(expr.arg, sp.MatrixSymbol):
            inner = rf"\left({inner}\right)"
        elif "^" in inner:
            inner = f"{{{inner}}}"
        return f"{inner}^{{\\top}}"

    def _print_MatAdd(self, expr: sp.MatAdd) -> str:
        # a vector of ones as a term of a sum is written 1, as in 1 - z (the GRU's update)
        ones = [a for a in expr.args if isinstance(a, sp.OneMatrix)]
        if not ones:
            return _ordered_sum(self, expr)
        outer, self._sum_term = self._sum_term, True
        try:
            return _ordered_sum(self, expr)
        finally:
            self._sum_term = outer

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        coeff, factors = expr.as_coeff_matrices()
        if coeff == -1 and len(factors) == 1 and isinstance(factors[0], sp.HadamardProduct):
            return f"-{self._print(factors[0])}"   # - a ⊙ b: the Hadamard product binds as a product
        if self.scalar:
            factors = [f for f in factors if not isinstance(f, sp.Identity)] or factors
        parts = []
        for f in factors:
            text = self._print(f)
            parts.append(rf"\left({text}\right)" if isinstance(f, (sp.MatAdd, sp.HadamardProduct)) else text)
        body = " ".join(parts)
        if coeff == 1:
            return body
        if coeff == -1:
            return f"-{body}"
        return f"{self._print(coeff)} {body}"

    def _print_HadamardProduct(self, expr: sp.HadamardProduct) -> str:
        parts = []
        for f in expr.args:
            text = self._print(f)
            parts.append(rf"\left({text}\right)" if isinstance(f, (sp.MatAdd, sp.MatMul)) else text)
        return (r" \cdot " if self.scalar else r" \odot ").join(parts)

    def _print_ElementwiseApplyFunction(self, expr: ElementwiseApplyFunction) -> str:
        arg = self._print(expr.expr)
        (var,) = expr.function.variables
        body = expr.function.expr
        if isinstance(body, Slope) and body.args == (var,):
            return rf"f'\left({arg}\right)"
        if body.args == (var,) and (isinstance(body, TableFunction) or body.func in self._NAMES):
            return rf"{self.function_name(body.xreplace({var: u}))}\left({arg}\right)"
        bracketed = arg if isinstance(expr.expr, sp.MatrixSymbol) else rf"\left({arg}\right)"
        self._bound[var] = bracketed
        try:
            text = self._print(body)
        finally:
            del self._bound[var]
        return rf"\left({text}\right)" if isinstance(body, sp.Add) else text

    _NAMES = {sp.tanh: r"\tanh", sp.log: r"\log", sp.exp: r"\exp"}

    def function_name(self, value: sp.Expr) -> str:
        """The name of the function that `value` applies to u: σ, tanh, id, ..."""
        if isinstance(value, TableFunction):
            return value.latex_name
        if value == u:
            return r"\operatorname{id}"
        return self._NAMES[value.func]

    def _print_Softmax(self, expr: sp.Expr) -> str:
        return rf"\operatorname{{softmax}}\left({self._print(expr.args[0])}\right)"

    def _print_DiagMatrix(self, expr: sp.Expr) -> str:
        arg = expr.args[0]
        text = self._print(arg)
        if self.scalar:
            return text
        wrapped = isinstance(arg, ElementwiseApplyFunction) and isinstance(arg.function.expr, sp.Add)
        return rf"\operatorname{{diag}}{text}" if wrapped else rf"\operatorname{{diag}}\left({text}\right)"

    def _print_OneMatrix(self, expr: sp.OneMatrix) -> str:
        return "1" if self.scalar or self._sum_term else r"\mathbf{1}"

    def _print_Function(self, expr: sp.Function, exp: str | None = None) -> str:
        """tanh(c) of a quantity inside an elementwise body prints as the function of the
        quantity, as tanh(c) does elsewhere: tanh^2(c), not SymPy's tanh^{2}{(c )}."""
        if len(expr.args) == 1 and expr.args[0] in self._bound and expr.func in self._NAMES:
            power = f"^{{{exp}}}" if exp is not None else ""
            arg = self._bound[expr.args[0]]
            arg = arg if arg.startswith(r"\left(") else rf"\left({arg}\right)"
            return rf"{self._NAMES[expr.func]}{power}{arg}"
        return super()._print_Function(expr, exp)

    def _print_Identity(self, expr: sp.Identity) -> str:
        return "1" if self.scalar else "I"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        return rf"\mathbf{{1}}\left[{self._print(expr.args[0])} > 0\right]"


class LoopCodePrinter(NumPyPrinter):
    """NumPy for batch rows: every vector quantity is an array of rows (B, n).

    `refs` maps each symbol to the array expression that holds it in the current code
    section (`h_1[t + 1]`, `xs`, ...). Column-layout vectors are printed through their
    transpose, so `W x` becomes `x @ W.T`.
    """

    _module = "np"

    def __init__(self, sym: Symbols, refs: dict[sp.MatrixSymbol, str], steps: bool = False):
        super().__init__({"fully_qualified_modules": True, "strict": True})
        self.sym = sym
        self.refs = refs
        self.column = not sym.row
        #: the refs are whole sequences (T, B, n): products over them become one matrix
        #: product over the rows of all steps (NumPy's stacked matmul is several times slower)
        self.steps = steps
        #: weights with a contiguous transposed copy (BLAS is faster on those in a loop)
        self.transposed: dict[sp.MatrixSymbol, str] = {}
        self._bound: dict[sp.Symbol, str] = {}
        #: inputs whose refs hold integer token indices (symbol -> number of classes): a
        #: product with their one-hot rows picks rows of the weight instead (a gather)
        self.tokens: dict[sp.MatrixSymbol, int] = {}

    def _module_format(self, fqn: str, register: bool = True) -> str:
        return "np." + fqn.split(".", 1)[1] if fqn.startswith(("numpy.", "np.")) else fqn

    def _token(self, expr: sp.Expr) -> sp.MatrixSymbol | None:
        """The token input that `expr` (a sequence printed as rows) reads, if any."""
        arg = expr.arg if isinstance(expr, sp.Transpose) else expr
        return arg if arg in self.tokens and self._is_sequence(expr) else None

    # vectors are rows in code; column math is printed through its transpose
    def vector(self, expr: sp.MatrixExpr) -> str:
        """Print a vector-valued expression as batch rows."""
        return self._print(expr.T if self.column else expr)

    def _is_vector(self, expr: sp.Expr) -> bool:
        return isinstance(expr, sp.MatrixSymbol) and self.sym.info[expr].role in VECTOR_ROLES

    def _print_MatrixSymbol(self, expr: sp.MatrixSymbol) -> str:
        ref = self.refs[expr]
        return f"{ref}.T" if self.column and self._is_vector(expr) else ref

    def _print_Transpose(self, expr: sp.Transpose) -> str:
        arg = expr.arg
        if isinstance(arg, (sp.HadamardProduct, sp.MatAdd)):   # (a ⊙ b)^T = a^T ⊙ b^T: rows stay rows
            return self._print(arg.func(*[a.T for a in arg.args]))
        if isinstance(arg, sp.MatrixSymbol) and self.sym.info[arg].role in ("bias", "output_bias", "recurrent_bias"):
            return self.refs[arg]   # biases are 1-D arrays: both layouts broadcast over rows
        if self._is_vector(arg):
            return self.refs[arg] if self.column else f"{self.refs[arg]}.T"
        if isinstance(arg, sp.MatrixSymbol):
            return self.transposed.get(arg, f"{self.refs[arg]}.T")
        return f"({self._print(arg)}).T"

    def transposes(self, expr: sp.MatrixExpr) -> list[sp.MatrixSymbol]:
        """The weights that the printed form of a vector expression uses transposed."""
        rows = expr.T if self.column else expr
        return sorted({e.arg for e in rows.atoms(sp.Transpose) if isinstance(e.arg, sp.MatrixSymbol)
                       and not self._is_vector(e.arg)
                       and self.sym.info[e.arg].role not in ("bias", "output_bias", "recurrent_bias")}, key=str)

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        if expr in self._bound:
            return self._bound[expr]
        return super()._print_Symbol(expr)

    def _print_Dummy(self, expr: sp.Dummy) -> str:   # SymPy may rename u in Lambda(u, u)
        return self._bound[expr] if expr in self._bound else super()._print_Dummy(expr)

    def _print_MatAdd(self, expr: sp.MatAdd) -> str:
        ones = [a for a in expr.args if isinstance(a, sp.OneMatrix)]
        if ones and len(expr.args) == 2:   # 1 - z, as written
            (rest,) = [a for a in expr.args if a not in ones]
            text = self._print(rest)
            return f"1 - {self._paren(-rest)}" if text.startswith("-") else f"1 + {text}"
        return _ordered_sum(self, expr)

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        coeff, factors = expr.as_coeff_matrices()
        factors = [f for f in factors if not isinstance(f, sp.OneMatrix)]   # 1 x: broadcasting
        if len(factors) == 2 and factors[0].shape[0] == 1 and factors[1].shape[1] == 1:
            # a row times a column: one inner product per batch row, both printed as rows
            a, b = self._paren(factors[0]), self._paren(factors[1].T)
            body = f"np.sum({a} * {b}, axis=-1, keepdims=True)"
        elif len(factors) == 2 and self._token(factors[0]) is not None:
            # one-hot rows times a weight: the weight's rows that the tokens pick
            body = f"np.take({self._paren(factors[1])}, {self.refs[self._token(factors[0])]}, axis=0)"
        elif self.steps and len(factors) == 2 and self._is_sequence(factors[0]):
            body = f"_matmul_steps({self._paren(factors[0])}, {self._paren(factors[1])})"
        else:
            body = " @ ".join(self._paren(f) for f in factors)
        if coeff == 1:
            return body
        if coeff == -1:
            return f"-{body}"
        return f"{self._print(coeff)} * {body}"

    def _is_sequence(self, expr: sp.Expr) -> bool:
        """A vector quantity printed as rows (its transpose in column layout)."""
        arg = expr.arg if isinstance(expr, sp.Transpose) else expr
        return self._is_vector(arg) and (isinstance(expr, sp.Transpose) == self.column)

    def _paren(self, expr: sp.Expr) -> str:
        text = self._print(expr)
        return f"({text})" if isinstance(expr, (sp.MatAdd, sp.HadamardProduct)) else text

    def _print_HadamardProduct(self, expr: sp.HadamardProduct) -> str:
        # a product factor is bracketed: * and @ bind equally, left to right
        return " * ".join(f"({self._print(f)})" if isinstance(f, sp.MatMul) and len(f.args) > 1
                          and not isinstance(f.args[0], sp.Number) else self._paren(f) for f in expr.args)

    def _print_OneMatrix(self, expr: sp.OneMatrix) -> str:
        return "1"   # broadcast over the rows: 1 - z

    def _print_ElementwiseApplyFunction(self, expr: ElementwiseApplyFunction) -> str:
        (var,) = expr.function.variables
        body = expr.function.expr
        # f(x) needs no brackets around x, unless f prints as a formula in x (a table function)
        plain = isinstance(expr.expr, sp.MatrixSymbol) or (
            body.is_Function and body.args == (var,) and not isinstance(body, TableFunction))
        self._bound[var] = self._print(expr.expr) if plain else self._paren(expr.expr)
        try:
            text = self._print(expr.function.expr)
        finally:
            del self._bound[var]
        return f"({text})" if isinstance(expr.function.expr, sp.Add) else text

    def _print_Softmax(self, expr: sp.Expr) -> str:
        return f"_softmax({self._print(expr.args[0])})"

    def _print_LogSumExp(self, expr: sp.Expr) -> str:
        return f"_logsumexp({self.vector(expr.arg)})"

    def grand_total(self, expr: sp.MatrixExpr) -> str:
        """Σ over steps and batch rows of a per-step 1 x 1 expression (a loss), term by term."""
        out = ""
        terms = expr.args if isinstance(expr, sp.MatAdd) else (expr,)
        for term in sorted(terms, key=lambda e: e.could_extract_minus_sign()):   # subtracted terms last
            coeff, body = term.as_coeff_mmul() if isinstance(term, sp.MatMul) else (sp.Integer(1), term)
            factors = [f for f in (body.args if isinstance(body, sp.MatMul) else (body,))
                       if not isinstance(f, sp.OneMatrix) and f != 1]   # 1 . x sums x, as np.sum does
            if len(factors) == 2:   # a . b: the products of all rows, summed at once
                text = f"np.sum({self._paren(factors[0])} * {self._paren(factors[1].T)})"
            else:   # one vector (a column in the math is a row in the code) or a 1 x 1 term
                (f,) = factors
                text = f"np.sum({self._print(f.T if f.shape[1] == 1 and f.shape[0] != 1 else f)})"
            if coeff != 1 and coeff != -1:
                text = f"{self._print(abs(coeff))} * {text}"
            sign = "-" if coeff < 0 else "+"
            out = (f"-{text}" if sign == "-" else text) if not out else f"{out} {sign} {text}"
        return out

    def _print_Function(self, expr: sp.Function) -> str:
        # a table function prints as its row's stable NumPy form
        return self._print(expr.stable()) if isinstance(expr, TableFunction) else super()._print_Function(expr)

    def _print_Max(self, expr: sp.Max) -> str:
        a, b = expr.args
        return f"np.maximum({self._print(a)}, {self._print(b)})"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        return f"({self._print(expr.args[0])} > 0)"

    def _print_Rational(self, expr: sp.Rational) -> str:
        return f"{expr.p} / {expr.q}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp == -1:
            return f"1 / {self.parenthesize(base, 100)}"
        return f"{self.parenthesize(base, 100)} ** {self._print(exp)}"

    def accumulate(self, target: str, expr: sp.MatrixExpr) -> list[str]:
        """Statements that write a vector-valued sum into the array `target` in place:
        one `np.matmul(..., out=target)` for a product term, then `+=` for the others."""
        expr = expr.T if self.column else expr
        terms = _ordered(self.sym, expr.args if isinstance(expr, sp.MatAdd) else [expr])
        def plain_product(e: sp.Expr) -> bool:   # A @ B, not a scaled or inner product
            return (isinstance(e, sp.MatMul) and len(e.args) == 2
                    and all(isinstance(f, sp.MatrixExpr) for f in e.args)
                    and not (e.args[0].shape[0] == 1 and e.args[1].shape[1] == 1))

        product = next((e for e in terms if plain_product(e)), None)
        lines = []
        if product is not None and self._token(product.args[0]) is not None:
            # a gather into `target`: indices are checked, so mode="clip" only skips a buffer
            token = self.refs[self._token(product.args[0])]
            lines.append(f"np.take({self._paren(product.args[1])}, {token}, axis=0, out={target}, mode=\"clip\")")
            terms = [e for e in terms if e is not product]
        elif product is not None:
            a, b = (self._paren(f) for f in product.args)
            # np.dot into a preallocated row: the least overhead per call inside a loop
            call = "_matmul_steps" if self.steps else "np.dot"
            lines.append(f"{call}({a}, {b}, out={target})")
            terms = [e for e in terms if e is not product]
        else:
            lines.append(f"{target}[...] = {self._print(terms[0])}")
            terms = terms[1:]
        for term in terms:
            text = self._print(term)
            lines.append(f"{target} -= {text[1:]}" if text.startswith("-") else f"{target} += {text}")
        return lines

    def activate(self, target: str, function: sp.Lambda) -> list[str]:
        """Apply an elementwise activation to `target` in place (nothing for the identity)."""
        return self.apply_into(target, function, target)

    def apply_into(self, target: str, function: sp.Lambda, source: str) -> list[str]:
        """Statements that write function(source) into `target` elementwise.

        A body in which every operation has one non-constant operand (1 - v**2, tanh(v))
        becomes a chain of ufunc calls with `out=target`: no temporary arrays. Any other
        body is printed whole."""
        (var,) = function.variables
        chain = self._chain(function.expr, var)
        if chain is None:
            self._bound[var] = source
            try:
                return [f"{target}[...] = {self._print(function.expr)}"]
            finally:
                del self._bound[var]
        lines, current = [], source
        i = 0
        while i < len(chain):
            op, const = chain[i]
            if op == "multiply" and const == -1 and i + 1 < len(chain) and chain[i + 1][0] == "add":
                lines.append(f"np.subtract({self._print(chain[i + 1][1])}, {current}, out={target})")
                i += 2
            elif op == "multiply" and const == -1:
                lines.append(f"np.negative({current}, out={target})")
                i += 1
            elif op == "max0":
                lines.append(f"np.maximum({current}, 0, out={target})")
                i += 1
            elif op in ("add", "multiply"):
                lines.append(f"np.{op}({current}, {self._print(const)}, out={target})")
                i += 1
            elif const is not None:
                lines.append(f"{self._module_format(op)}({self._print(const)}, {current}, out={target})")
                i += 1
            else:
                lines.append(f"{self._module_format(op)}({current}, out={target})")
                i += 1
            current = target
        if current != target:
            lines.append(f"np.copyto({target}, {current})")
        return lines

    def _chain(self, body: sp.Expr, var: sp.Symbol) -> list[tuple[str, sp.Expr]] | None:
        """The operations from `var` outwards, if each has a single non-constant operand."""
        if body == var:
            return []
        if isinstance(body, (sp.Add, sp.Mul)):
            moving = [a for a in body.args if var in a.free_symbols]
            if len(moving) != 1:
                return None
            const = body.func(*[a for a in body.args if var not in a.free_symbols])
            inner = self._chain(moving[0], var)
            return None if inner is None else inner + [("add" if body.is_Add else "multiply", const)]
        if isinstance(body, sp.Pow) and body.exp == 2:
            inner = self._chain(body.base, var)
            return None if inner is None else inner + [("numpy.square", None)]
        if isinstance(body, sp.Max) and len(body.args) == 2 and sp.Integer(0) in body.args:
            inner = self._chain(next(a for a in body.args if a != 0), var)
            return None if inner is None else inner + [("max0", None)]
        if isinstance(body, TableFunction):   # the row's stable NumPy form
            return self._chain(body.stable(), var)
        if body.is_Function and len(body.args) == 2 and body.func.__name__ in self.known_functions:
            const, moving = body.args   # a binary ufunc with a constant first operand: logaddexp(0, x)
            inner = None if var in const.free_symbols else self._chain(moving, var)
            return None if inner is None else inner + [(self.known_functions[body.func.__name__], const)]
        if body.is_Function and len(body.args) == 1 and body.func.__name__ in self.known_functions:
            inner = self._chain(body.args[0], var)
            return None if inner is None else inner + [(self.known_functions[body.func.__name__], None)]
        return None

    def total(self, expr: sp.MatrixExpr) -> str:
        """Σ over steps and batch rows of a per-step contribution, in one contraction.

        `refs` must map the step's vectors to whole-sequence arrays (T, B, n).
        """
        if isinstance(expr, sp.MatAdd):
            return " + ".join(self.total(term) for term in expr.args)
        if self._is_vector(expr):
            return f"{self.refs[expr]}.sum(axis=(0, 1))"
        if isinstance(expr, sp.Transpose) and self._is_vector(expr.arg):
            return f"{self.refs[expr.arg]}.sum(axis=(0, 1))"
        if isinstance(expr, sp.HadamardProduct):   # a vector expression (a GRU's δ_n ⊙ r): its rows summed
            return f"({self.vector(expr)}).sum(axis=(0, 1))"
        coeff, factors = expr.as_coeff_matrices()
        if coeff == 1 and len(factors) == 2:
            leaves = [f.arg if isinstance(f, sp.Transpose) else f for f in factors]
            # a leaf that is an expression (a GRU's δ_n ⊙ r) is printed as rows over all steps
            arrays = [self.refs[f] if isinstance(f, sp.MatrixSymbol) else
                      self._print(f.T if f.shape[1] == 1 and f.shape[0] != 1 else f)
                      for f in leaves]
            if leaves[0] in self.tokens:   # onehot^T values: rows added where the tokens point
                return f"_scatter_steps({arrays[0]}, {arrays[1]}, {self.tokens[leaves[0]]})"
            if leaves[1] in self.tokens:   # values^T onehot: the same, transposed
                return f"_scatter_steps({arrays[1]}, {arrays[0]}, {self.tokens[leaves[1]]}).T"
            return f"_contract_steps({arrays[0]}, {arrays[1]})"
        raise TypeError(f"no contraction over steps for {expr}")


class Norm(sp.Expr):
    """The Euclidean norm of a vector, ‖e‖, for the textbook form of a loss (never evaluated)."""

    is_commutative = True

    def __new__(cls, arg: sp.Basic):
        return sp.Expr.__new__(cls, arg)


class Slope(sp.Function):
    """f'(z): the activation's slope at a pre-activation, before it is written out."""


class Partial(sp.Expr):
    """∂num/∂den as a display object for the path-sum form (printed, never evaluated)."""

    is_commutative = False

    def __new__(cls, num: sp.Basic, den: sp.Basic, direct: bool = False):
        return sp.Expr.__new__(cls, num, den, sp.true if direct else sp.false)


def _print_partial(self: HandoutLatexPrinter, expr: Partial) -> str:
    num, den, direct = expr.args
    mark = "^{+}" if direct == sp.true else ""
    return rf"\frac{{\partial{mark} {self._print(num)}}}{{\partial {self._print(den)}}}"


HandoutLatexPrinter._print_Partial = _print_partial
