"""The handout as data: sections of blocks, built once from a derivation.

A `Document` knows no output format and holds no sentence of prose: every sentence is a
`Message`, a key of the language's catalog (`derive/locale/<language>.toml`) with its
arguments, and every equation is LaTeX printed by `HandoutLatexPrinter` from the SymPy
objects of the derivation. The formats (`derive.formats.latex`, `derive.formats.markdown`)
render it, each with one small template per block kind.

Nothing here derives: everything comes from the `Derivation` handed to `build`.

Adding a block kind is one frozen dataclass below (a subclass of `Block` with its `kind`)
and one template `<kind>.<suffix>.j2` per format.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, ClassVar, Union

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix
from sympy.matrices.expressions.matexpr import MatrixElement

from derive.emit.printers import HandoutLatexPrinter, Norm, Partial, Slope, _ordered
from derive.rules import ACTIVATIONS, u, v
from derive.spec import SpecError

if TYPE_CHECKING:  # the derivation and the numbers are handed in, never made here
    from derive.bptt import Derivation
    from derive.numbers import Numbers

# --------------------------------------------------------------------------- inline runs


@dataclass(frozen=True)
class Text:
    """Plain text (a name, a number, a command): escaped by each format."""

    text: str


@dataclass(frozen=True)
class Math:
    """Inline math, already LaTeX (printed from SymPy objects)."""

    latex: str


@dataclass(frozen=True)
class Code:
    """A literal to be set in a monospace font (a Python name, a command)."""

    text: str


@dataclass(frozen=True)
class Message:
    """A sentence (or a phrase) of the catalog: `key` names it, `args` fill its placeholders;
    `count` picks the plural form when the catalog gives the message one per plural category."""

    key: str
    args: tuple[tuple[str, "Inline"], ...] = ()
    count: int | None = None


Inline = Union[Text, Math, Code, Message]


def msg(key: str, count: int | None = None, **args: Inline) -> Message:
    return Message(key, tuple(sorted(args.items())), count)


# --------------------------------------------------------------------------- blocks


class Block:
    """A block of a section; `kind` names its template in every format."""

    kind: ClassVar[str]


@dataclass(frozen=True)
class Paragraph(Block):
    """Sentences, one per line, optionally after a run-in heading (`lead`)."""

    kind: ClassVar[str] = "paragraph"
    sentences: tuple[Inline, ...]
    lead: Inline | None = None


@dataclass(frozen=True)
class Line:
    """One line of a displayed equation: `lhs op rhs`, all LaTeX. `label` names it (the
    unrolled module cites it; LaTeX keeps it as a comment); `tag` is its printed number,
    given only to the equations the text refers to."""

    lhs: str
    op: str
    rhs: str
    label: str
    tag: str = ""


@dataclass(frozen=True)
class Equations(Block):
    """Displayed, labelled equations: one line is an equation, several are aligned at `op`."""

    kind: ClassVar[str] = "equations"
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Table(Block):
    """A table; a `wide` one (prose in its last column) spans the line and wraps that column."""

    kind: ClassVar[str] = "table"
    header: tuple[Inline, ...]
    rows: tuple[tuple[Inline, ...], ...]
    wide: bool = False


@dataclass(frozen=True)
class Items(Block):
    """A bulleted list."""

    kind: ClassVar[str] = "items"
    entries: tuple[Inline, ...]


@dataclass(frozen=True)
class Figure(Block):
    """A graphic (a file stem the format knows how to include), its caption and label."""

    kind: ClassVar[str] = "figure"
    graphic: str
    caption: Inline
    label: str


@dataclass(frozen=True)
class Remark(Block):
    """A boxed remark: a run-in heading and its sentences, set apart from the text."""

    kind: ClassVar[str] = "remark"
    lead: Inline
    sentences: tuple[Inline, ...]


@dataclass(frozen=True)
class Node:
    """A node of a diagram: its name (a TikZ identifier), position (cm) and label (LaTeX)."""

    name: str
    x: str
    y: str
    label: Math


@dataclass(frozen=True)
class Edge:
    """An arrow of a diagram; `style` is `forward` or `backward` (the delta flow)."""

    source: str
    target: str
    label: Inline
    style: str
    arrow: Math          # how a text format draws it
    source_label: Math
    target_label: Math


@dataclass(frozen=True)
class Diagram(Block):
    """A drawing of nodes and arrows (TikZ in LaTeX, a table of arrows in Markdown)."""

    kind: ClassVar[str] = "diagram"
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    caption: Inline


@dataclass(frozen=True)
class Plot(Block):
    """Curves on a logarithmic y axis (pgfplots in LaTeX, a table in Markdown): `rows` are
    (x, y_1, ..., y_n), numbers already written as text; `legends` name the n curves."""

    kind: ClassVar[str] = "plot"
    xlabel: Inline
    ylabel: Inline
    legends: tuple[Inline, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: Inline
    table: tuple[tuple[Inline, ...], ...]   # the same numbers as math, for a table


@dataclass(frozen=True)
class Section:
    title: Inline
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    language: str
    name: str            # the spec's name (a Python identifier)
    command: str         # the command that regenerates the outputs
    title: Inline
    author: Inline
    lead: Paragraph      # the opening paragraph, before the first section
    sections: tuple[Section, ...]


# --------------------------------------------------------------------------- catalogs

#: Where the message catalogs live, one `<language>.toml` each.
LOCALE = "locale"

#: The CLDR plural category of a count, per language: a message that depends on a count
#: is a table of forms by category in the catalog (`one = "..."`, `other = "..."`).
PLURAL_RULES = {
    "en": lambda n: "one" if n == 1 else "other",
}
PLURAL_CATEGORIES = {"zero", "one", "two", "few", "many", "other"}

#: A message: one string, or its plural forms by category.
Pattern = Union[str, dict[str, str]]


@lru_cache(maxsize=None)
def catalog(language: str) -> dict[str, Pattern]:
    """The messages of one language, keyed `table.key` as written in its TOML file."""
    import tomllib
    folder = resources.files("derive").joinpath(LOCALE)
    path = folder.joinpath(f"{language}.toml")
    if not (language.isascii() and language.isalpha() and language in PLURAL_RULES and path.is_file()):
        raise SpecError([f"language: no catalog for {language!r}; available: {', '.join(languages())}"])
    out: dict[str, Pattern] = {}

    def flatten(prefix: str, table: dict) -> None:
        for key, value in table.items():
            if isinstance(value, dict) and not ("other" in value and set(value) <= PLURAL_CATEGORIES):
                flatten(f"{prefix}{key}.", value)
            else:
                out[prefix + key] = value
    flatten("", tomllib.loads(path.read_text("utf-8")))
    return out


def pattern(language: str, message: Message) -> str:
    """The catalog's text of `message`: its plural form for `message.count` if it has forms."""
    try:
        found = catalog(language)[message.key]
    except KeyError:
        raise KeyError(f"catalog {language}: no message {message.key!r}") from None
    if isinstance(found, str):
        return found
    if message.count is None:
        raise KeyError(f"catalog {language}: {message.key!r} has plural forms but no count was given")
    return found.get(PLURAL_RULES[language](message.count), found["other"])


def languages() -> list[str]:
    folder = resources.files("derive").joinpath(LOCALE)
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


# --------------------------------------------------------------------------- the handout

#: What each source document wrote loosely (catalog key of the sentence that names it),
#: by notation preset; the corrected form is printed in math by `_Handout.notes`.
SLIPS = {
    "doc000": ("slip.doc000_update", "slip.doc000_residual", "slip.doc000_transposes"),
    "doc003": ("slip.doc003_chain",),
    "d2l": ("slip.d2l_slope",),
}


#: The gate on a gated cell's additive path: an LSTM's forget gate scales c_{t-1}, a GRU's update
#: gate h_{t-1} (PyTorch's convention, h_t = z ⊙ h_{t-1} + (1 - z) ⊙ n_t).
KEEP = {"lstm": "f", "gru": "z"}

#: The order of the gate blocks in each framework's stacked weights, in its own letters, and
#: which of this cell's gates (PyTorch's letters) each letter is (issue 14, the convention box).
GATE_ORDERS = {
    "lstm": (("PyTorch", "ifgo", "ifgo"), ("Keras", "ifco", "ifgo"), ("ONNX", "iofc", "iofg"),
             ("CS231n", "ifog", "ifog")),
    "gru": (("PyTorch", "rzn", "rzn"), ("Keras", "zrh", "zrn"), ("ONNX", "zrh", "zrn")),
}


def equation_labels(d: Derivation) -> dict[tuple[str, sp.MatrixSymbol], str]:
    """The names (`eq:...`) of the equations that define a forward quantity, a delta or
    a total, keyed by what they define; the unrolled module cites the same names."""
    name, sym = d.spec.name, d.sym
    out = {}
    for time in d.unrolled.times:
        for i, a in enumerate(x for x in d.unrolled.forward if x.time == time):
            out["fwd", a.lhs] = f"eq:{name}:fwd:{int(time)}:{i}"
        for i, a in enumerate(x for x in d.deltas if x.time == time):
            out["delta", a.lhs] = f"eq:{name}:delta:{int(time)}:{i}"
    for p in d.uses:
        q = sym.info[p]
        out["total", p] = f"eq:{name}:total:{sym.names.python(q.role, q.layer, q.gate)}"
    return out


#: The most lines a table of a gated cell's worked example may take (it must fit on one page).
PAGE_LINES = 60

#: The widest a line of a gated cell's equations may be, in `_width` units (about 4 pt each).
WIDTH = 80


def _width(latex: str) -> int:
    """A rough printed width of a line of LaTeX math: its symbols, with every command one."""
    text = re.sub(r"\\(left|right|top|quad|,)\b", "", latex)
    return len(re.sub(r"[{}^_ ]", "", re.sub(r"\\[a-zA-Z]+", "x", text)))


def _is_preset(spec) -> bool:
    """True when `spec` is one of the bundled presets, unchanged (it then follows its document)."""
    from derive.spec import preset, preset_names
    return spec.name in preset_names() and preset(spec.name) == spec


def build(derivation: Derivation, command: str, language: str = "en", numbers: Numbers | None = None) -> Document:
    """The handout of one derivation, in one language (checked against its catalog);
    `numbers` (from `derive.numbers`) adds the worked example and the vanishing-gradient plot."""
    catalog(language)
    h = _Handout(derivation, command, numbers)
    spec = derivation.spec
    source = msg(f"source.{spec.preset}")
    layout = msg(f"layout.{spec.layout}")
    first = msg("intro.follows", source=source, layout=layout) if h.preset else \
        msg("intro.custom", spec=Code(spec.name), source=source, layout=layout)
    lead = Paragraph((first, msg("intro.printed")))
    if h.gated:   # an LSTM or GRU: its gates, the additive path, the frameworks' conventions
        sections = (h.model(), h.bridge(), h.gates(), h.forward(), h.loss(), h.deltas(), h.grads(), h.paths(),
                    h.additive(), h.conventions(), h.example(), h.proof())
    else:
        sections = (h.model(), h.bridge(), h.forward(), h.loss(), h.deltas(), h.grads(), h.paths(),
                    h.vanishing(), h.example(), h.training(), h.proof(), h.notes())
    return Document(language, spec.name, command, Text(spec.title or spec.name),
                    msg("author", spec=Code(spec.name)), lead, tuple(s for s in sections if s is not None))


class _ElmanSymbols:
    """The symbols of one spec plus those of an Elman cell in the same notation (its recurrent
    weight and pre-activation), for a gated handout's comparison with the Elman product."""

    def __init__(self, sym, layer: int):
        from derive.symbols import Quantity
        self._sym, self._layer, self._quantity = sym, layer, Quantity
        self.info = dict(sym.info)
        n = sym.hidden_dims[layer - 1]
        self.weight = self._add(sp.MatrixSymbol(f"elman:recurrent_weight[{layer}]", n, n), "recurrent_weight")

    def _add(self, symbol: sp.MatrixSymbol, role: str, time=None) -> sp.MatrixSymbol:
        self.info[symbol] = self._quantity(role, self._layer, time)
        return symbol

    def pre_activation(self, time) -> sp.MatrixSymbol:
        n = self._sym.hidden_dims[self._layer - 1]
        return self._add(sp.MatrixSymbol(f"elman:pre_activation[{self._layer}]@{time}", *self._sym.vector(n)),
                         "pre_activation", sp.sympify(time))

    def __getattr__(self, name: str):
        return getattr(self._sym, name)


class _Handout:
    """The sections of the handout, one method each, from one derivation."""

    t, k, j = sp.symbols("t k j", integer=True, positive=True)
    tau = sp.Symbol("tau", integer=True, positive=True)      # the truncation window
    eta = sp.Symbol("eta", positive=True)

    def __init__(self, derivation: Derivation, command: str, numbers: Numbers | None = None):
        self.d, self.spec, self.command = derivation, derivation.spec, command
        self.sym, self.m = derivation.sym, derivation.spec.model
        self.P = HandoutLatexPrinter(self.sym)
        self.Pn = HandoutLatexPrinter(self.sym, {"order": "none"})   # terms in the order written
        self.scalar = self.P.scalar
        self.L, self.T, self.name = self.m.layers, self.spec.bptt.steps, self.spec.name
        self.labels = equation_labels(derivation)
        self.act = ACTIVATIONS[self.m.activation]
        self.numbers = numbers
        self.notation = self.spec.preset
        self.preset = _is_preset(self.spec)
        self.tags: dict[str, str] = {}
        #: a gated cell (LSTM, GRU): its gates in PyTorch's order, and the candidate's letter
        self.cell = self.m.cell
        self.gated = bool(self.sym.cell.GATES)
        self.gate_keys: tuple[str, ...] = tuple(self.sym.cell.GATES)
        # the index of an output entry: a letter the notation does not already use
        names = self.sym.names
        taken = {self.python(p) for p in self.sym.params()} | \
            {names.base[r] for r in ("input", "hidden", "pre_activation", "output", "logits") if r in names.base}
        self.c = sp.Symbol(next(x for x in ("c", "m", "q", "r") if x not in taken), integer=True, positive=True)

    # ----------------------------------------------------------------- helpers

    def tag(self, key: str) -> str:
        """The number of an equation the text refers to (numbered in order of appearance)."""
        self.tags[key] = str(len(self.tags) + 1)
        return self.tags[key]

    def ref(self, key: str) -> Text:
        return Text(f"({self.tags[key]})")

    def python(self, p: sp.MatrixSymbol) -> str:
        q = self.sym.info[p]
        return self.sym.names.python(q.role, q.layer, q.gate)

    def tex(self, expr: sp.Basic | str) -> str:
        return expr if isinstance(expr, str) else self.P.doprint(expr)

    def math(self, expr: sp.Basic | str) -> Math:
        return Math(self.tex(expr))

    def line(self, lhs: sp.Basic | str, rhs: sp.Basic | str, label: str, op: str = "=", tag: str = "") -> Line:
        return Line(self.tex(lhs), op, self.tex(rhs), label, tag)

    def layered(self, items: list[tuple[int | None, object]]) -> list[list[object]]:
        """Items grouped by layer, for a stacked gated cell (its blocks would not fit on a page):
        one group per layer (the output layer's items join the top layer's, an item of no layer
        joins its neighbours); one group otherwise."""
        if not (self.gated and self.L > 1):
            return [[item for _, item in items]]
        groups: list[tuple[int | None, list[object]]] = []
        for layer, item in items:
            layer = min(layer, self.L) if layer is not None else None
            if groups and (layer is None or groups[-1][0] in (None, layer)):
                groups[-1] = (groups[-1][0] if layer is None else layer, groups[-1][1] + [item])
            else:
                groups.append((layer, [item]))
        return [group for _, group in groups]

    def paged(self, items: list[tuple[int | None, tuple[Inline, ...]]]) -> list[list[tuple[Inline, ...]]]:
        """Table rows grouped as `layered`, and for a gated cell each group cut into tables that
        fit on a page (a table cannot break across pages): at most PAGE_LINES lines, a row of
        matrices counting its matrix rows."""
        groups = self.layered(items)
        if not self.gated:
            return groups
        out: list[list[tuple[Inline, ...]]] = []
        for group in groups:
            out.append([])
            used = 0
            for row in group:
                height = 1 + max(c.latex.count(r"\\") + 1 if isinstance(c, Math) and "matrix" in c.latex else 1 for c in row)
                if out[-1] and used + height > PAGE_LINES:
                    out.append([])
                    used = 0
                out[-1].append(row)
                used += height
        return out

    def broken(self, lhs: sp.Basic, rhs: sp.Basic, label: str, tag: str = "") -> list[Line]:
        """`lhs = rhs`; for a gated cell a long sum is broken after some terms into lines that
        fit the page, each continuation starting with its sign."""
        text = self.tex(rhs)
        if not (self.gated and isinstance(rhs, sp.MatAdd)) or _width(text) <= WIDTH:
            return [self.line(lhs, text, label, tag=tag)]
        pieces = []
        for i, term in enumerate(_ordered(self.sym, rhs.args)):
            printed = self.tex(term)
            pieces.append(printed if i == 0 else f"- {printed[1:].lstrip()}" if printed.startswith("-") else f"+ {printed}")
        rows = [pieces[0]]
        for piece in pieces[1:]:
            if _width(rows[-1] + piece) > WIDTH:
                rows.append(piece)
            else:
                rows[-1] += " " + piece
        return [self.line(lhs, rows[0], label, tag=tag)] + \
            [Line("", "", rf"\quad {row}", f"{label}:{i}") for i, row in enumerate(rows[1:], 1)]

    def step(self, time: sp.Expr) -> Paragraph:
        """The run-in heading "Step t = 2." of one step's equations."""
        return Paragraph((), msg("step", t=self.math(sp.Eq(self.t, int(time)))))

    def col(self, e: sp.MatrixExpr) -> sp.MatrixExpr:
        """A vector as a column (row-layout vectors are rows)."""
        return e.T if self.sym.row else e

    def h(self, time, layer: int | None = None) -> sp.MatrixSymbol:
        return self.sym("hidden", layer or self.L, time)

    def shift(self, expr: sp.Basic, mapping: dict) -> sp.Basic:
        """`expr` with the time index of every quantity in it changed by `mapping` (t -> j)."""
        swap = {}
        for a in expr.atoms(sp.MatrixSymbol):
            q = self.sym.info.get(a)
            if q is not None and q.time is not None and q.time.xreplace(mapping) != q.time:
                swap[a] = self.sym(q.role, q.layer, q.time.xreplace(mapping), q.age, q.gate)
        return expr.xreplace(swap)

    def dname(self, p: sp.MatrixSymbol) -> str:
        return rf"\frac{{\partial L}}{{\partial {self.tex(p)}}}"

    def slope_of(self, z: sp.MatrixExpr) -> sp.MatrixExpr:
        """f'(z) before it is written out."""
        return ElementwiseApplyFunction(sp.Lambda(u, Slope(u)), z)

    def gamma(self) -> sp.Expr:
        """The activation's largest slope, the upper end of its slope range."""
        return sp.sympify(self.act.slope_range.strip("()[]{}").split(",")[-1].strip())

    def upstream(self, layer: int, time) -> sp.MatrixExpr | None:
        """The gradient reaching h^l_t from above in the generic step rule, written out."""
        rule = self.d.rule
        if layer == self.L:
            return rule.top_upstream
        below = rule.layers[layer]       # layer + 1, 0-based
        return below.down

    # ----------------------------------------------------------------- sections

    def model(self) -> Section:
        """The table of symbols (with the targets, the loss and the learning rate), the slope."""
        sym, P, L, t = self.sym, self.P, self.L, self.t
        sizes = sym.sizes()
        rows = []
        for p in sym.params():
            q = sym.info[p]
            role: Inline = msg(f"role.gated.{q.role}", gate=self.gate_name(q.gate)) if q.gate else msg(f"role.{q.role}")
            if L > 1 and q.layer <= L:
                role = msg("role_of_layer", role=role, layer=Text(str(q.layer)))
            rows.append((self.math(p), role, self.shape(p, sizes), Code(self.python(p))))
        layers = [sym.info[p].layer for p in sym.params()]
        if self.gated:   # per layer the states, then each gate's pre-activation and value
            quantities = [("input", None, None)] + [(r, l, k) for l in range(1, L + 1) for r, k in
                                                    [(r, None) for r in sym.cell.STATE] +
                                                    [(r, k) for k in self.gate_keys for r in ("pre_activation", "gate")]]
        else:
            quantities = [("input", None, None)] + [("hidden", l, None) for l in range(1, L + 1)] + \
                [("pre_activation", l, None) for l in range(1, L + 1)]
        quantities += [("logits", None, None), ("output", None, None)] if self.m.output_size else []
        for role_name, layer, gate in quantities:
            s = sym(role_name, layer, t, gate=gate)
            role = msg(f"role.{role_name}", t=self.math(t)) if role_name == "input" else \
                msg(f"role.gated.{role_name}", gate=self.gate_name(gate)) if gate else msg(f"role.{role_name}")
            if L > 1 and layer is not None:
                role = msg("role_of_layer", role=role, layer=Text(str(layer)))
            rows.append((self.math(s), role, self.shape(s, sizes), Code("-")))
            layers.append(layer)
        if self.spec.loss.kind != "none":
            y = self.d.unrolled.at(t).target
            extra = {"labels": Math("0, 1")} if self.spec.loss.kind == "bce" else {}
            rows.append((self.math(y), msg(f"role.target_{self.spec.loss.kind}", t=self.math(t), **extra),
                         self.shape(y, sizes), Code("targets")))
        else:
            g = self.d.unrolled.at(t).target
            rows.append((self.math(g), msg("role.upstream", t=self.math(t)), self.shape(g, sizes), Code("targets")))
        one = Math(r"1 \times 1")
        rows += [(self.math(sym("loss", None, t)), msg("role.loss_t", t=self.math(t)), one, Code("-")),
                 (Math("L"), msg("role.loss"), one, Code("loss")),
                 (self.math(self.eta), msg("role.eta"), one, Code("-"))]
        layers += [None] * (len(rows) - len(layers))
        header = tuple(msg(f"table.{c}") for c in ("symbol", "shape", "code", "role"))
        tables = tuple(Table(header, tuple((r[0], r[2], r[3], r[1]) for r in group), wide=True)
                       for group in self.layered(list(zip(layers, rows))))
        act = self.act
        name = P.function_name(act.value)
        vsym = sp.Symbol("v")
        slope = self.line(rf"{name}'(u)", P.doprint(act.slope.xreplace({v: act.value})) + " = "
                          + P.doprint(act.slope.xreplace({v: vsym})), f"eq:{self.name}:slope")
        if self.gated:   # the gates' sigmoid, then the candidate's activation
            sigma = ACTIVATIONS["sigmoid"]
            gate = P.function_name(sigma.value)
            slopes = (self.line(rf"{gate}'(u)", P.doprint(sigma.slope.xreplace({v: sigma.value})) + " = "
                                + P.doprint(sigma.slope.xreplace({v: vsym})), f"eq:{self.name}:slope:sigmoid"), slope)
            candidate = sym.cell.CANDIDATE
            gates = ", ".join(self.tex(sym("gate", L, t, gate=k)) for k in self.gate_keys if k != candidate)
            return Section(msg("section.model"), (
                *tables,
                Paragraph((msg(f"model.{self.cell}_activation", gates=Math(gates), activation=Text(self.m.activation),
                               candidate=self.math(sym("gate", L, t, gate=candidate)), output=self.math(vsym)),)),
                Equations(slopes)))
        return Section(msg("section.model"), (
            *tables,
            Paragraph((msg("model.activation", activation=Text(self.m.activation),
                           output=self.math(sp.Eq(vsym, act.value))),)),
            Equations((slope,))))

    def gate_name(self, gate: str) -> Message:
        """The name of a gate of this cell: "forget gate", "update gate", ..."""
        return msg(f"gate.{self.cell}.{gate}")

    def shape(self, expr: sp.MatrixExpr, sizes: dict) -> Math:
        rows, cols = (self.tex(sp.sympify(x).xreplace(sizes)) for x in expr.shape)
        return Math(rf"{rows} \times {cols}")

    def bridge(self) -> Section:
        """What the source writes, what this handout writes for it, and what it means."""
        sym, t = self.sym, self.t
        at = self.d.unrolled.at(t)
        y = at.target
        rows: list[tuple[Inline, Inline, Inline]] = []
        if self.notation == "doc000" and not self.gated:   # (its rows name the Elman weights)
            rows += [(Math("y^{t}"), self.math(self.h(t)), msg("bridge.output")),
                     (Math(r"\widehat{y^{t}}"), self.math(y), msg("bridge.target")),
                     (Math("y^{t}_{1}"), self.math(self.h(t, 1)), msg("bridge.layer_output")),
                     (Math("e^{t}"), self.math(self.d.rule.top_upstream), msg("bridge.error", t=self.math(t))),
                     (Math("dW^{t}_{l}"), Math(rf"{self.dname(sym('input_weight', 1)).replace('W_{1}', 'W_{l}')}\Big|_{{t}}"),
                      msg("bridge.contribution", t=self.math(t)))]
        elif self.notation == "d2l":
            rows += [(Math("y_{t}"), self.math(at.prediction), msg("bridge.output")),
                     (Math("-"), self.math(y), msg("bridge.target_implicit")),
                     (Math(r"\delta^{y}_{t} = \frac{\partial L}{\partial y_{t}}"),
                      self.math(sym("output_delta", None, t)), msg("bridge.output_delta", y=Math("y_{t}"),
                                                                 logits=self.math(sym("logits", None, t))))]
        elif self.notation == "doc003" and not self.gated:
            rows += [(Math(r"\hat{y}"), self.math(self.d.unrolled.prediction(sp.Integer(self.T))), msg("bridge.output")),
                     (Math("y"), self.math(self.d.unrolled.at(sp.Integer(self.T)).target), msg("bridge.target")),
                     (Math("x_{1t}"), self.math(sym("input", None, t)), msg("bridge.input", t=self.math(t))),
                     (Math(r"\hat{y} = \sigma(o_{3} w_{o})"), Math(
                         self.tex(sym("logits", None, sp.Integer(self.T))) + " = " + self.tex(
                             self.d.unrolled.forward[-2].rhs) + r",\quad " + self.tex(
                             self.d.unrolled.prediction(sp.Integer(self.T))) + " = " + self.tex(
                             self.d.unrolled.forward[-1].rhs)), msg("bridge.logits", product=Math("o_{3} w_{o}")))]
        elif self.notation == "doc001":
            rows += [(Math(r"\hat{y}_{t}"), self.math(at.prediction), msg("bridge.output")),
                     (Math("y_{t}"), self.math(y), msg("bridge.target"))]
        rows.append((Math("E"), Math("L"), msg("bridge.total")))
        header = (msg("table.source_writes"), msg("table.handout_writes"), msg("table.meaning"))
        return Section(msg("section.bridge"), (Paragraph((msg("bridge.intro"),)), Table(header, tuple(rows), wide=True)))

    def diagram(self) -> Diagram:
        """The network unrolled over T steps: forward arrows, and the deltas flowing back."""
        sym, L, T, m = self.sym, self.L, self.T, self.m
        dx, dy = 2.6, 1.5
        nodes, edges = [], []
        label = {}

        def node(name: str, x: float, y: float, expr: sp.Basic) -> None:
            label[name] = self.math(expr)
            nodes.append(Node(name, f"{x:.1f}", f"{y:.1f}", label[name]))

        def edge(a: str, b: str, expr: sp.Basic | str, style: str) -> None:
            arrow = Math(r"\longrightarrow" if style == "forward" else r"\dashrightarrow")
            edges.append(Edge(a, b, self.math(expr) if expr != "" else Text(""), style, arrow, label[a], label[b]))
        # an LSTM's cell state gets a row of its own above each layer's h, set off to the right
        # so that the arrows from h up to the next layer pass beside it
        cell = "cell" in sym.cell.STATE
        rows = 2 if cell else 1
        keep = KEEP.get(self.cell)
        for time in range(0, T + 1):
            for l in range(1, L + 1):
                node(f"h{l}t{time}", time * dx, ((l - 1) * rows + 1) * dy, self.h(sp.Integer(time), l))
                if cell:
                    node(f"c{l}t{time}", time * dx + 0.9, ((l - 1) * rows + 2) * dy, sym("cell", l, sp.Integer(time)))
        steps = {int(s) for s in self.d.unrolled.loss_steps}
        for time in range(1, T + 1):
            tt = sp.Integer(time)
            node(f"x{time}", time * dx, 0, sym("input", None, tt))
            if m.output_size:
                node(f"y{time}", time * dx, (L * rows + 1) * dy, self.d.unrolled.prediction(tt))
            if time in steps:
                node(f"E{time}", time * dx, (L * rows + 1 + bool(m.output_size)) * dy, sym("loss", None, tt))
        for time in range(1, T + 1):
            below = f"x{time}"
            tt = sp.Integer(time)
            for l in range(1, L + 1):
                here = f"h{l}t{time}"
                if self.gated:   # every gate reads both: the arrows stand for all the gates' weights
                    edge(below, here, "", "forward")
                    edge(f"h{l}t{time - 1}", here, "" if cell else sym("gate", l, tt, gate=keep), "forward")
                    if cell:
                        edge(f"c{l}t{time - 1}", f"c{l}t{time}", sym("gate", l, tt, gate=keep), "forward")
                        edge(f"c{l}t{time}", here, sym("gate", l, tt, gate="o"), "forward")
                else:
                    edge(below, here, sym("input_weight", l), "forward")
                    edge(f"h{l}t{time - 1}", here, sym("recurrent_weight", l), "forward")
                below = here
            if m.output_size:   # (a gated cell's arrow passes the cell-state row: no label)
                edge(below, f"y{time}", "" if self.gated else sym("output_weight", L + 1), "forward")
            if time in steps:
                edge(f"y{time}" if m.output_size else below, f"E{time}", "", "forward")
        for time in range(T, 1, -1):
            for l in range(1, L + 1):
                tt = sp.Integer(time)
                if self.gated:
                    edge(f"h{l}t{time}", f"h{l}t{time - 1}", sym("hidden_delta", l, tt), "backward")
                    if cell:
                        edge(f"c{l}t{time}", f"c{l}t{time - 1}", sym("cell_delta", l, tt), "backward")
                else:
                    edge(f"h{l}t{time}", f"h{l}t{time - 1}", sym("delta", l, tt), "backward")
        if self.gated:
            caption = msg(f"figure.unrolled_{self.cell}", steps=Math(f"T = {T}"),
                          gate=self.math(sym("gate", L, self.t, gate=keep)))
        else:
            caption = msg("figure.unrolled", steps=Math(f"T = {T}"))
        return Diagram(tuple(nodes), tuple(edges), caption)

    def forward(self) -> Section:
        """The unrolled network, the document's own form of a step, then one block per step."""
        d, P, sym, t = self.d, self.P, self.sym, self.t
        blocks: list[Block] = [self.diagram()]
        if self.preset and self.notation == "doc000":
            # [x_t, h_{t-1}] W~ : the concatenated input times the stacked weights
            for l in range(1, self.L + 1):
                below = sym("input", None, t) if l == 1 else self.h(t, l - 1)
                cat = sp.BlockMatrix([[below, self.h(t - 1, l)]])
                stack = sp.BlockMatrix([[sym("input_weight", l)], [sym("recurrent_weight", l)]])
                rule = d.rule.layers[l - 1]
                blocks.append(Equations((self.line(sym("pre_activation", l, t), rf"{P.doprint(cat)} {P.doprint(stack)} + {P.doprint(sym('bias', l))} = "
                                                   + P.doprint(sp.MatAdd(rule.projection, rule.recurrence).doit()),
                                                   f"eq:{self.name}:concat:{l}", tag=self.tag(f"concat{l}")),)))
            blocks.insert(1, Paragraph((msg("doc000.concat"),)))
            refs = " and ".join(f"({self.tags[f'concat{l}']})" for l in range(1, self.L + 1))
            blocks.append(Paragraph((msg("doc000.split", refs=Text(refs), n=Math(r"n_{x} = " + str(self.m.input_size))),)))
            split = []
            for l in range(1, self.L + 1):
                delta = sym("delta", l, t)
                below = "x^{t}" if l == 1 else self.tex(self.h(t, l - 1))
                stack = sp.BlockMatrix([[sym("input_weight", l)], [sym("recurrent_weight", l)]])
                parts = sp.BlockMatrix([[sp.MatMul(delta, sym("input_weight", l).T), sp.MatMul(delta, sym("recurrent_weight", l).T)]])
                split.append(Line(rf"\delta_{{[{below},\, {self.tex(self.h(t - 1, l))}]}}", "=",
                                  rf"{self.tex(delta)} {self.tex(stack)}^{{\top}} = {self.tex(parts)}", f"eq:{self.name}:split:{l}"))
            blocks.append(Equations(tuple(split)))
        if self.preset and self.notation == "d2l" and not self.gated:   # (document 002 is an Elman RNN)
            relu = ACTIVATIONS["relu"]
            blocks.append(Paragraph((msg("d2l.shared", weights=Math(", ".join(self.tex(p) for p in sym.params()))),
                                     msg("d2l.relu", f=Math(r"f = " + P.function_name(self.act.value)),
                                         relu=self.math(sp.Eq(sp.Symbol("f(a)"), relu.value.xreplace({u: sp.Symbol("a")}))),
                                         slope=self.math(relu.slope.xreplace({v: sp.Symbol("a")}))))))
        for time in d.unrolled.times:
            blocks.append(self.step(time))
            blocks += [Equations(tuple(group)) for group in self.layered(
                [(a.layer, self.line(a.lhs, a.rhs, self.labels["fwd", a.lhs])) for a in d.unrolled.forward if a.time == time])]
        steps = self.math(sp.Eq(sp.Symbol("T"), self.T))
        return Section(msg("section.forward", self.T, steps=steps), tuple(blocks))

    def textbook_loss(self, time: sp.Expr) -> sp.Expr:
        """E_t in its usual form: ½‖ŷ − y‖², −Σ_c y_c log ŷ_c, −y log ŷ − (1 − y) log(1 − ŷ)."""
        at, kind, c = self.d.unrolled.at(time), self.spec.loss.kind, self.c
        size = self.m.output_size or self.m.hidden_sizes[-1]

        index = 0 if size == 1 else c

        def entry(x: sp.MatrixExpr) -> sp.Expr:
            i, j = (0, index) if self.sym.row else (index, 0)
            try:
                return x[i, j]
            except NotImplementedError:       # softmax(o_t) has no entries of its own
                return MatrixElement(x, i, j)

        def total(term: sp.Expr) -> sp.Expr:
            return term if size == 1 else sp.Sum(term, (c, 1, size))
        if kind == "mse" and self.scalar:
            return sp.Mul(sp.Rational(1, 2), sp.Pow(sp.Add(entry(at.prediction), -entry(at.target), evaluate=False), 2,
                                                    evaluate=False), evaluate=False)
        if kind == "mse":
            return sp.Rational(1, 2) * Norm(at.prediction - at.target) ** 2
        if kind == "cross_entropy":
            return -sp.Sum(entry(at.target) * sp.log(entry(at.probabilities("softmax"))), (c, 1, size))
        if kind == "bce":
            p, y = entry(at.probabilities("sigmoid")), entry(at.target)
            term = sp.Add(sp.Mul(-1, y, sp.log(p), evaluate=False),
                          sp.Mul(-1, sp.Add(1, -y, evaluate=False), sp.log(sp.Add(1, -p, evaluate=False)),
                                 evaluate=False), evaluate=False)
            return total(term)
        return next(a.rhs for a in self.d.unrolled.losses if a.time == time)

    def loss(self) -> Section:
        d, t, T = self.d, self.t, self.T
        P = self.Pn
        E = lambda time: self.sym("loss", None, time)  # noqa: E731
        total = sp.Sum(E(t), (t, 1, T)) if self.spec.loss.at == "every_step" else E(sp.Integer(T))
        lines = [Line(P.doprint(a.lhs), "=", P.doprint(self.textbook_loss(a.time)), f"eq:{self.name}:loss:{int(a.time)}")
                 for a in d.unrolled.losses]
        lines.append(self.line("L", d.scale * total, f"eq:{self.name}:loss"))
        blocks: list[Block] = [Equations(tuple(lines))]
        size = self.m.output_size or self.m.hidden_sizes[-1]
        if self.spec.loss.kind in ("cross_entropy", "bce") and size > 1:
            blocks.append(Paragraph((msg("loss.index", c=self.math(self.c), entry=self.math(self.textbook_entry())),)))
        return Section(msg("section.loss"), tuple(blocks))

    def textbook_entry(self) -> sp.Expr:
        """y_{t,c}: an entry of the target, as the loss writes it."""
        y = self.d.unrolled.at(self.t).target
        return y[0, self.c] if self.sym.row else y[self.c, 0]

    def deltas(self) -> Section:
        """The generic delta rule (the document's form first), then one block per step, T down to 1."""
        d, sym, t = self.d, self.sym, self.t
        rule = d.rule
        blocks: list[Block] = [] if self.gated else [
            Paragraph((msg("delta.intro_scalar", cdot=Math(r"\cdot")) if self.scalar else msg("delta.intro", odot=Math(r"\odot")),))]
        general = []
        if rule.output_delta is not None:
            od = rule.output_delta
            general.append(self.line(od.lhs, rf"\frac{{\partial E_{{{self.tex(t)}}}}}{{\partial {self.tex(sym('logits', None, t))}}} = "
                                     + self.tex(od.rhs), f"eq:{self.name}:rule:output"))
        doc000 = self.preset and self.notation == "doc000"
        if doc000:
            e = sp.MatrixSymbol("e^t", *self.h(t).shape)
            general.append(self.line(e, rf"\frac{{\partial E^{{{self.tex(t)}}}}}{{\partial {self.tex(self.h(t))}}} = "
                                     + self.tex(rule.top_upstream), f"eq:{self.name}:rule:error"))
        for layer in reversed(rule.layers if not self.gated else []):
            for a in layer.delta:
                if sym.info[a.lhs].age not in (None, 0):
                    continue
                up = self.upstream(layer.layer, t)
                if doc000 and layer.layer == self.L:
                    up = e
                z = sym("pre_activation", layer.layer, t)
                # the slope as f'(z) first, then written out (the step rule has it through h)
                rhs = a.rhs.xreplace({layer.upstream: up})
                short = rhs.xreplace({arg: self.slope_of(z) for arg in rhs.args if isinstance(arg, ElementwiseApplyFunction)}) \
                    if isinstance(rhs, sp.HadamardProduct) else rhs
                if doc000 and layer.layer == self.L:
                    short = sp.HadamardProduct(*reversed(short.args))    # document 000: f'(z) ⊙ (e + ...)
                lhs = a.lhs if sym.info[a.lhs].age is None else sym("delta", layer.layer, t)
                general.append(self.line(lhs, self.tex(short) + " = " + self.tex(rhs),
                                         f"eq:{self.name}:rule:{layer.layer}", tag=self.tag(f"delta{layer.layer}")))
        if self.gated:
            blocks += self.gated_rule(general)
        else:
            blocks += [Paragraph((msg("delta.general", t=self.math(t), fprime=Math("f'")),)), Equations(tuple(general))]
        if self.notation == "d2l" and not self.gated:
            blocks.append(Paragraph((msg("delta.placement", ref=self.ref(f"delta{self.L}")),)))
        truncate = self.spec.bptt.truncate
        if truncate and self.spec.bptt.truncate_style == "chunk":
            blocks.append(Paragraph((msg("truncation.chunk", k=self.math(sp.Eq(self.tau, truncate))),),
                                    msg("truncation.lead")))
        elif truncate:
            window = msg("truncation.window", truncate, tau=self.math(sp.Eq(self.tau, truncate)),
                         steps=Text(str(truncate)))
            blocks.append(Paragraph((window, msg("truncation.age", steps=Text(str(truncate)))),
                                    msg("truncation.lead")))
        if truncate:   # the kept (s, k) pairs of the path sum: a band (window) or blocks (chunk)
            T = int(self.T)
            blocks += [Paragraph((msg("truncation.kept", s=Math("s"), k=Math("k")),)), Table(
                (Math(r"s \backslash k"), *(Math(str(c)) for c in range(1, T + 1))),
                tuple((Math(str(r)), *(Math(r"\bullet" if c in self.d.kept_steps(r) else r"\cdot")
                                       for c in range(1, T + 1))) for r in range(1, T + 1)))]
        blocks.append(Paragraph((msg("delta.order", span=Math(rf"{self.tex(sp.Eq(t, self.T))}, \dots, 1")),)))
        for time in reversed(d.unrolled.times):
            lines = [(a.layer, line) for a in d.deltas if a.time == time
                     for line in self.broken(a.lhs, a.rhs, self.labels["delta", a.lhs])]
            if lines:
                blocks += [self.step(time)] + [Equations(tuple(group)) for group in self.layered(lines)]
        span = Math(rf"{self.tex(sp.Eq(t, self.T))}, \dots, 1")
        return Section(msg("section.deltas", span=span), tuple(blocks))

    def grads(self) -> Section:
        """Per parameter: the compact sum over steps, each step's contribution, the total and
        the update; clipping."""
        d, name, sym, t = self.d, self.name, self.sym, self.t
        rule = d.rule
        blocks: list[Block] = []
        compact = {**{p: e for layer in rule.layers for p, e in layer.uses.items()}, **rule.output_uses}
        lines = []
        for p in d.uses:
            if p in compact:
                low = 1 if sym.info[p].role != "recurrent_weight" else 1
                lines.append((sym.info[p].layer, self.line(self.dname(p), sp.Sum(compact[p], (t, low, self.T)),
                                       f"eq:{name}:compact:{self.python(p)}", tag=self.tag(f"compact:{self.python(p)}"))))
        if self.gated:   # the gate deltas of the step rule, numbered in a row
            gates = [self.tags[key] for key in self.tags if key.startswith("gate:")]
            refs: Inline = msg("refs.range", first=Text(f"({gates[0]})"), last=Text(f"({gates[-1]})"))
        else:
            refs = Text(" and ".join(f"({self.tags[f'delta{l}']})" for l in range(self.L, 0, -1)))
        blocks += [Paragraph((msg("grads.compact", refs=refs),))] + [Equations(tuple(g)) for g in self.layered(lines)]
        truncate = self.spec.bptt.truncate
        if truncate:
            ages = [(l, k, sp.MatAdd(*[sym("delta", l, t, age, k) for age in range(truncate)]))
                    for l in range(1, self.L + 1) for k in (self.gate_keys or (None,))]
            blocks += [Paragraph((msg("grads.ages"),)),
                       Equations(tuple(Line(self.tex(sym("delta", l, t, gate=k)), "=", self.tex(e),
                                            f"eq:{name}:ages:{l}" + (f":{k}" if k else "")) for l, k, e in ages))]
        doc000 = self.preset and self.notation == "doc000"
        if doc000:
            blocks.append(Paragraph((msg("doc000.contributions", dW=Math(r"dW^{t}_{l}"), dV=Math(r"dV^{t}_{l}"),
                                         db=Math(r"db^{t}_{l}")),)))
        eta = self.tex(self.eta)
        heads = {"input_weight": "dW", "recurrent_weight": "dV", "bias": "db"}
        for p, uses in d.uses.items():
            symbol = self.tex(p)
            dname = self.dname(p)
            q = sym.info[p]
            if doc000 and q.role in heads:      # document 000's names, and no dV at t = 1
                steps = tuple(self.line(rf"{heads[q.role]}^{{{int(time)}}}_{{{q.layer}}}", e,
                                        f"eq:{name}:use:{self.python(p)}:{int(time)}")
                              for time, e in uses if not (q.role == "recurrent_weight" and int(time) == 1))
            else:
                steps = tuple(self.line(rf"{dname}\Big|_{{{int(time)}}}", e, f"eq:{name}:use:{self.python(p)}:{int(time)}")
                              for time, e in uses)
            blocks.append(Equations(steps + (
                self.line(dname, d.totals[p], self.labels["total", p]),
                self.line(symbol, f"{symbol} - {eta} {dname}", f"eq:{name}:update:{self.python(p)}",
                          op=r"\leftarrow"))))
        h0 = self.tex(self.h(sp.Integer(0), 1))
        states = [self.tex(sym(role, l, sp.Integer(0))) for l in range(1, self.L + 1) for role in sym.cell.STATE]
        zero = msg("grads.zero_state_gated", h0_zero=Math(" = ".join(states) + " = 0"), h0=Math(h0),
                   t=self.math(sp.Eq(self.t, 2))) if self.gated else msg("doc000.no_dv", dV=Math(r"dV^{1}_{l}"), t=self.math(sp.Eq(t, 1)), t2=self.math(sp.Eq(t, 2)),
                   h0=Math(" = ".join(self.tex(self.h(sp.Integer(0), l)) for l in range(1, self.L + 1)) + " = 0")) if doc000 \
            else msg("grads.zero_state", h0_zero=Math(f"{h0} = 0"), h0=Math(h0), t=self.math(sp.Eq(self.t, 2)))
        blocks.append(Paragraph((zero,)))
        if doc000:
            lines = []
            for p, uses in d.uses.items():
                q = sym.info[p]
                if q.layer > self.L:
                    continue
                head = {"input_weight": "dW", "recurrent_weight": "dV", "bias": "db"}[q.role]
                terms = " + ".join(f"{head}^{{{int(time)}}}_{{{q.layer}}}" for time, _ in sorted(uses, key=lambda x: int(x[0]))
                                   if not (q.role == "recurrent_weight" and int(time) == 1))
                lines.append(Line(self.tex(p), r"\leftarrow", rf"{self.tex(p)} - {eta} \left({terms}\right)",
                                  f"eq:{name}:doc000:update:{self.python(p)}"))
            blocks += [Paragraph((msg("doc000_updates.lead"),)), Equations(tuple(lines))]
        if self.spec.bptt.clip:
            clip = sp.Float(self.spec.bptt.clip)
            g = sp.Symbol("g")
            interval = self.math(sp.Interval(-clip, clip))
            blocks.append(Paragraph((msg("clipping.rule", interval=interval),), msg("clipping.lead")))
            blocks.append(Equations((
                self.line(g, sp.Min(sp.Max(g, -clip), clip), f"eq:{name}:clip:elementwise", op=r"\leftarrow"),
                self.line(g, rf"{self.tex(g)} \cdot \min\left(1, \frac{{{self.tex(clip)}}}{{\left\|{self.tex(g)}\right\|}}\right)",
                          f"eq:{name}:clip:norm", op=r"\leftarrow"))))
            blocks.append(Paragraph((msg("clipping.norm_alternative", g=self.math(g)), msg("clipping.direction"),)))
        if self.spec.bptt.clip_norm:
            g, n = sp.Symbol("g"), sp.Float(self.spec.bptt.clip_norm)
            factor = Math(self.tex(sp.Min(1, n / (sp.Symbol(r"\lVert g \rVert_2") + sp.Float(1e-6)), evaluate=False)))
            blocks.append(Paragraph((msg("clipping.norm", factor=factor, g=Math(self.tex(g))), msg("clipping.direction")),
                                    msg("clipping.lead")))
        return Section(msg("section.grads"), tuple(blocks))

    def paths(self) -> Section:
        """The same gradient as a sum over paths; the documents' own path sums."""
        sym, L, T, m = self.sym, self.L, self.T, self.m
        t, k, j = self.t, self.k, self.j
        h = lambda time: sym("hidden", L, time)  # noqa: E731
        theta = sym("input_weight", 1, gate=self.gate_keys[0] if self.gated else None)
        last = self.spec.loss.at == "last_step"
        s = sp.Integer(T) if last else t      # the step of the loss term
        truncate = self.spec.bptt.truncate
        window_low = sp.Max(1, s - truncate + 1) if truncate else 1
        if truncate and self.spec.bptt.truncate_style == "chunk":   # the first step of s's chunk
            window_low = truncate * sp.floor(sp.Mul(s - 1, sp.Pow(sp.Integer(truncate), -1, evaluate=False), evaluate=False)) + 1
        pred = self.d.unrolled.prediction(s)
        chain = [Partial(sym("loss", None, s), pred)]
        if m.output_size:
            chain.append(Partial(pred, h(s)))
        chain += [sp.Product(Partial(h(j), h(j - 1)), (j, k + 1, s)), Partial(h(k), theta, True)]
        inner = sp.Sum(sp.Mul(*chain), (k, window_low, s))
        outer = inner if last else sp.Sum(inner, (t, 1, T))
        where = msg("paths.direct", dplus=Math(r"\partial^{+}"))
        name = self.name
        pair: tuple[Inline, ...] = ()
        if "cell" in sym.cell.STATE:   # an LSTM hands the next step the pair (h, c)
            pair = (msg("paths.pair", state=self.math(h(j)), pair=Math(rf"\left({self.tex(h(j))}, {self.tex(sym('cell', L, j))}\right)")),)
        blocks: list[Block] = [
            Equations((self.line(Partial(sp.Symbol("L"), theta), outer, f"eq:{name}:pathsum", tag=self.tag("pathsum")),)),
            Paragraph((where,) + ((msg("paths.stacked", state=self.math(h(t)), t=self.math(t)),) if L > 1 else ()) + pair)]
        if self.preset and self.notation == "doc001":
            blocks += self.doc001()
        if self.preset and self.notation == "doc003":
            blocks += self.doc003()
        return Section(msg("section.paths"), tuple(blocks))

    def doc001(self) -> list[Block]:
        """Document 001: E = Σ E_t, ∂E/∂W = Σ ∂E_t/∂W, the incomplete chain and the full path sum for W."""
        sym, T, k = self.sym, self.T, self.k
        t, three = self.t, sp.Integer(T)
        W = sym("recurrent_weight", 1)
        E = lambda time: sym("loss", None, time)  # noqa: E731
        s = lambda time: sym("hidden", 1, time)  # noqa: E731
        pred = self.d.unrolled.prediction(three)
        rule = self.d.rule.layers[0]
        step = ElementwiseApplyFunction(sp.Lambda(u, self.act.value), self.shift(rule.projection + rule.recurrence, {t: three}))
        s3 = f"{self.tex(s(three))} = {self.tex(step)}"
        out = [Paragraph((msg("doc001.total", E=Math("E"), L=Math("L")),)),
               Equations((self.line("E", sp.Sum(E(t), (t, 1, T)), f"eq:{self.name}:doc001:E"),
                          self.line(Partial(sp.Symbol("E"), W), sp.Sum(Partial(E(t), W), (t, 1, T)),
                                    f"eq:{self.name}:doc001:dE"))),
               Paragraph((msg("doc001.first"),)),
               Equations((self.line(Partial(E(three), W), sp.Mul(Partial(E(three), pred), Partial(pred, s(three)),
                                                                 Partial(s(three), W)),
                                    f"eq:{self.name}:doc001:incomplete", tag=self.tag("incomplete")),)),
               Remark(msg("doc001.box_lead"), (msg("doc001.box", ref=self.ref("incomplete"), s3=Math(s3),
                                                   s2=self.math(s(three - 1)), W=self.math(W)),)),
               Paragraph((msg("doc001.full", W=self.math(W), k=self.math(k)),)),
               Equations((self.line(Partial(E(three), W), sp.Sum(sp.Mul(Partial(E(three), pred), Partial(pred, s(three)),
                                                                        Partial(s(three), s(k)), Partial(s(k), W, True)),
                                                                 (k, 0, T)),
                                    f"eq:{self.name}:doc001:full", tag=self.tag("full")),
                          self.line(Partial(s(sp.Integer(0)), W, True), sp.ZeroMatrix(*W.shape), f"eq:{self.name}:doc001:zero"))),
               Paragraph((msg("doc001.zero_term", ref=self.ref("full"), s0=self.math(s(sp.Integer(0))),
                              k0=Math(f"{self.tex(k)} = 0"), W=self.math(W)),))]
        return out

    def doc003(self) -> list[Block]:
        """Document 003: ∂L/∂w_o as factors, ∂L/∂w_i and ∂L/∂w_h term by term then as Σ_j,
        and ∂o_t/∂o_k as a product of f'(x_j w_i + o_{j-1} w_h) w_h."""
        sym, T, j, k, t = self.sym, self.T, self.j, self.k, self.t
        three = sp.Integer(T)
        o = lambda time: sym("hidden", 1, time)  # noqa: E731
        pred = self.d.unrolled.prediction(three)
        z = sym("logits", None, three)
        wo, wi, wh = sym("output_weight", 2), sym("input_weight", 1), sym("recurrent_weight", 1)
        Lsym = sp.Symbol("L")
        y = self.d.unrolled.at(three).target
        factors = sp.Mul(Partial(Lsym, pred), Partial(pred, z), Partial(z, wo))
        written = rf"\frac{{{self.tex(pred - y)}}}{{{self.tex(pred)}\left(1 - {self.tex(pred)}\right)}} \cdot " \
                  rf"{self.tex(pred)}\left(1 - {self.tex(pred)}\right) \cdot {self.tex(o(three))} = " \
                  + self.tex(sp.MatMul(o(three), pred - y))
        lines = [self.line(Partial(Lsym, wo), factors, f"eq:{self.name}:doc003:wo"),
                 self.line("", written, f"eq:{self.name}:doc003:wo:value")]
        if self.numbers is not None:
            n = self.numbers.values
            yhat, target, state = (float(n[x][0, 0]) for x in (pred, y, o(three)))
            factors = ((yhat - target) / (yhat * (1 - yhat)), yhat * (1 - yhat), state)
            num = self.P.number
            lines.append(self.line("", r" \cdot ".join(f"\\left({num(f)}\\right)" if f < 0 else num(f) for f in factors)
                                   + " = " + num(state * (yhat - target)), f"eq:{self.name}:doc003:wo:number"))
        blocks: list[Block] = [Paragraph((msg("doc003.wo"),)), Equations(tuple(lines))]
        for w in (wi, wh):
            terms = [sp.Mul(Partial(Lsym, pred), Partial(pred, o(three)), Partial(o(three), o(sp.Integer(i))),
                            Partial(o(sp.Integer(i)), w, True)) for i in range(T, 0, -1)]
            blocks.append(Equations((
                self.line(Partial(Lsym, w), " + ".join(self.tex(x) for x in terms), f"eq:{self.name}:doc003:terms:{self.python(w)}"),
                self.line("", sp.Sum(sp.Mul(Partial(Lsym, pred), Partial(pred, o(three)), Partial(o(three), o(j)),
                                            Partial(o(j), w, True)), (j, 1, T)),
                          f"eq:{self.name}:doc003:sum:{self.python(w)}", tag=self.tag(f"doc003:{self.python(w)}")))))
        rule = self.d.rule.layers[0]
        pre = self.shift(rule.projection + rule.recurrence, {t: j})
        product = sp.Product(sp.MatMul(self.slope_of(pre), wh), (j, k + 1, t))
        blocks += [Paragraph((msg("doc003.chain", j=Math(", ".join(f"j = {i}" if i == T else str(i) for i in range(T, 0, -1))),
                                  refs=Text(f"{self.ref(f'doc003:{self.python(wi)}').text} and {self.ref(f'doc003:{self.python(wh)}').text}")),)),
                   Equations((self.line(Partial(o(t), o(k)), product, f"eq:{self.name}:doc003:product",
                                        tag=self.tag("doc003:product")),)),
                   Paragraph((msg("doc003.bound", ref=self.ref("doc003:product"), interval=Math("[0, 1]"),
                                  factor=Math("[-1, 1]"), gap=Math("t - k"),
                                  wh=Math(rf"\left|{self.tex(wh)}\right| \le 1")),))]
        return blocks

    def vanishing(self) -> Section:
        """The Jacobian product, its bound, and the measured norms (from the generated module)."""
        sym, L, t, k, j = self.sym, self.L, self.t, self.k, self.j
        h = lambda time: sym("hidden", L, time)  # noqa: E731
        weight = sym("recurrent_weight", L)
        jac, written_jac = self.elman_jacobian(h(j), sym("pre_activation", L, j), weight)
        name = self.name
        gamma = self.gamma()
        blocks: list[Block] = [
            Paragraph((msg("vanishing.jacobian", gap=Math("t - k")),) + ((msg("paths.top_layer"),) if L > 1 else ())),
            Equations((self.line(Partial(h(j), h(j - 1)), self.tex(jac) + " = " + self.tex(written_jac),
                                 f"eq:{name}:jacobian"),
                       self.line(Partial(h(t), h(k)), sp.Product(jac, (j, k + 1, t)), f"eq:{name}:jacobian-product",
                                 tag=self.tag("product")),
                       Line(self.Pn.doprint(Norm(Partial(h(t), h(k)))), r"\le", self.Pn.doprint(sp.Pow(
                           sp.Mul(sp.Symbol("gamma"), Norm(weight)), sp.Add(t, -k, evaluate=False), evaluate=False)),
                           f"eq:{name}:bound", self.tag("bound")))),
            Paragraph((msg("vanishing.bound", ref=self.ref("bound"), product=self.ref("product"), gamma=self.math(sp.Eq(sp.Symbol("gamma"), gamma)),
                           activation=Text(self.m.activation), range=Math(self.act.slope_range)),)),
        ]
        if self.numbers is not None and self.numbers.vanishing:
            from_module = self.numbers.vanishing
            radii = sorted(from_module)
            rho = lambda r: Math(rf"\rho\left({self.tex(weight)}\right) = {r:g}")  # noqa: E731
            rows = tuple((str(n),) + tuple(f"{from_module[r][n]:.4e}" for r in radii)
                         for n in range(len(from_module[radii[0]])))
            table = tuple((Math(str(n)),) + tuple(Math(self.P.scientific(from_module[r][n])) for r in radii)
                          for n in range(len(rows)))
            big_t = sp.Symbol("T")
            g = sp.MatrixSymbol("g", *self.col(h(big_t)).shape)
            blocks += [Paragraph((msg("vanishing.experiment", steps=Math(f"T = {len(rows)}"), g=self.math(g),
                                      loss=Math("L = " + self.tex(sp.MatMul(g.T, self.col(h(big_t))))),
                                      radii=Math(r"\rho = " + ", ".join(f"{r:g}" for r in radii)),
                                      state=Math(f"{self.tex(h(sp.Integer(0)))} = 0")),)),
                       Plot(Math("t - k"), self.math(Norm(Partial(sp.Symbol("L"), h(k)))), tuple(rho(r) for r in radii), rows,
                            msg("vanishing.caption", ref=self.ref("bound"), gap=Math("t - k")), table)]
        if self.preset and self.notation == "d2l":
            blocks.append(Paragraph((msg("vanishing.remedies"),)))
        return Section(msg("section.vanishing"), tuple(blocks))

    def example(self) -> Section | None:
        """The worked example: per step every forward value, the loss, every delta and each
        parameter's contribution; then the totals and the update."""
        if self.numbers is None:
            return None
        n, d, P, sym = self.numbers, self.d, self.P, self.sym
        values = n.values
        blocks: list[Block] = [Paragraph((msg("example.intro_gated" if self.gated else "example.intro", eta=self.math(sp.Eq(self.eta, sp.Float(n.eta))),
                                                seed=Text(str(self.spec.example.seed)),
                                                scale=Text(f"{self.spec.example.scale:g}")),))]
        if n.tokens:
            rows = []
            for time in d.unrolled.times:
                rows.append((Text(n.tokens[int(time) - 1]),) + tuple(
                    Math(P.values(values[x], vertical=True)) for x in (sym("input", None, time), self.h(time - 1), self.h(time),
                                                        d.unrolled.prediction(time))))
            head = (msg("table.token"),) + tuple(self.math(x) for x in (sym("input", None, self.t), self.h(self.t - 1),
                                                                         self.h(self.t), d.unrolled.prediction(self.t)))
            blocks += [Paragraph((msg("example.tokens"),)), Table(head, tuple(rows))]
        params = [(sym.info[p].layer, (self.math(p), Math(P.values(values[p], vertical=True)))) for p in sym.params()]
        value_head = msg("table.value")
        blocks += [Table((msg("example.weights"), value_head), tuple(rows)) for rows in self.paged(params)]
        for time in d.unrolled.times:
            rows = [(None, (self.math(sym("input", None, time)), Math(P.values(values[sym("input", None, time)]))))]
            rows += [(a.layer, (self.math(a.lhs), Math(P.values(values[a.lhs])))) for a in d.unrolled.forward if a.time == time]
            for a in d.unrolled.losses:
                if a.time == time:
                    y = d.unrolled.at(time).target
                    rows += [(None, (self.math(y), Math(P.values(values[y])))), (None, (self.math(a.lhs), Math(P.values(values[a.lhs]))))]
            head = (msg("step", t=self.math(sp.Eq(self.t, int(time)))), value_head)
            blocks += [Table(head, tuple(group)) for group in self.paged(rows)]
        for time in reversed(d.unrolled.times):
            rows = [(self.math(a.lhs), Math(P.values(values[a.lhs]))) for a in d.deltas if a.time == time]
            rows = [(a.layer, row) for a, row in zip([a for a in d.deltas if a.time == time], rows)]
            for p, uses in n.uses.items():
                for when, value in uses:
                    if when == time:
                        rows.append((sym.info[p].layer, (Math(rf"{self.dname(p)}\Big|_{{{int(time)}}}"), Math(P.values(value)))))
            if rows:
                head = (msg("example.backward", t=self.math(sp.Eq(self.t, int(time)))), value_head)
                blocks += [Table(head, tuple(group)) for group in self.paged(rows)]
        total_head = (msg("table.symbol"), msg("table.clipped" if self.spec.bptt.clip or self.spec.bptt.clip_norm else "table.gradient"),
                      msg("table.updated", eta=self.math(self.eta)))
        totals = self.paged([(sym.info[p].layer, (self.math(p), Math(P.values(n.totals[p], vertical=True)),
                                                     Math(P.values(n.updated[p], vertical=True)))) for p in n.totals])
        compact = [self.tags[key] for key in self.tags if key.startswith("compact:")]
        refs: Inline = Text(", ".join(f"({n})" for n in compact[:-1]) + (" and " if len(compact) > 1 else "") + f"({compact[-1]})")
        if self.gated:   # one per gate parameter: the range
            refs = msg("refs.range", first=Text(f"({compact[0]})"), last=Text(f"({compact[-1]})"))
        blocks += [Paragraph((msg("example.totals", loss=Math("L = " + P.number(n.loss)), refs=refs),),
                             msg("example.totals_lead"))] + [Table(total_head, tuple(rows)) for rows in totals]
        return Section(msg("section.example"), tuple(blocks))

    def training(self) -> Section | None:
        """Documents 002 and 004: the order of one training step; 004: what truncation keeps."""
        if not (self.preset and self.notation == "d2l"):
            return None
        blocks: list[Block] = [Items((msg("training.forward", steps=Math(r"t = 1, \dots, T")), msg("training.loss"),
                                      msg("training.bptt", steps=Math(r"t = T, \dots, 1")), msg("training.update")))]
        truncate, T = self.spec.bptt.truncate, self.T
        if truncate:
            full = T * (T + 1) // 2
            count = sum(1 for s in range(1, T + 1) for k in range(1, s + 1) if k in self.d.kept_steps(s))
            blocks += [Paragraph((msg("truncation.saves", kept=Text(str(count)), full=Text(str(full)),
                                      cost=Math(rf"T \tau = {T * truncate}" if truncate < T else f"T = {T}"),
                                      square=Math("T^{2}"),
                                      states=Text(str(truncate))),), msg("truncation.lead"))]
        return Section(msg("section.training"), tuple(blocks))

    # ----------------------------------------------------------------- gated cells (LSTM, GRU)

    def gate_symbol(self, gate: str, time=None, layer: int | None = None) -> sp.MatrixSymbol:
        return self.sym("gate", layer or self.L, self.t if time is None else time, gate=gate)

    def gates(self) -> Section:
        """The generic step of a gated cell: each gate, the candidate, the state update (from
        the step rule's forward assignments); in the dlai notation also the concatenated form."""
        sym, t, rule, L = self.sym, self.t, self.d.rule, self.L
        g = {k: self.math(self.gate_symbol(k)) for k in self.gate_keys}
        intro = msg(f"gates.{self.cell}", x=self.math(sym("input", None, t)), h=self.math(self.h(t - 1)), **g)
        blocks: list[Block] = [Paragraph((intro,))]
        state = "cell" if "cell" in sym.cell.STATE else "hidden"
        lines = []
        for layer in rule.layers:
            for i, a in enumerate(layer.forward):
                key = "state" if layer.layer == L and sym.info[a.lhs].role == state else ""
                lines.append((layer.layer, self.line(a.lhs, a.rhs, f"eq:{self.name}:gates:{layer.layer}:{i}",
                                                     tag=self.tag(key) if key else "")))
        blocks += [Equations(tuple(group)) for group in self.layered(lines)]
        if self.notation == "dlai":
            concat = [line for layer in rule.layers for line in self.concatenated(layer)]
            if concat:
                below = sym("input", None, t)
                blocks += [Paragraph((msg("dlai.concat", pair=Math(rf"\left[{self.tex(self.h(t - 1))}; {self.tex(below)}\right]")),)),
                           Equations(tuple(concat))]
        return Section(msg(f"section.gates_{self.cell}"), tuple(blocks))

    def concatenated(self, layer) -> list[Line]:
        """Each gate's pre-activation as one weight times the stacked [h_{t-1}; x_t] (the
        deeplearning.ai course's form), split into the rule's two products. A GRU candidate
        with the reset after the product, r ⊙ (U h + b), has no such form and is left out."""
        sym, l = self.sym, layer.layer
        out = []
        for a in layer.forward:
            q = sym.info[a.lhs]
            if q.role != "pre_activation":
                continue
            terms = list(a.rhs.args) if isinstance(a.rhs, sp.MatAdd) else [a.rhs]
            W, U = sym("input_weight", l, gate=q.gate), sym("recurrent_weight", l, gate=q.gate)
            wx = [e for e in terms if isinstance(e, sp.MatMul) and W in e.args]
            uh = [e for e in terms if isinstance(e, sp.MatMul) and U in e.args]
            if len(wx) != 1 or len(uh) != 1:
                continue
            rest = [e for e in terms if e is not wx[0] and e is not uh[0]]
            x = next(f for f in wx[0].args if f != W)
            v = next(f for f in uh[0].args if f != U)
            if sym.row:
                product = f"{self.tex(sp.BlockMatrix([[v, x]]))} {self.tex(sp.BlockMatrix([[U], [W]]))}"
            else:
                product = f"{self.tex(sp.BlockMatrix([[U, W]]))} {self.tex(sp.BlockMatrix([[v], [x]]))}"
            if rest:
                product += " + " + self.tex(sp.MatAdd(*rest) if len(rest) > 1 else rest[0])
            out.append(self.line(a.lhs, product + " = " + self.tex(a.rhs), f"eq:{self.name}:concat:{l}:{q.gate}"))
        return out

    def carried(self, layer) -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
        """The term of the state's delta that step t+1 hands back along the additive path
        (an LSTM's delta^c_{t+1} ⊙ f_{t+1}, a GRU's delta^h_{t+1} ⊙ z_{t+1}), and its factor."""
        sym, t = self.sym, self.t
        role = "cell_delta" if "cell" in sym.cell.STATE else "hidden_delta"
        rule = next(a for a in layer.delta if sym.info[a.lhs].role == role)
        after = sym(role, layer.layer, t + 1)
        terms = rule.rhs.args if isinstance(rule.rhs, sp.MatAdd) else (rule.rhs,)
        term = next(e for e in terms if isinstance(e, sp.HadamardProduct) and after in e.args)
        others = [f for f in term.args if f != after]
        return term, (others[0] if len(others) == 1 else sp.HadamardProduct(*others))

    def gated_rule(self, general: list[Line]) -> list[Block]:
        """The step rule of a gated cell: the states' deltas, then each gate's, as reverse mode
        computes them; the term carried along the additive path."""
        sym, t, rule = self.sym, self.t, self.d.rule
        lines = [(self.L, line) for line in general]
        for layer in reversed(rule.layers):
            up = self.upstream(layer.layer, t)
            for a in layer.delta:
                q = sym.info[a.lhs]
                if q.age not in (None, 0):
                    continue
                key = {"hidden_delta": f"hidden{layer.layer}", "cell_delta": f"cell{layer.layer}"}.get(q.role, f"gate:{layer.layer}:{q.gate}")
                carry = (q.role == "cell_delta" or (q.role == "hidden_delta" and "cell" not in sym.cell.STATE)) \
                    and layer.layer == self.L
                tag = self.tag("carry") if carry else self.tag(key) if q.gate else ""
                lines += [(layer.layer, line) for line in self.broken(
                    sym(q.role, q.layer, t, gate=q.gate), a.rhs.xreplace({layer.upstream: up}),
                    f"eq:{self.name}:rule:{layer.layer}:{q.role}" + (f":{q.gate}" if q.gate else ""), tag=tag)]
        term, factor = self.carried(rule.layers[-1])
        odot = Math(r"\cdot" if self.scalar else r"\odot")
        return [Paragraph((msg("delta.gated", t=self.math(t), after=self.math(t + 1), odot=odot),)),
                *(Equations(tuple(group)) for group in self.layered(lines)),
                Paragraph((msg(f"delta.carry_{self.cell}", ref=self.ref("carry"), carried=self.math(term),
                               factor=self.math(factor)),))]

    def elman_jacobian(self, h, a, weight) -> tuple[sp.MatrixExpr, sp.MatrixExpr]:
        """An Elman cell's one-step Jacobian dh_j/dh_{j-1}: diag(f'(a_j)) W, and with the slope
        written through the output (the vanishing-gradient section's product)."""
        body = self.act.slope.xreplace({v: u})
        n = self.col(h).shape[0]
        diag = sp.Identity(n) if body == 1 else DiagMatrix(self.slope_of(a))
        written = sp.Identity(n) if body == 1 else DiagMatrix(ElementwiseApplyFunction(sp.Lambda(u, body), h))
        return sp.MatMul(diag, self.col(weight)), sp.MatMul(written, self.col(weight))

    def additive(self) -> Section:
        """Why the additive path eases vanishing gradients: the one-step Jacobian along the
        state's additive path (from the step rule's carried term) and its product over steps,
        against an Elman cell's product; the measured norms (from the step rule)."""
        sym, L, t, k, j, name = self.sym, self.L, self.t, self.k, self.j, self.name
        lstm = "cell" in sym.cell.STATE
        s = lambda time: sym("cell" if lstm else "hidden", L, time)  # noqa: E731
        _, factor = self.carried(self.d.rule.layers[-1])
        factor_j = self.shift(factor, {t: j - 1})          # f_{t+1} -> f_j
        one = factor_j if self.scalar else DiagMatrix(factor_j)
        # an Elman cell in this notation, for the comparison: its recurrent weight and pre-activation
        elman = _ElmanSymbols(sym, L)
        Pe = HandoutLatexPrinter(elman)
        h = lambda time: sym("hidden", L, time)  # noqa: E731
        jac, written = self.elman_jacobian(h(j), elman.pre_activation(j), elman.weight)
        blocks: list[Block] = [
            Paragraph((msg(f"additive.{self.cell}", ref=self.ref("carry"), factor=self.math(factor),
                           dplus=Math(r"\partial^{+}")),)),
            Equations((self.line(Partial(s(j), s(j - 1), True), one, f"eq:{name}:additive:step"),
                       self.line(Partial(s(t), s(k), True), sp.Product(one, (j, k + 1, t)), f"eq:{name}:additive:product",
                                 tag=self.tag("additive")))),
            Paragraph((msg("additive.elman"),)),
            Equations((Line(Pe.doprint(Partial(h(j), h(j - 1))), "=", Pe.doprint(jac) + " = " + Pe.doprint(written),
                            f"eq:{name}:additive:elman"),
                       Line(Pe.doprint(Partial(h(t), h(k))), "=", Pe.doprint(sp.Product(jac, (j, k + 1, t))),
                            f"eq:{name}:additive:elman-product", self.tag("elman")))),
            Paragraph((msg(f"additive.compare_{self.cell}", elman=self.ref("elman"), ours=self.ref("additive"),
                           update=self.ref("state"), factor=self.math(factor_j),
                           interval=Math(r"\left(0, 1\right)")),)),
        ]
        if self.numbers is not None and self.numbers.vanishing:
            measured = self.numbers.vanishing
            values = sorted(measured)
            keep = self.gate_symbol(KEEP[self.cell], j)
            legend = lambda x: self.math(sp.Eq(keep, sp.Float(x), evaluate=False))  # noqa: E731
            rows = tuple((str(n),) + tuple(f"{measured[x][n]:.4e}" for x in values) for n in range(len(measured[values[0]])))
            table = tuple((Math(str(n)),) + tuple(Math(self.P.scientific(measured[x][n])) for x in values)
                          for n in range(len(rows)))
            big_t = sp.Symbol("T")
            g = sp.MatrixSymbol("g", *self.col(h(big_t)).shape)
            blocks += [Paragraph((msg(f"additive.experiment_{self.cell}", steps=Math(f"T = {len(rows)}"), g=self.math(g),
                                      loss=Math("L = " + self.tex(sp.MatMul(g.T, self.col(h(big_t))))),
                                      gate=self.math(keep), values=Math(", ".join(f"{x:g}" for x in values))),)),
                       Plot(Math("t - k"), self.math(Norm(Partial(sp.Symbol("L"), s(k)))), tuple(legend(x) for x in values), rows,
                            msg(f"additive.caption_{self.cell}", ref=self.ref("additive"), gap=Math("t - k")), table)]
        return Section(msg("section.additive"), tuple(blocks))

    def conventions(self) -> Section:
        """The convention box: the frameworks' gate orders; for a GRU also the direction of
        the update and where the reset acts, each printed from the step rule's assignments."""
        sym, t, name = self.sym, self.t, self.name
        rows = tuple((Text(framework), Math(", ".join(self.tex(sp.Symbol(c)) for c in letters)),
                      Math(", ".join(self.tex(self.gate_symbol(k)) for k in ours)))
                     for framework, letters, ours in GATE_ORDERS[self.cell])
        table = Table((msg("table.framework"), msg("table.gate_order"), msg("table.handout_writes")), rows)
        sentences: list[Inline] = [msg(f"convention.order_{self.cell}")]
        after: list[Block] = [table]
        if self.cell == "gru":
            layer = self.d.rule.layers[-1]
            update = next(a for a in layer.forward if sym.info[a.lhs].role == "hidden")
            h_prev, n = self.h(t - 1), self.gate_symbol(sym.cell.CANDIDATE)
            z = self.gate_symbol(KEEP[self.cell])
            chung = update.rhs.xreplace({h_prev: n, n: h_prev})     # the roles of h_{t-1} and n swapped
            pre = next(a for a in layer.forward if sym.info[a.lhs].role == "pre_activation"
                       and sym.info[a.lhs].gate == sym.cell.CANDIDATE)
            other = self.other_reset(layer)
            reset = self.m.gru_reset
            after.append(Equations((
                self.line(update.lhs, update.rhs, f"eq:{name}:convention:cho", tag=self.tag("cho")),
                self.line(update.lhs, chung, f"eq:{name}:convention:chung", tag=self.tag("chung")),
                self.line(pre.lhs, pre.rhs, f"eq:{name}:convention:{reset}", tag=self.tag("own")),
                self.line(pre.lhs, other, f"eq:{name}:convention:other", tag=self.tag("other")))))
            one = sp.MatAdd(sp.OneMatrix(*z.shape), sp.MatMul(sp.Integer(-1), z))
            sentences += [msg("convention.update", cho=self.ref("cho"), chung=self.ref("chung"), z=self.math(z),
                              complement=self.math(one)),
                          msg(f"convention.reset_{reset}", own=self.ref("own"), other=self.ref("other"))]
        return Section(msg("section.conventions"), (Remark(msg("convention.lead"), tuple(sentences)), *after))

    def other_reset(self, layer) -> sp.MatrixExpr:
        """The GRU candidate's pre-activation with the reset on the other side of the recurrent
        product (CONTRACT §4): before, W x + U (r ⊙ h) + b; after, W x + b + r ⊙ (U h + c)."""
        sym, l, t, m = self.sym, layer.layer, self.t, self.m
        n, h_prev = sym.cell.CANDIDATE, self.h(t - 1, l)
        below = sym("input", None, t) if l == 1 else self.h(t, l - 1)
        W, U = sym("input_weight", l, gate=n), sym("recurrent_weight", l, gate=n)
        r = self.gate_symbol("r", layer=l)
        terms = [sym.product(W, below)]
        if m.gru_reset == "after":      # the other one is "before"
            terms.append(sym.product(U, sp.HadamardProduct(r, h_prev)))
            if m.bias:
                terms.append(sym("bias", l, gate=n))
        else:
            inner = sym.product(U, h_prev)
            if m.bias:
                terms.append(sym("bias", l, gate=n))
                inner = sp.MatAdd(inner, sym("recurrent_bias", l, gate=n))
            terms.append(sp.HadamardProduct(r, inner))
        return sp.MatAdd(*terms)

    def proof(self) -> Section:
        name, command = self.name, self.command
        check = f"derive check --preset {name}" if command.startswith("derive build --all") or "--preset" in command \
            else f"derive check {name}.toml"
        shown = "proof.shown_gated" if self.gated else "proof.shown"   # what derive check proves for the cell
        return Section(msg("section.proof"), (Paragraph((msg(shown, ref=self.ref("pathsum")),
                                                         msg("proof.repeat", command=Code(check)))),))

    def notes(self) -> Section | None:
        """What the source document wrote loosely, and the corrected form in math."""
        slips = SLIPS.get(self.notation, ())
        if not slips:
            return None
        sym, eta, t = self.sym, self.tex(self.eta), self.t
        blocks: list[Block] = []
        if self.notation == "doc000":
            W2 = sym("input_weight", self.L)
            dW = " + ".join(f"dW^{{{i}}}_{{{self.L}}}" for i in range(1, self.T + 1))
            blocks += [Paragraph((msg("slip.doc000_update"),)),
                       Equations((Line(self.tex(W2), "=", rf"-{eta} \left({dW}\right)", f"eq:{self.name}:slip:wrong"),
                                  Line(self.tex(W2), r"\leftarrow", rf"{self.tex(W2)} - {eta} \left({dW}\right)",
                                       f"eq:{self.name}:slip:right"))),
                       Paragraph((msg("slip.doc000_residual", e=Math("e^{t}"),
                                      residual=self.math(self.d.rule.top_upstream)),)),
                       Paragraph((msg("slip.doc000_transposes", wrong=Math(rf"V_{{{self.L}}} \times \delta^{{t+1}}_{{{self.L}}}"),
                                      right=self.math(sp.MatMul(sym("delta", self.L, t + 1), sym("recurrent_weight", self.L).T)),
                                      ref=self.ref(f"delta{self.L}")),))]
        elif self.notation == "doc003":
            o = lambda time: sym("hidden", 1, time)  # noqa: E731
            pred = self.d.unrolled.prediction(sp.Integer(self.T))
            three = sp.Integer(self.T)
            blocks += [Paragraph((msg("slip.doc003_chain", wrong=self.math(Partial(pred, o(self.j))), oj=self.math(o(self.j)),
                                      right=self.math(sp.Mul(Partial(pred, o(three)), Partial(o(three), o(self.j)))),
                                      ref=self.ref("pathsum")),))]
        elif self.notation == "d2l":
            blocks += [Paragraph((msg("slip.d2l_slope", ref=self.ref(f"delta{self.L}")),))]
        return Section(msg("section.notes"), tuple(blocks))
