"""The shape of the house (issue 9): one derivation per build, formats and rules as
tables, and the pipeline's one-way data flow. Each route of README "How to add" is
proven here by a test-only row, format or spec."""
from __future__ import annotations

import ast
import dataclasses
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import sympy as sp

from derive import bptt, build, check, latex, spec
from derive.emit import render
from derive.emit.printers import HandoutLatexPrinter, LoopCodePrinter
from derive.formats import FORMATS, Format, Job
from derive.rules import ACTIVATIONS, Activation, table_function, u, v
from derive.spec import preset
from derive.matrices import elementwise
from reference_autograd import reference_loss_and_grads

PACKAGE = Path(__file__).resolve().parents[1] / "derive"


def load(text: str, name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    exec(compile(text, f"<{name}>", "exec"), mod.__dict__)
    return mod


# --------------------------------------------------------------------------- one derivation

@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_one_build_derives_each_spec_exactly_once(monkeypatch: pytest.MonkeyPatch, style: str) -> None:
    calls = []
    real = bptt.derive

    def counted(s):
        calls.append(s.name)
        return real(s)

    monkeypatch.setattr(bptt, "derive", counted)
    for name in ("stacked_mse", "truncated_elman"):
        files = build.render(preset(name), ["tex", "md", "py"], style=style)
        assert sorted(files) == sorted(f"{name}.{x}" for x in ("tex", "md", "py"))
    assert calls == ["stacked_mse", "truncated_elman"]


def _imports(path: Path) -> list[str]:
    """Modules imported by `path`, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


@pytest.mark.parametrize("path", sorted((PACKAGE / "formats").glob("*.py")) + sorted((PACKAGE / "emit").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_emitter_imports_the_derivation_or_another_emitter(path: Path) -> None:
    imported = _imports(path)
    stages = ("derive.bptt", "derive.unroll", "derive.check", "derive.build", "derive.cli")
    assert not [m for m in imported if m.startswith(stages)], path
    if path.parent.name == "formats" and path.name not in ("__init__.py", "base.py"):
        shared = ("derive.formats.base", "derive.formats.documents")   # bases, not formats
        others = [m for m in imported if m.startswith("derive.formats.") and not m.startswith(shared)]
        assert not others, f"{path.name} imports another format: {others}"


# --------------------------------------------------------------------------- formats

class PlainFormat(Format):
    """A test-only format: the spec's parameters as plain text, through its own template."""

    name: ClassVar[str] = "txt"
    TEMPLATE = "{% for p in params %}{{ p }} : {{ shapes[loop.index0] }}\n{% endfor %}"

    def files(self, name: str) -> list[str]:
        return [f"{name}.params.txt"]

    def render(self, job: Job) -> dict[str, bytes]:
        sym = job.derivation.sym
        params = sym.params()
        view = {"params": [HandoutLatexPrinter(sym).doprint(p) for p in params],
                "shapes": [str(p.shape) for p in params]}
        text = render.environment().from_string(self.TEMPLATE).render(**view)
        return {f"{job.name}.params.txt": text.encode()}


def test_a_dummy_format_is_one_class(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(FORMATS, "txt", PlainFormat())
    files = build.render(preset("elman_softmax"), ["txt", "py"])
    assert sorted(files) == ["elman_softmax.params.txt", "elman_softmax.py"]
    assert files["elman_softmax.params.txt"].decode().splitlines()[0] == "W_{xh} : (n_1, n_x)"
    written = build.build(preset("elman_softmax"), tmp_path, formats=["txt"])
    assert [p.name for p in written] == ["elman_softmax.params.txt"]


def test_two_formats_may_not_collide_and_pdf_reads_the_latex(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f for fmt in FORMATS.values() for f in fmt.files("x")]
    assert len(names) == len(set(names))
    seen = {}
    monkeypatch.setattr(latex, "typeset", lambda tex, name: seen.setdefault(name, tex) and b"%PDF")
    files = build.render(preset("many_to_one_bce"), ["pdf"])
    assert list(files) == ["many_to_one_bce.pdf"]   # the .tex is rendered for the PDF, not returned
    assert seen["many_to_one_bce"].startswith(b"% derive: generated file")


def test_unknown_format_or_style_is_a_spec_error() -> None:
    with pytest.raises(spec.SpecError, match="formats: must be a non-empty list of tex, pdf, md, py, got"):
        build.render(preset("elman_softmax"), ["docx"])
    with pytest.raises(spec.SpecError, match="style: 'bogus' is not one of loop, unrolled"):
        build.render(preset("elman_softmax"), ["py"], style="bogus")


# --------------------------------------------------------------------------- rules

softplus = table_function("softplus", r"\operatorname{softplus}", sp.log(1 + sp.exp(u)),
                          sp.codegen.numpy_nodes.logaddexp(0, u),
                          lambda f: 1 - sp.exp(-f(u)))   # f' = σ(u) = 1 - exp(-f(u)), through the output
SOFTPLUS = Activation("softplus", softplus(u), 1 - sp.exp(-v), "(0, 1)")


@pytest.fixture
def with_softplus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(ACTIVATIONS, "softplus", SOFTPLUS)
    base = preset("elman_softmax")
    return dataclasses.replace(base, name="softplus_rnn",
                               model=dataclasses.replace(base.model, activation="softplus", hidden_sizes=(3,)))


def test_a_softplus_row_builds_prints_and_passes_the_proofs(with_softplus) -> None:
    s = with_softplus
    spec.from_dict(s.to_dict())                  # the row is a valid choice in a spec
    assert all(row.ok for row in check.exact(s)), check.exact(s)
    d = bptt.derive(s)
    assert HandoutLatexPrinter(d.sym).doprint(d.rule.layers[0].activation) == \
        r"\operatorname{softplus}\left(a_{t}\right)"
    code = build.render_all(s, ["py"], "loop", "test")["py"]
    assert "        np.logaddexp(0, hv[t + 1], out=hv[t + 1])\n" in code   # in place, no overflow
    mod = load(code, "softplus_rnn")
    rng = np.random.default_rng(0)
    params = mod.init_params(seed=1, scale=0.5)
    xs = 30 * rng.standard_normal((4, 2, 3))     # large pre-activations: exp(a) would overflow
    targets = rng.integers(0, 3, size=(4, 2))
    with np.errstate(all="raise"):
        loss, grads = mod.loss_and_grads(params, xs, targets)
    assert np.isfinite(loss)
    xs = rng.standard_normal((4, 2, 3))
    loss, grads = mod.loss_and_grads(params, xs, targets)
    for name in mod.PARAMS:                     # central differences
        p = params[name]
        fd = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = mod.loss_and_grads(params, xs, targets)[0]
            p[i] = old - 1e-6
            down = mod.loss_and_grads(params, xs, targets)[0]
            p[i] = old
            fd[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-8, err_msg=name)


def test_sigmoid_is_a_function_of_its_own() -> None:
    d = bptt.derive(preset("many_to_one_bce"))
    y_hat = next(a for a in d.unrolled.forward if d.sym.info[a.lhs].role == "output")
    assert HandoutLatexPrinter(d.sym).doprint(y_hat.rhs) == r"\sigma\left(z_{1}\right)"
    C = LoopCodePrinter(d.sym, {d.sym("logits", None, sp.Integer(1)): "z"})
    assert C.vector(y_hat.rhs) == "0.5*np.tanh(0.5*z) + 0.5"
    # σ of a sum prints the sum in brackets, -(x w_i + o w_h), since σ prints as a formula
    pre = d.unrolled.forward[0].rhs
    refs = {d.sym("input", None, 1): "x", d.sym("hidden", 1, 0): "o", d.sym("input_weight", 1): "w_i",
            d.sym("recurrent_weight", 1): "w_h"}
    text = LoopCodePrinter(d.sym, refs).vector(elementwise(ACTIVATIONS["sigmoid"].value, pre))
    assert text == "0.5*np.tanh(0.5*(x @ w_i + o @ w_h)) + 0.5"


@pytest.mark.parametrize("layout", ["row", "column"])
@pytest.mark.parametrize("kind, output", [("mse", "sigmoid"), ("mse", "identity"), ("cross_entropy", "softmax"),
                                          ("cross_entropy", "identity"), ("bce", "sigmoid"), ("bce", "identity"),
                                          ("none", "softmax")])
def test_each_losss_stable_form_equals_its_textbook_form(kind: str, output: str, layout: str) -> None:
    from derive.evaluate import NumPyBackend, evaluate
    from derive.rules import LOSSES
    base = preset("elman_softmax")
    s = dataclasses.replace(base, model=dataclasses.replace(base.model, output_activation=output),
                            loss=dataclasses.replace(base.loss, kind=kind),
                            notation=dataclasses.replace(base.notation, layout=layout))
    d = bptt.derive(s)
    at = d.unrolled.at(sp.Integer(1))
    env = check.numeric_env(d.unrolled, np.random.default_rng(3))   # one-hot / (0, 1) targets
    env = check.run_forward(d.unrolled, env, NumPyBackend())
    sizes = d.sym.sizes()
    row = LOSSES[kind]
    value = evaluate(row.value(at), env, NumPyBackend(), sizes)
    stable = evaluate(row.stable(at), env, NumPyBackend(), sizes)
    np.testing.assert_allclose(stable, value, rtol=1e-12)


# --------------------------------------------------------------------------- naming

@pytest.mark.parametrize("names", [
    {"input_weight": "np", "recurrent_weight": "T", "hidden": "B"},
    {"input_weight": "xs", "recurrent_weight": "tmp", "bias": "dtype", "hidden": "hv"},
    {"input_weight": "W_hhT", "recurrent_weight": "W_hh", "hidden": "delta_h", "output_weight": "delta_hv"},
    {"input_weight": "g", "recurrent_weight": "p", "hidden": "t", "output_weight": "logits", "output_bias": "probs"},
])
@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_symbols_may_take_the_modules_own_local_names(names: dict, style: str) -> None:
    base = preset("truncated_elman")
    s = dataclasses.replace(base, model=dataclasses.replace(base.model, hidden_sizes=(3, 2)),
                            notation=dataclasses.replace(base.notation, names=tuple(sorted(names.items()))))
    s = spec.from_dict(s.to_dict())                 # valid
    mod = load(build.render_all(s, ["py"], style, "test")["py"], "named")
    rng = np.random.default_rng(0)
    params = mod.init_params(seed=2, scale=0.5)
    xs = rng.standard_normal((3, 2, 3))
    targets = rng.integers(0, 3, size=(3, 2))
    loss, grads = mod.loss_and_grads(params, xs, targets)
    ref_loss, ref = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for name in mod.PARAMS:
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_a_module_defines_only_the_helpers_it_calls() -> None:
    from derive.formats.module import HELPERS
    for name in spec.preset_names():
        code = build.render_all(preset(name), ["py"], "loop", "test")["py"]
        tree = ast.parse(code)
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        called = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert {h for h in HELPERS if h in defined} == {h for h in HELPERS if h in called}, name
        assert not [d for d in defined if d.startswith("_loss_")], name


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", ["truncated_elman", "stacked_mse", "many_to_one_bce"])
def test_the_namer_knows_every_name_the_templates_bind(name: str, style: str) -> None:
    """In the functions that bind the user's symbols, every other name is one the Namer avoids:
    a template that starts using a new local must list it in TEMPLATE_NAMES."""
    import builtins

    from derive.formats.module import HELPERS, TEMPLATE_NAMES
    base = preset(name)
    roles = ("input_weight", "recurrent_weight", "bias", "output_weight", "output_bias", "hidden")
    s = dataclasses.replace(base, notation=dataclasses.replace(
        base.notation, names=tuple((r, f"Q{i}") for i, r in enumerate(roles))))
    tree = ast.parse(build.render_all(spec.from_dict(s.to_dict()), ["py"], style, "test")["py"])
    user = ("Q", "delta_Q")   # every local the emitter derives from a symbol starts so
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        bound = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        bound |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        if not any(b.startswith(user) for b in bound):
            continue   # a helper: its own scope never holds a user's symbol
        unknown = {b for b in bound if not b.startswith(user)} - TEMPLATE_NAMES - set(HELPERS) - set(dir(builtins))
        assert not unknown, f"{fn.name} binds {sorted(unknown)}: add them to TEMPLATE_NAMES"


@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_the_module_alone_builds_no_document(monkeypatch: pytest.MonkeyPatch, style: str) -> None:
    """`derive check` and the tests render the module alone: the handout and its numbers
    (a worked example, fifty-step runs of the module) are not built for it."""
    from derive import document, numbers

    def unwanted(*args, **kwargs):
        raise AssertionError("the document stage ran for the module alone")

    monkeypatch.setattr(document, "build", unwanted)
    monkeypatch.setattr(numbers, "compute", unwanted)
    files = build.render(preset("truncated_elman"), ["py"], style=style)
    assert list(files) == ["truncated_elman.py"]
    with pytest.raises(AssertionError, match="document stage ran"):
        build.render(preset("truncated_elman"), ["md"])
