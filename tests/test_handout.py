"""The handouts teach as their documents do (issue 10): textbook printing, the worked
example and the vanishing-gradient plot with numbers checked against the generated
module, the documents' own steps, and a LaTeX build with a clean log.

Why: a handout is what a teacher hands out. Its numbers must be the module's numbers,
its formulas must read as the textbook writes them, and it must typeset cleanly.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

from derive import bptt, document, numbers
from derive.build import render_all
from derive.emit.printers import HandoutLatexPrinter
from derive.formats import latex, markdown
from derive.spec import BPTT, Example, Loss, Model, Notation, Spec, SpecError, from_dict, preset, preset_names

COMMAND = "derive build --all"


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    """Each preset's handouts and module, built now from the current code (tests/test_golden.py
    checks that generated/ holds exactly these)."""
    return {name: render_all(preset(name), ["tex", "md", "py"], "loop", COMMAND) for name in preset_names()}


def module_from(source: str, name: str) -> types.ModuleType:
    """A generated module, executed from its text (not through derive.numbers)."""
    mod = types.ModuleType(name)
    exec(compile(source, name, "exec"), mod.__dict__)
    return mod


# --------------------------------------------------------------------------- printing

def test_textbook_printing_of_sigma_the_losses_and_a_scalar_model(golden: dict) -> None:
    bce = golden["many_to_one_bce"]["tex"]
    assert r"\hat{y}_{3} &= \sigma\left(z_{3}\right)" in bce
    assert r"E_{3} &= - y_{3} \log{\left(\hat{y}_{3} \right)} - \left(1 - y_{3}\right) \log{\left(1 - \hat{y}_{3} \right)}" in bce
    # all sizes 1: scalars, no transposes, no diag, a product dot instead of the Hadamard circle
    assert r"\delta_{3}^{o} &= \left(\delta_{3}^{y} w_{o}\right) \cdot \left(1 - o_{3}^{2}\right)" in bce
    body = bce.split(r"\begin{document}")[1]
    for matrix_only in (r"\top", r"\operatorname{diag}", r"\odot", r"\mathbf{1}"):
        assert matrix_only not in body, matrix_only
    assert r"E^{1} &= \frac{1}{2} \left\|h_{2}^{1} - y^{1}\right\|^{2}" in golden["stacked_mse"]["tex"]
    assert r"E_{1} &= - \sum_{c=1}^{3} y_{1,c} \log{\left(\hat{y}_{1,c} \right)}" in golden["uwv_softmax"]["tex"]
    # the slope's v is defined before it is used, and the loss symbol is one letter throughout
    assert r"its output $v = \tanh{\left(u \right)}$" in golden["uwv_softmax"]["tex"]
    assert r"L &= E_{3}" in bce and "E_{T}" not in bce


def test_targets_and_eta_are_in_the_notation_table_and_the_bridge_names_the_output(golden: dict) -> None:
    md = golden["stacked_mse"]["md"]
    table = md.split("## Model and notation")[1].split("##")[0]
    assert "| $y^{t}$ | $1 \\times 1$ | `targets` | target at step $t$ |" in table
    assert "| $\\eta$ | $1 \\times 1$ | `-` | learning rate |" in table
    bridge = md.split("## What the source writes")[1].split("##")[0]
    assert "| $y^{t}$ | $h_{2}^{t}$ | the network's output (its prediction) |" in bridge
    assert "| $\\widehat{y^{t}}$ | $y^{t}$ | the target, what the output should be |" in bridge


def test_the_catalog_has_no_ascii_math() -> None:
    # subscripts, superscripts, arrows and formulas belong in placeholders filled with math
    ascii_math = re.compile(r"[A-Za-z]_[A-Za-z0-9]|\^|<-|->|\b[a-z] [-+=] [a-z0-9]\b|\bd[A-Za-z]/d|\.\.\.")
    for key, pattern in document.catalog("en").items():
        for form in (pattern.values() if isinstance(pattern, dict) else [pattern]):
            assert not ascii_math.search(form), (key, form)


# --------------------------------------------------------------------------- the worked example

@pytest.mark.parametrize("name", preset_names())
def test_the_worked_example_equals_the_generated_module(name: str, golden: dict) -> None:
    spec = preset(name)
    d = bptt.derive(spec)
    example = numbers.worked_example(d)
    mod = module_from(golden[name]["py"], name)
    loss, grads = mod.loss_and_grads(example.params, example.xs, example.targets)
    hs, _ = mod.forward(example.params, example.xs)
    P = HandoutLatexPrinter(d.sym)
    md = golden[name]["md"]
    example_md = md.split("## A worked example")[1]
    assert f"$L = {P.number(loss)}$" in example_md
    for p in d.sym.params():
        key = numbers.python_name(d.sym, p)   # (a gated cell's names carry the gate)
        total = np.asarray(grads[key]).reshape(example.totals[p].shape)
        assert np.allclose(total, example.totals[p], atol=1e-12)
        # the handout prints the module's gradient and the module's update
        assert f"${P.values(total, vertical=True)}$" in example_md, key
        assert f"${P.values(example.params[key].reshape(total.shape) - spec.example.eta * total, vertical=True)}$" \
            in example_md, key
    for time in d.unrolled.times:
        h = example.values[d.sym("hidden", spec.model.layers, time)]
        assert np.allclose(h.reshape(-1), hs[int(time) - 1, 0], atol=1e-12)
        assert f"${P.values(hs[int(time) - 1, 0].reshape(h.shape))}$" in example_md


def test_the_example_table_is_optional_documented_and_checked() -> None:
    base = {"name": "rnn", "model": {"input_size": 2, "hidden_sizes": [3]}}
    assert from_dict(base).example == Example(seed=0, scale=0.5, eta=0.1, tokens=())
    custom = from_dict({**base, "example": {"seed": 7, "eta": 0.5, "tokens": ["a", "b", "a"]}})
    assert custom.example == Example(seed=7, scale=0.5, eta=0.5, tokens=("a", "b", "a"))
    assert from_dict(custom.to_dict()).example == custom.example, "the table round-trips"
    for bad, message in [({"seed": -1}, "example.seed"), ({"eta": 0}, "example.eta"),
                         ({"tokens": "abc"}, "example.tokens: must be a list of strings"),
                         ({"colour": 1}, "example.colour: unknown key")]:
        with pytest.raises(SpecError, match=re.escape(message)):
            from_dict({**base, "example": bad})


def test_the_tokens_of_document_002_are_one_hot_inputs_with_the_next_word_as_target() -> None:
    d = bptt.derive(preset("elman_softmax"))
    example = numbers.worked_example(d)
    assert example.tokens == ("I", "love", "AI")
    assert example.xs[:, 0].tolist() == np.eye(3).tolist()
    assert example.targets[:, 0].tolist() == [1, 2, 0]


# --------------------------------------------------------------------------- the vanishing plot

def _independent_norms(spec: Spec, source: str) -> dict[float, list[float]]:
    """||dL/dh_k|| by running the module over n = t - k steps from the zero state with zero
    inputs (every state stays 0, so each run starts from the true h_k) and reading its h0
    gradient; without truncation only (a truncated module stops the gradient)."""
    mod = module_from(source, spec.name)
    params = numbers.worked_example(bptt.derive(spec)).params
    H = spec.model.hidden_sizes[-1]
    g = np.full((1, H), 1 / np.sqrt(H))
    out = {}
    for radius in numbers.RADII:
        p = {k: (np.zeros_like(w) if k in _bias_names(spec) else w) for k, w in params.items()}
        for key in _recurrent_names(spec):
            p[key] = p[key] * radius / max(abs(np.linalg.eigvals(p[key])))
        norms = [float(np.linalg.norm(g))]
        for n in range(1, numbers.LONG):
            xs = np.zeros((n, 1, spec.model.input_size))
            _, cache = mod.forward(p, xs)
            dhs = np.zeros((n, 1, H))
            dhs[-1] = g
            h0 = mod.backward(dhs, cache)["h0"]
            norms.append(float(np.sqrt(sum(np.sum(np.square(x)) for x in h0))))
        out[radius] = norms
    return out


def _recurrent_names(spec: Spec) -> list[str]:
    sym = bptt.derive(spec).sym
    return [sym.names.python("recurrent_weight", l) for l in range(1, spec.model.layers + 1)]


def _bias_names(spec: Spec) -> list[str]:
    sym = bptt.derive(spec).sym
    return [sym.names.python(sym.info[p].role, sym.info[p].layer) for p in sym.params()
            if sym.info[p].role in ("bias", "output_bias")]


def _number(cell: str) -> float:
    """A table cell `$1.0729 \\times 10^{-3}$` as a float."""
    mantissa, exponent = re.fullmatch(r"\s*\$(\S+) \\times 10\^\{(-?\d+)\}\$\s*", cell).groups()
    return float(mantissa) * 10.0 ** int(exponent)


def _plot_rows(md: str) -> list[list[str]]:
    table = md.split("*The norm of the gradient reaching")[1].split("\n\n")[1]
    return [line.strip("|").split("|") for line in table.splitlines()[2:]]


@pytest.mark.parametrize("name", preset_names())
def test_the_plot_data_are_the_generated_modules_gradient_norms(name: str, golden: dict) -> None:
    spec = preset(name)
    if spec.model.cell != "elman":
        pytest.skip("a gated cell plots its additive path: tests/test_handout_gated.py")
    rows = _plot_rows(golden[name]["md"])
    assert len(rows) == numbers.LONG
    plotted = {r: [_number(row[i + 1]) for row in rows] for i, r in enumerate(numbers.RADII)}
    if spec.bptt.truncate:
        # the truncated module cannot carry a gradient that far: compare with the product
        # of the one-step Jacobians at the zero state, (W_hh^T)^n g (tanh' = 1 there)
        params = numbers.worked_example(bptt.derive(spec)).params
        (key,) = _recurrent_names(spec)
        H = spec.model.hidden_sizes[-1]
        expected = {}
        for radius in numbers.RADII:
            W = params[key] * radius / max(abs(np.linalg.eigvals(params[key])))
            g, norms = np.full(H, 1 / np.sqrt(H)), []
            for _ in range(numbers.LONG):
                norms.append(float(np.linalg.norm(g)))
                g = W.T @ g if spec.layout == "column" else W @ g
            expected[radius] = norms
    else:
        expected = _independent_norms(spec, golden[name]["py"])
    for radius in numbers.RADII:
        assert np.allclose(plotted[radius], expected[radius], rtol=1e-3, atol=0), radius
    tex = golden[name]["tex"]
    assert r"\begin{semilogyaxis}" in tex
    assert f"(1,{plotted[numbers.RADII[0]][1]:.4e})" in tex, "the PDF plots the Markdown's numbers"
    # the three regimes: vanishing, flat, exploding
    assert plotted[0.5][-1] < 1e-10 and plotted[1.5][-1] > 1e5


# --------------------------------------------------------------------------- the documents' steps

def test_each_document_shows_its_own_steps(golden: dict) -> None:
    d000 = golden["stacked_mse"]["tex"]
    assert r"\left[\begin{matrix}x^{t} & h_{1}^{t - 1}\end{matrix}\right] \left[\begin{matrix}W_{1}\\V_{1}\end{matrix}\right]" in d000
    assert r"e^{t} &= \frac{\partial E^{t}}{\partial h_{2}^{t}} = h_{2}^{t} - y^{t}" in d000
    assert r"\delta_{2}^{t} &= f'\left(z_{2}^{t}\right) \odot \left(e^{t} + \delta_{2}^{t + 1} V_{2}^{\top}\right)" in d000
    assert r"V_{1} &\leftarrow V_{1} - \eta \left(dV^{2}_{1} + dV^{3}_{1}\right)" in d000
    assert "dV^{1}" not in d000.replace("$dV^{1}_{l}$", "")
    assert r"\delta_{[x^{t},\, h_{1}^{t - 1}]} &= \delta_{1}^{t}" in d000
    d001 = golden["uwv_softmax"]["tex"]
    assert r"\frac{\partial E}{\partial W} &= \sum_{t=1}^{3} \frac{\partial E_{t}}{\partial W}" in d001
    assert r"\sum_{k=0}^{3} \frac{\partial E_{3}}{\partial \hat{y}_{3}} \frac{\partial \hat{y}_{3}}{\partial s_{3}} \frac{\partial s_{3}}{\partial s_{k}} \frac{\partial^{+} s_{k}}{\partial W}" in d001
    assert r"\fbox{" in d001 and "the term $k = 0$ vanishes" in d001
    d002 = golden["elman_softmax"]["md"]
    assert "| token | $x_{t}$ | $h_{t - 1}$ | $h_{t}$ | $\\hat{y}_{t}$ |" in d002
    assert "| love |" in d002 and "ReLU" in d002 and "## One training step" in d002
    d003 = golden["many_to_one_bce"]["tex"]
    assert r"\prod_{j=k + 1}^{t} f'\left(x_{j} w_{i} + o_{j - 1} w_{h}\right) w_{h}" in d003
    assert r"\frac{\partial L}{\partial \hat{y}_{3}} \frac{\partial \hat{y}_{3}}{\partial z_{3}} \frac{\partial z_{3}}{\partial w_{o}}" in d003
    d004 = golden["truncated_elman"]["tex"]
    assert r"\frac{\partial L}{\partial W_{hh}} &= \sum_{t=1}^{3} \delta_{t}^{h} h_{t - 1}^{\top}" in d004
    assert r"\left(W_{hy}^{\top} \delta_{t}^{y} + W_{hh}^{\top} \delta_{t + 1}^{h}\right) \odot f'\left(a_{t}\right)" in d004
    assert "LSTM and GRU" in d004 and r"\tau = 2" in d004 and r"$\bullet$ & $\bullet$" in d004 and "It keeps 5 of the 6 terms" in d004
    for tex in golden.values():
        assert r"\begin{tikzpicture}" in tex["tex"] and "backward" in tex["tex"]


def test_a_custom_spec_names_itself_not_a_document() -> None:
    spec = Spec(name="my_rnn", model=Model(2, (3,), output_size=2, output_activation="softmax"),
                loss=Loss("cross_entropy"), bptt=BPTT(steps=2), notation=Notation(preset="d2l"))
    md = render_all(spec, ["md"], "loop", "derive build my_rnn.toml")["md"]
    assert "This handout was generated from the spec `my_rnn`" in md
    assert "This handout follows" not in md and "I love AI" not in md
    # a preset changed in any way is a custom spec too
    changed = dataclasses.replace(preset("elman_softmax"), bptt=BPTT(steps=2), example=Example())
    assert "This handout follows" not in render_all(changed, ["md"], "loop", "x")["md"]


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("name", preset_names())
def test_only_referenced_equations_are_numbered_and_no_row_is_empty(name: str, golden: dict) -> None:
    tex = golden[name]["tex"]
    tags = re.findall(r"\\tag\{(\d+)\}", tex)
    assert tags == [str(i) for i in range(1, len(tags) + 1)], "numbered in order"
    prose = re.sub(r"\\begin\{(align\*|equation\*)\}.*?\\end\{\1\}", "", tex, flags=re.S)
    cited = {int(x) for x in re.findall(r"\((\d+)\)", prose)}   # "(3) to (6)" cites a range
    cited |= {n for a, b in re.findall(r"\((\d+)\) to \((\d+)\)", prose) for n in range(int(a), int(b) + 1)}
    for tag in tags:
        assert int(tag) in cited, f"equation ({tag}) is numbered but never referenced"
    assert r"\begin{align}" not in tex and r"\begin{equation}" not in tex
    assert not re.search(r"\\\\\s*(%[^\n]*)?\n\\end\{align", tex), "an empty last row"
    assert "allowdisplaybreaks" not in tex, "equation blocks must not split across pages"
    assert " x " not in tex.split(r"\begin{document}")[1].replace(r"\times", ""), "shapes in math"


def _typeset_log(tex: str, tmp: Path, name: str) -> str:
    (tmp / f"{name}.tex").write_text(tex)
    subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-quiet", f"{name}.tex"],
                   cwd=tmp, capture_output=True, timeout=300)
    return (tmp / f"{name}.log").read_text(errors="replace")


@pytest.mark.skipif(not shutil.which("latexmk"), reason="no TeX engine")
@pytest.mark.parametrize("name", preset_names())
def test_latex_builds_with_a_clean_log(name: str, golden: dict, tmp_path: Path) -> None:
    log = _typeset_log(golden[name]["tex"], tmp_path, name)
    assert "Output written on" in log
    for problem in ("Overfull", "Underfull", "Warning", "Missing character"):
        assert problem not in log, [line for line in log.splitlines() if problem in line][:3]
