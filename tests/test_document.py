"""The handout as a language-neutral Document: built once from a derivation, its prose
from one catalog, rendered by formats that are one class and one template per block kind.

Why: issue 9 item 5. LaTeX and Markdown must say the same sentences (they used to be typed
twice), translations must find every sentence in the catalog, and text must be escaped
for the format it lands in.
"""
from __future__ import annotations

import dataclasses
import re
import string
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import jinja2
import pytest

from derive import bptt, document, notation, numbers, unroll
from derive.build import render_all
from derive.latex import typeset as _pdf
from derive.document import Block, Code, Document, Figure, Math, Message, Section, Text, msg
from derive.emit import render
from derive.formats import documents, latex, markdown
from derive.spec import BPTT, Loss, Model, Notation, Spec, SpecError, preset, preset_names

COMMAND = "derive build --all"
FORMATS = (latex.Latex(), markdown.Markdown())


def _variants() -> list[Spec]:
    """The bundled presets, and specs in the two notations no preset uses."""
    # (one step and a truncation of one: the singular forms)
    extra = [Spec(name="rnn", model=Model(3, (4,), output_size=2, output_activation="softmax"),
                  loss=Loss("cross_entropy"), bptt=BPTT(steps=steps, truncate=truncate),
                  notation=Notation(preset=p))
             for p, steps, truncate in (("cs231n", 2, 0), ("dlai", 1, 1))]
    # no output layer and no loss: the upstream gradient is the target
    extra.append(Spec(name="layer", model=Model(2, (3,)), loss=Loss("none"), bptt=BPTT(steps=2)))
    # gated cells: an LSTM and both GRU resets (their sections, gate names and conventions)
    extra += [Spec(name=f"{cell}_{reset}", model=Model(3, (2,), output_size=2, output_activation="softmax",
                                                      cell=cell, gru_reset=reset),
                   loss=Loss("cross_entropy"), bptt=BPTT(steps=2))
              for cell, reset in (("lstm", "after"), ("gru", "after"), ("gru", "before"))]
    extra.append(Spec(name="lstm_dlai", model=Model(2, (2,), output_size=2, output_activation="softmax", cell="lstm"),
                      loss=Loss("cross_entropy"), bptt=BPTT(steps=1), notation=Notation(preset="dlai")))
    return [preset(n) for n in preset_names()] + extra


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    # with the numbers stage, as `derive build` makes them: every section is present
    out = []
    for s in _variants():
        d = bptt.derive(s)
        out.append(document.build(d, COMMAND, numbers=numbers.compute(d, COMMAND)))
    return out


def messages(value: object) -> list[Message]:
    """Every message of a document, nested ones too, in order."""
    if isinstance(value, Message):
        return [value] + [m for _, arg in value.args for m in messages(arg)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [m for f in dataclasses.fields(value) for m in messages(getattr(value, f.name))]
    if isinstance(value, tuple):
        return [m for x in value for m in messages(x)]
    return []


def test_the_document_is_built_from_the_given_derivation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    d = bptt.derive(preset("stacked_mse"))

    def no(*args, **kwargs):
        raise AssertionError("the document derived again")
    for module, name in [(bptt, "derive"), (bptt, "step_rule"), (bptt, "reverse"), (bptt, "output_rule"),
                         (unroll, "unroll"), (unroll, "step")]:
        monkeypatch.setattr(module, name, no)
    doc = document.build(d, COMMAND)
    assert r"h_{2}^{3} &= \tanh\left(z_{2}^{3}\right)" in latex.render(doc)
    assert "## The delta recursion" in markdown.render(doc)


def test_the_document_and_its_formats_import_no_derivation_and_no_other_emitter() -> None:
    code = ("import sys, derive.document, derive.formats.latex, derive.formats.markdown; "
            "print(sorted(m for m in sys.modules if m.startswith('derive.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for stage in ("derive.bptt", "derive.check", "derive.evaluate", "derive.build", "derive.emit.python"):
        assert f"'{stage}'" not in loaded


def test_one_build_derives_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = bptt.derive
    monkeypatch.setattr(bptt, "derive", lambda spec: calls.append(spec.name) or real(spec))
    out = render_all(preset("elman_softmax"), ["tex", "md", "py"], "loop", COMMAND)
    assert sorted(out) == ["md", "py", "tex"] and calls == ["elman_softmax"]


def forms(pattern: document.Pattern) -> list[str]:
    return list(pattern.values()) if isinstance(pattern, dict) else [pattern]


def test_every_catalog_key_is_used_and_every_used_key_exists(docs: list[Document]) -> None:
    used = {m.key for doc in docs for m in messages(doc)}
    catalog = document.catalog("en")
    assert used - set(catalog) == set(), "messages missing from derive/locale/en.toml"
    assert set(catalog) - used == set(), "messages in derive/locale/en.toml that no document uses"
    rule = document.PLURAL_RULES["en"]
    plural = {(m.key, rule(m.count)) for doc in docs for m in messages(doc) if m.count is not None}
    assert plural == {(key, form) for key, p in catalog.items() if isinstance(p, dict) for form in p}
    # a notation preset added later needs its source document named in the catalog
    assert {f"source.{p}" for p in notation.PRESETS} <= set(catalog)


def test_every_message_has_exactly_its_placeholders(docs: list[Document]) -> None:
    catalog = document.catalog("en")
    for m in {m for doc in docs for m in messages(doc)}:
        for form in forms(catalog[m.key]):
            fields = {f for _, f, _, _ in string.Formatter().parse(form) if f is not None}
            assert fields == {name for name, _ in m.args}, m.key
        assert isinstance(catalog[m.key], dict) == (m.count is not None), m.key


def test_both_renderings_say_the_same_sentences(docs: list[Document], monkeypatch: pytest.MonkeyPatch) -> None:
    # every message becomes a token that no escaping touches, its placeholders kept
    real = document.catalog("en")
    tokens = {key: {form: f"Q{i}Q " + " ".join(f"{{{f}}}" for _, f, _, _ in string.Formatter().parse(text) if f)
                    for form, text in (p.items() if isinstance(p, dict) else [("other", p)])}
              for i, (key, p) in enumerate(sorted(real.items()))}
    tokens = {key: p if isinstance(real[key], dict) else p["other"] for key, p in tokens.items()}
    monkeypatch.setattr(document, "catalog", lambda language: tokens)
    index = {f"Q{i}Q": key for i, key in enumerate(sorted(real))}
    for doc in docs:
        found = [Counter(index[t] for t in re.findall(r"Q\d+Q", f.render(doc))) for f in FORMATS]
        assert found[0] == found[1] == Counter(m.key for m in messages(doc)), doc.name


def test_no_sentence_is_typed_in_a_template() -> None:
    catalog = document.catalog("en")
    folder = resources.files("derive.templates")
    paths = [p for sub in ("latex", "markdown") for p in folder.joinpath(sub).iterdir() if p.name.endswith(".j2")]
    assert len(paths) == 2 * (len(Block.__subclasses__()) + 1)
    for path in paths:
        text = path.read_text("utf-8")
        for key, message in catalog.items():
            for literal, _, _, _ in (part for form in forms(message) for part in string.Formatter().parse(form)):
                words = literal.strip(" .,:;()")
                if len(words.split()) >= 2:
                    assert words not in text, f"{path.name} types the prose of {key}"


def test_the_catalog_of_an_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="language: no catalog for 'xx'; available: en"):
        document.build(bptt.derive(preset("uwv_softmax")), COMMAND, language="xx")
    with pytest.raises(SpecError):
        document.catalog("../en")


# --------------------------------------------------------------------------- escaping

HOSTILE = r"A_b & {c} $d$ 50% #1 ~x^y \z <w> |p| *q* [r] --s `t` ''u'' <<v>> ,,"


def test_text_is_escaped_for_tex() -> None:
    assert latex.tex_text(HOSTILE) == (
        r"A\_b \& \{c\} \$d\$ 50\% \#1 \~{}x\^{}y \textbackslash{}z <w> |p| *q* [r] -{}-s "
        r"\textasciigrave{}t\textasciigrave{} '{}'u'{}' <{}<v>{}> ,{},{}")
    assert latex.tex_text("pre-activation") == "pre-activation"
    assert latex.tex_text("a-") == "a-{}", "the next run could start with a hyphen"


def test_text_is_escaped_for_markdown() -> None:
    assert markdown.md_text(HOSTILE) == (
        r"A_b \& {c} \$d\$ 50% #1 \~x^y \\z \<w\> \|p\| \*q\* \[r\] --s \`t\` ''u'' \<\<v\>\> ,,")
    assert markdown.md_text("W_xh _x_ y_") == r"W_xh \_x\_ y\_"
    assert markdown.md_code("a`b") == "``a`b``"
    assert markdown.md_code("`a") == "`` `a ``"


def test_a_title_and_a_name_with_specials_are_escaped_in_each_format() -> None:
    doc = document.build(bptt.derive(preset("many_to_one_bce")), "derive build my-->spec\n.toml")
    doc = dataclasses.replace(doc, title=Text(HOSTILE))
    tex, md = latex.render(doc), markdown.render(doc)
    assert "\\title{" + latex.tex_text(HOSTILE) + "}" in tex
    assert r"\author{Generated by derive from the spec \texttt{many\_to\_one\_bce}}" in tex
    assert "\n# " + markdown.md_text(HOSTILE) + "\n" in md
    assert "*Generated by derive from the spec `many_to_one_bce`*" in md
    # the command stays on its comment line, and cannot close the Markdown comment
    assert "% Regenerate with: derive build my-->spec .toml\n" in tex
    assert md.count("-->") == 1 and "my--&gt;spec .toml -->" in md
    # code in the prose is escaped too (_ would start a subscript)
    assert r"\texttt{derive check many\_to\_one\_bce.toml}" in tex
    assert "`derive check many_to_one_bce.toml`" in md


def test_a_hostile_title_typesets(tmp_path: Path) -> None:
    doc = document.build(bptt.derive(preset("many_to_one_bce")), COMMAND)
    tex = latex.render(dataclasses.replace(doc, title=Text(HOSTILE)))
    pdf = _pdf(tex.encode(), "hostile")
    if pdf is None:
        pytest.skip("no TeX engine")
    assert pdf.startswith(b"%PDF")


# --------------------------------------------------------------------------- formats

def test_every_block_kind_has_a_template_in_every_format() -> None:
    kinds = {cls.kind for cls in Block.__subclasses__()}
    assert kinds == {"paragraph", "equations", "table", "items", "figure", "remark", "diagram", "plot"}
    for fmt in FORMATS:
        for kind in kinds | {"document"}:
            assert render.environment().get_template(fmt.template(kind))


def test_a_figure_renders_in_both_formats() -> None:
    doc = document.build(bptt.derive(preset("uwv_softmax")), COMMAND)
    figure = Figure("vanishing", msg("section.paths"), "fig:uwv_softmax:vanishing")
    doc = dataclasses.replace(doc, sections=doc.sections + (Section(msg("section.proof"), (figure,)),))
    tex, md = latex.render(doc), markdown.render(doc)
    assert r"\usepackage{graphicx}" in tex and r"\usepackage{graphicx}" not in latex.render(
        document.build(bptt.derive(preset("uwv_softmax")), COMMAND))
    assert ("\\includegraphics{vanishing}\n\\caption{The same gradient as a sum over paths}"
            "\\label{fig:uwv_softmax:vanishing}") in tex
    assert "![The same gradient as a sum over paths](vanishing.svg)" in md


class Plain(documents.DocumentFormat):
    """A test-only format: plain text, one tiny template per block kind."""

    folder, suffix = "plain", "txt"
    TEMPLATES = {
        "plain/document.txt.j2": "{{ doc.title }}\n\n{{ doc.lead }}\n{% for s in doc.sections %}\n"
                                 "== {{ s.title }}\n{% for b in s.blocks %}{{ b }}\n{% endfor %}{% endfor %}",
        "plain/paragraph.txt.j2": "{% if block.lead %}{{ block.lead }} {% endif %}{{ block.sentences | join(' ') }}",
        "plain/equations.txt.j2": "{% for e in block.lines %}  {{ e.lhs }} {{ e.op }} {{ e.rhs }}\n{% endfor %}",
        "plain/table.txt.j2": "{% for row in block.rows %}{{ row | join(' | ') }}\n{% endfor %}",
        "plain/items.txt.j2": "{% for e in block.entries %}* {{ e }}\n{% endfor %}",
        "plain/figure.txt.j2": "[{{ block.graphic }}: {{ block.caption }}]",
        "plain/remark.txt.j2": "[{{ block.lead }} {{ block.sentences | join(' ') }}]",
        "plain/diagram.txt.j2": "{% for e in block.edges %}{{ e.source_label }} -> {{ e.target_label }}\n{% endfor %}",
        "plain/plot.txt.j2": "{% for row in block.rows %}{{ row | join(' ') }}\n{% endfor %}",
    }

    def text(self, text: str) -> str:
        return text

    def math(self, latex: str) -> str:
        return latex

    def code(self, text: str) -> str:
        return text

    def environment(self) -> jinja2.Environment:
        return render.make_environment(jinja2.DictLoader(self.TEMPLATES))


def test_a_format_is_one_class_and_one_template_per_block_kind() -> None:
    doc = document.build(bptt.derive(preset("stacked_mse")), COMMAND)
    text = Plain().render(doc)
    assert text.startswith("Stacked RNN: backpropagation through time, step by step\n\n"
                           "This handout follows document 000 (Russian), a stacked RNN worked by hand, in its own notation (row layout).")
    assert "\n== The delta recursion, t = 3, \\dots, 1\n" in text
    assert "\n  h_{2}^{3} = \\tanh\\left(z_{2}^{3}\\right)\n" in text
    assert "W_{1} | 3 \\times 2 | W_1 | input-to-hidden weight, layer 1" in text
    assert "x^{1} -> h_{1}^{1}\n" in text
    assert "Document 000 calls e^{t} the MSE;" in text


def test_a_missing_or_wrong_placeholder_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = document.build(bptt.derive(preset("uwv_softmax")), COMMAND)
    real = document.catalog("en")
    monkeypatch.setattr(document, "catalog", lambda language: {**real, "step": "Step {time}."})
    with pytest.raises(KeyError, match="'step' must use exactly the placeholders"):
        latex.render(doc)
    monkeypatch.setattr(document, "catalog", lambda language: {**real, "section.loss": {"other": "Loss"}})
    with pytest.raises(KeyError, match="'section.loss' has plural forms but no count was given"):
        latex.render(doc)
    monkeypatch.setattr(document, "catalog", lambda language: {})
    with pytest.raises(KeyError, match="catalog en: no message"):
        markdown.render(doc)


@pytest.mark.parametrize("steps, truncate, forward, window", [
    (1, 1, "unrolled for $T = 1$ step}", "at most 1 step."),
    (2, 2, "unrolled for $T = 2$ steps}", "at most 2 steps."),
])
def test_a_count_picks_the_plural_form(steps: int, truncate: int, forward: str, window: str) -> None:
    spec = dataclasses.replace(preset("truncated_elman"), bptt=BPTT(steps=steps, truncate=truncate))
    tex = latex.render(document.build(bptt.derive(spec), COMMAND))
    assert forward in tex and window in tex


def test_the_document_holds_no_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    # built for another language, it differs only in its language tag: the sentences
    # are keys, and the catalog is read by the renderer
    d = bptt.derive(preset("truncated_elman"))
    english = document.build(d, COMMAND)
    real = document.catalog
    monkeypatch.setattr(document, "catalog", lambda language: real("en" if language == "xx" else language))
    other = document.build(d, COMMAND, language="xx")
    assert other != english and dataclasses.replace(other, language="en") == english
    assert document.build(d, COMMAND) == english, "deterministic"
    runs = [r for m in messages(english) for _, r in m.args if not isinstance(r, Message)]
    assert {type(r) for r in runs} == {Text, Math, Code}
