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

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, ClassVar, Union

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.diagonal import DiagMatrix

from derive.emit.printers import HandoutLatexPrinter, Partial
from derive.rules import ACTIVATIONS, u, v
from derive.spec import SpecError

if TYPE_CHECKING:  # the derivation is handed in, never made here
    from derive.bptt import Derivation

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
    """One line of a displayed equation: `lhs op rhs`, all LaTeX, with its label."""

    lhs: str
    op: str
    rhs: str
    label: str


@dataclass(frozen=True)
class Equations(Block):
    """Displayed, labelled equations: one line is an equation, several are aligned at `op`."""

    kind: ClassVar[str] = "equations"
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Table(Block):
    kind: ClassVar[str] = "table"
    header: tuple[Inline, ...]
    rows: tuple[tuple[Inline, ...], ...]


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

#: What each source document wrote loosely, and the form this handout uses instead
#: (catalog keys, by notation preset).
SLIPS = {
    "doc000": ("slip.doc000_update", "slip.doc000_residual", "slip.doc000_transposes"),
    "doc003": ("slip.doc003_chain",),
    "d2l": ("slip.d2l_slope",),
}


def equation_labels(d: Derivation) -> dict[tuple[str, sp.MatrixSymbol], str]:
    """The handout's `\\label`s of the equations that define a forward quantity, a delta or
    a total, keyed by what they define; the unrolled module cites the same labels."""
    name, sym = d.spec.name, d.sym
    out = {}
    for time in d.unrolled.times:
        for i, a in enumerate(x for x in d.unrolled.forward if x.time == time):
            out["fwd", a.lhs] = f"eq:{name}:fwd:{int(time)}:{i}"
        for i, a in enumerate(x for x in d.deltas if x.time == time):
            out["delta", a.lhs] = f"eq:{name}:delta:{int(time)}:{i}"
    for p in d.uses:
        out["total", p] = f"eq:{name}:total:{sym.names.python(sym.info[p].role, sym.info[p].layer)}"
    return out


def _shape(expr: sp.MatrixExpr, sizes: dict) -> Message:
    rows, cols = (str(sp.sympify(x).xreplace(sizes)) for x in expr.shape)
    return msg("table.shape_of", rows=Text(rows), cols=Text(cols))


def build(derivation: Derivation, command: str, language: str = "en") -> Document:
    """The handout of one derivation, in one language (checked against its catalog)."""
    catalog(language)
    h = _Handout(derivation, command)
    spec = derivation.spec
    lead = Paragraph((msg("intro.follows", source=msg(f"source.{spec.notation.preset}"),
                          layout=msg(f"layout.{spec.layout}")),
                      msg("intro.printed")))
    sections = (h.model(), h.forward(), h.loss(), h.deltas(), h.grads(), h.paths(), h.proof()) + h.notes()
    return Document(language, spec.name, command, Text(spec.title or spec.name),
                    msg("author", spec=Code(spec.name)), lead, sections)


class _Handout:
    """The sections of the handout, one method each, from one derivation."""

    t, k, j = sp.symbols("t k j", integer=True, positive=True)

    def __init__(self, derivation: Derivation, command: str):
        self.d, self.spec, self.command = derivation, derivation.spec, command
        self.sym, self.m = derivation.sym, derivation.spec.model
        self.P = HandoutLatexPrinter(self.sym)
        self.L, self.T, self.name = self.m.layers, self.spec.bptt.steps, self.spec.name
        self.labels = equation_labels(derivation)
        self.act = ACTIVATIONS[self.m.activation]

    def python(self, p: sp.MatrixSymbol) -> str:
        return self.sym.names.python(self.sym.info[p].role, self.sym.info[p].layer)

    def line(self, lhs: sp.Basic | str, rhs: sp.Basic | str, label: str, op: str = "=") -> Line:
        P = self.P
        return Line(lhs if isinstance(lhs, str) else P.doprint(lhs), op,
                    rhs if isinstance(rhs, str) else P.doprint(rhs), label)

    def step(self, time: sp.Expr) -> Paragraph:
        """The run-in heading "Step t = 2." of one step's equations."""
        return Paragraph((), msg("step", t=Math(self.P.doprint(sp.Eq(self.t, int(time))))))

    def model(self) -> Section:
        """The table of symbols, and the activation's slope."""
        sym, P, L, t = self.sym, self.P, self.L, self.t
        sizes = sym.sizes()
        rows = []
        for p in sym.params():
            q = sym.info[p]
            role: Inline = msg(f"role.{q.role}")
            if L > 1 and q.layer <= L:
                role = msg("role_of_layer", role=role, layer=Text(str(q.layer)))
            rows.append((Math(P.doprint(p)), role, _shape(p, sizes), Code(self.python(p))))
        quantities = [("input", None)] + [("hidden", l) for l in range(1, L + 1)] + \
            [("pre_activation", l) for l in range(1, L + 1)] + \
            ([("logits", None), ("output", None)] if self.m.output_size else [])
        for role_name, layer in quantities:
            s = sym(role_name, layer, t)
            rows.append((Math(P.doprint(s)), msg(f"role.{role_name}"), _shape(s, sizes), Code("-")))
        table = Table(tuple(msg(f"table.{c}") for c in ("symbol", "role", "shape", "code")), tuple(rows))
        act = self.act
        slope = self.line(rf"{P.function_name(act.value)}'(u)", P.doprint(act.slope.xreplace({v: act.value})) + " = "
                          + P.doprint(act.slope.xreplace({v: sp.Symbol("v")})), f"eq:{self.name}:slope")
        return Section(msg("section.model"), (
            table, Paragraph((msg("model.activation", activation=Text(self.m.activation)),)), Equations((slope,))))

    def forward(self) -> Section:
        """The forward pass, one block per step."""
        d, blocks = self.d, []
        for time in d.unrolled.times:
            blocks += [self.step(time), Equations(tuple(self.line(a.lhs, a.rhs, self.labels["fwd", a.lhs])
                                                        for a in d.unrolled.forward if a.time == time))]
        steps = Math(self.P.doprint(sp.Eq(sp.Symbol("T"), self.T)))
        return Section(msg("section.forward", self.T, steps=steps), tuple(blocks))

    def loss(self) -> Section:
        d, t, T = self.d, self.t, self.T
        total = sp.Sum(sp.Symbol("E_t"), (t, 1, T)) if self.spec.loss.at == "every_step" else sp.Symbol("E_T")
        lines = [self.line(a.lhs, a.rhs, f"eq:{self.name}:loss:{int(a.time)}") for a in d.unrolled.losses]
        lines.append(self.line("L", d.scale * total, f"eq:{self.name}:loss"))
        return Section(msg("section.loss"), (Equations(tuple(lines)),))

    def deltas(self) -> Section:
        """The delta recursion, one block per step from T down to 1, and truncation."""
        d, P, k = self.d, self.P, self.k
        blocks: list[Block] = [Paragraph((msg("delta.intro", odot=Math(r"\odot")),))]
        for time in reversed(d.unrolled.times):
            lines = tuple(self.line(a.lhs, a.rhs, self.labels["delta", a.lhs]) for a in d.deltas if a.time == time)
            if lines:
                blocks += [self.step(time), Equations(lines)]
        truncate = self.spec.bptt.truncate
        if truncate and self.spec.bptt.truncate_style == "chunk":
            blocks.append(Paragraph((msg("truncation.chunk", k=Math(P.doprint(sp.Eq(k, truncate)))),),
                                    msg("truncation.lead")))
        elif truncate:
            window = msg("truncation.window", truncate, k=Math(P.doprint(sp.Eq(k, truncate))),
                         steps=Text(str(truncate)))
            blocks.append(Paragraph((window, msg("truncation.age", steps=Text(str(truncate)))),
                                    msg("truncation.lead")))
        if truncate:   # the kept (s, k) pairs of the path sum: a band (window) or blocks (chunk)
            T = int(self.T)
            blocks += [Paragraph((msg("truncation.kept", s=Math("s"), k=Math("k")),)), Table(
                (Math(r"s \backslash k"), *(Math(str(c)) for c in range(1, T + 1))),
                tuple((Math(str(r)), *(Math(r"\bullet" if c in self.d.kept_steps(r) else r"\cdot")
                                       for c in range(1, T + 1))) for r in range(1, T + 1)))]
        span = Math(rf"{P.doprint(sp.Eq(self.t, self.T))}, \dots, 1")
        return Section(msg("section.deltas", span=span), tuple(blocks))

    def grads(self) -> Section:
        """Per parameter: the contribution of each step, the total and the update; clipping."""
        d, P, name = self.d, self.P, self.name
        blocks: list[Block] = []
        eta = P.doprint(sp.Symbol(r"\eta"))
        for p, uses in d.uses.items():
            symbol = P.doprint(p)
            dname = rf"\frac{{\partial L}}{{\partial {symbol}}}"
            steps = tuple(self.line(rf"{dname}\Big|_{{{int(time)}}}", e, f"eq:{name}:use:{self.python(p)}:{int(time)}")
                          for time, e in uses)
            blocks.append(Equations(steps + (
                self.line(dname, d.totals[p], self.labels["total", p]),
                self.line(symbol, f"{symbol} - {eta} {dname}", f"eq:{name}:update:{self.python(p)}",
                          op=r"\leftarrow"))))
        h0 = P.doprint(self.sym("hidden", 1, sp.Integer(0)))
        blocks.append(Paragraph((msg("grads.zero_state", h0_zero=Math(f"{h0} = 0"), h0=Math(h0),
                                     t=Math(P.doprint(sp.Eq(self.t, 2)))),)))
        if self.spec.bptt.clip:
            clip = sp.Float(self.spec.bptt.clip)
            interval = Math(P.doprint(sp.Interval(-clip, clip)))
            blocks.append(Paragraph((msg("clipping.rule", interval=interval), msg("clipping.direction")),
                                    msg("clipping.lead")))
        if self.spec.bptt.clip_norm:
            g, n = sp.Symbol("g"), sp.Float(self.spec.bptt.clip_norm)
            factor = Math(P.doprint(sp.Min(1, n / (sp.Symbol(r"\lVert g \rVert_2") + sp.Float(1e-6)), evaluate=False)))
            blocks.append(Paragraph((msg("clipping.norm", factor=factor, g=Math(P.doprint(g))), msg("clipping.direction")),
                                    msg("clipping.lead")))
        return Section(msg("section.grads"), tuple(blocks))

    def paths(self) -> Section:
        """The same gradient as a sum over paths, and the Jacobian of one step."""
        sym, P, L, T, m = self.sym, self.P, self.L, self.T, self.m
        t, k, j = self.t, self.k, self.j
        h = lambda time: sym("hidden", L, time)  # noqa: E731
        weight = sym("recurrent_weight", L)
        theta = sym("input_weight", 1)
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
        col = (lambda e: e.T) if sym.row else (lambda e: e)
        body = self.act.slope.xreplace({v: u})
        # diag() of a row or a column vector is the same matrix: keep the course's vector
        diag = sp.Identity(col(h(j)).shape[0]) if body == 1 else \
            DiagMatrix(ElementwiseApplyFunction(sp.Lambda(u, body), h(j)))
        where = msg("paths.direct", dplus=Math(r"\partial^{+}"))
        if L > 1:
            jacobians = (where, msg("paths.stacked", state=Math(P.doprint(h(t))), t=Math(P.doprint(t))),
                         msg("paths.top_layer"))
        else:
            jacobians = (where, msg("paths.one_step"))
        name = self.name
        return Section(msg("section.paths"), (
            Equations((self.line(Partial(sp.Symbol("L"), theta), outer, f"eq:{name}:pathsum"),)),
            Paragraph(jacobians),
            Equations((self.line(Partial(h(j), h(j - 1)), sp.MatMul(diag, col(weight)), f"eq:{name}:jacobian"),
                       self.line(Partial(h(t), h(k)), sp.Product(sp.MatMul(diag, col(weight)), (j, k + 1, t)),
                                 f"eq:{name}:jacobian-product"))),
            Paragraph((msg("paths.vanishing", range=Text(self.act.slope_range), activation=Text(m.activation)),)),
        ))

    def proof(self) -> Section:
        name, command = self.name, self.command
        check = f"derive check --preset {name}" if command.startswith("derive build --all") or "--preset" in command \
            else f"derive check {name}.toml"
        return Section(msg("section.proof"), (Paragraph((msg("proof.shown"), msg("proof.repeat", command=Code(check)))),))

    def notes(self) -> tuple[Section, ...]:
        """What the source document wrote loosely, if anything."""
        slips = SLIPS.get(self.spec.notation.preset, ())
        return (Section(msg("section.notes"), (Items(tuple(msg(key) for key in slips)),)),) if slips else ()
