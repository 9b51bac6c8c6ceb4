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
    d, spec = derivation, derivation.spec
    sym, m = d.sym, spec.model
    P = HandoutLatexPrinter(sym)
    L, T, name = m.layers, spec.bptt.steps, spec.name
    t, k, j = sp.symbols("t k j", integer=True, positive=True)
    labels = equation_labels(d)
    python = lambda p: sym.names.python(sym.info[p].role, sym.info[p].layer)  # noqa: E731

    def line(lhs, rhs, label: str, op: str = "=") -> Line:
        return Line(lhs if isinstance(lhs, str) else P.doprint(lhs), op,
                    rhs if isinstance(rhs, str) else P.doprint(rhs), label)

    def step_lead(time: int) -> Message:
        return msg("step", t=Math(P.doprint(sp.Eq(t, time))))

    # --- model and notation: the table of symbols, and the activation's slope
    sizes = sym.sizes()
    rows = []
    for p in sym.params():
        q = sym.info[p]
        role: Inline = msg(f"role.{q.role}")
        if L > 1 and q.layer <= L:
            role = msg("role_of_layer", role=role, layer=Text(str(q.layer)))
        rows.append((Math(P.doprint(p)), role, _shape(p, sizes), Code(python(p))))
    quantities = [("input", None)] + [("hidden", l) for l in range(1, L + 1)] + \
        [("pre_activation", l) for l in range(1, L + 1)] + \
        ([("logits", None), ("output", None)] if m.output_size else [])
    for role_name, layer in quantities:
        s = sym(role_name, layer, t)
        rows.append((Math(P.doprint(s)), msg(f"role.{role_name}"), _shape(s, sizes), Code("-")))
    table = Table(tuple(msg(f"table.{c}") for c in ("symbol", "role", "shape", "code")), tuple(rows))
    act = ACTIVATIONS[m.activation]
    slope = line(rf"{act.latex}'(u)",
                 P.doprint(act.slope.xreplace({v: act.value})) + " = " + P.doprint(act.slope.xreplace({v: sp.Symbol("v")})),
                 f"eq:{name}:slope")
    model = Section(msg("section.model"), (
        table,
        Paragraph((msg("model.activation", activation=Text(m.activation)),)),
        Equations((slope,)),
    ))

    # --- forward pass, one block per step
    forward_blocks: list[Block] = []
    for time in d.unrolled.times:
        forward_blocks += [Paragraph((), step_lead(int(time))), Equations(tuple(
            line(a.lhs, a.rhs, labels["fwd", a.lhs]) for a in d.unrolled.forward if a.time == time))]
    forward = Section(msg("section.forward", T, steps=Math(P.doprint(sp.Eq(sp.Symbol("T"), T)))),
                      tuple(forward_blocks))

    # --- loss
    total_loss = sp.Sum(sp.Symbol("E_t"), (t, 1, T)) if spec.loss.at == "every_step" else sp.Symbol("E_T")
    losses = [line(a.lhs, a.rhs, f"eq:{name}:loss:{int(a.time)}") for a in d.unrolled.losses]
    losses.append(line("L", d.scale * total_loss, f"eq:{name}:loss"))
    loss = Section(msg("section.loss"), (Equations(tuple(losses)),))

    # --- the delta recursion, one block per step from T down to 1
    delta_blocks: list[Block] = [Paragraph((msg("delta.intro", odot=Math(r"\odot")),))]
    for time in reversed(d.unrolled.times):
        rows_ = tuple(line(a.lhs, a.rhs, labels["delta", a.lhs]) for a in d.deltas if a.time == time)
        if rows_:
            delta_blocks += [Paragraph((), step_lead(int(time))), Equations(rows_)]
    if spec.bptt.truncate:
        kk = Text(str(spec.bptt.truncate))
        delta_blocks.append(Paragraph((
            msg("truncation.window", spec.bptt.truncate, k=Math(P.doprint(sp.Eq(k, spec.bptt.truncate))), steps=kk),
            msg("truncation.age", steps=kk)), msg("truncation.lead")))
    span = Math(rf"{P.doprint(sp.Eq(t, T))}, \dots, 1")
    deltas = Section(msg("section.deltas", span=span), tuple(delta_blocks))

    # --- per-step contributions, totals and the update
    grad_blocks: list[Block] = []
    eta = sp.Symbol(r"\eta")
    for p, uses in d.uses.items():
        symbol = P.doprint(p)
        dname = rf"\frac{{\partial L}}{{\partial {symbol}}}"
        grad_blocks.append(Equations(
            tuple(line(rf"{dname}\Big|_{{{int(time)}}}", e, f"eq:{name}:use:{python(p)}:{int(time)}")
                  for time, e in uses)
            + (line(dname, d.totals[p], labels["total", p]),
               line(symbol, f"{symbol} - {P.doprint(eta)} {dname}", f"eq:{name}:update:{python(p)}",
                    op=r"\leftarrow"))))
    h0 = P.doprint(sym("hidden", 1, sp.Integer(0)))
    grad_blocks.append(Paragraph((msg("grads.zero_state", h0_zero=Math(f"{h0} = 0"), h0=Math(h0),
                                      t=Math(P.doprint(sp.Eq(t, 2)))),)))
    if spec.bptt.clip:
        clip = sp.Float(spec.bptt.clip)
        grad_blocks.append(Paragraph((msg("clipping.rule", interval=Math(P.doprint(sp.Interval(-clip, clip)))),),
                                     msg("clipping.lead")))
    grads = Section(msg("section.grads"), tuple(grad_blocks))

    # --- path sums: the general form, and the Jacobian of one step
    h = lambda time: sym("hidden", L, time)  # noqa: E731
    weight = sym("recurrent_weight", L)
    theta = sym("input_weight", 1)
    last = spec.loss.at == "last_step"
    s = sp.Integer(T) if last else t      # the step of the loss term
    window_low = sp.Max(1, s - spec.bptt.truncate + 1) if spec.bptt.truncate else 1
    pred = d.unrolled.prediction(s)
    chain = [Partial(sym("loss", None, s), pred)]
    if m.output_size:
        chain.append(Partial(pred, h(s)))
    chain += [sp.Product(Partial(h(j), h(j - 1)), (j, k + 1, s)), Partial(h(k), theta, True)]
    inner = sp.Sum(sp.Mul(*chain), (k, window_low, s))
    outer = inner if last else sp.Sum(inner, (t, 1, T))
    col = (lambda e: e.T) if sym.row else (lambda e: e)
    body = act.slope.xreplace({v: u})
    # diag() of a row or a column vector is the same matrix: keep the course's vector
    diag = sp.Identity(col(h(j)).shape[0]) if body == 1 else \
        DiagMatrix(ElementwiseApplyFunction(sp.Lambda(u, body), h(j)))
    where = msg("paths.direct", dplus=Math(r"\partial^{+}"))
    if L > 1:
        jacobians = (where, msg("paths.stacked", state=Math(P.doprint(h(t))), t=Math(P.doprint(t))),
                     msg("paths.top_layer"))
    else:
        jacobians = (where, msg("paths.one_step"))
    paths = Section(msg("section.paths"), (
        Equations((line(Partial(sp.Symbol("L"), theta), outer, f"eq:{name}:pathsum"),)),
        Paragraph(jacobians),
        Equations((line(Partial(h(j), h(j - 1)), sp.MatMul(diag, col(weight)), f"eq:{name}:jacobian"),
                   line(Partial(h(t), h(k)), sp.Product(sp.MatMul(diag, col(weight)), (j, k + 1, t)),
                        f"eq:{name}:jacobian-product"))),
        Paragraph((msg("paths.vanishing", range=Text(act.slope_range), activation=Text(m.activation)),)),
    ))

    # --- the proof, and what the source wrote loosely
    check = f"derive check --preset {name}" if command.startswith("derive build --all") or "--preset" in command \
        else f"derive check {name}.toml"
    sections = [model, forward, loss, deltas, grads, paths,
                Section(msg("section.proof"), (Paragraph((msg("proof.shown"), msg("proof.repeat", command=Code(check)))),))]
    slips = SLIPS.get(spec.notation.preset, ())
    if slips:
        sections.append(Section(msg("section.notes"), (Items(tuple(msg(key) for key in slips)),)))
    lead = Paragraph((msg("intro.follows", source=msg(f"source.{spec.notation.preset}"),
                          layout=msg(f"layout.{spec.layout}")),
                      msg("intro.printed")))
    return Document(language, name, command, Text(spec.title or spec.name),
                    msg("author", spec=Code(name)), lead, tuple(sections))
