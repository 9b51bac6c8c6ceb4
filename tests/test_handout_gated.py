"""The LSTM and GRU handouts (issue 14, item 4): each section in each notation preset, the
printer's gated forms as exact strings, the worked example and the additive-path plot
against an independent implementation of the cells (HIPS autograd), and a clean LaTeX log.

Why: a gated handout teaches the gate-by-gate recursion and why the additive path keeps
gradients alive; its formulas must read as the textbooks write them, its numbers must be
the cells' numbers, and the Elman handouts must not change (tests/test_golden.py).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import autograd.numpy as anp
import numpy as np
import pytest
import sympy as sp
from autograd import grad

from derive import bptt, document, numbers
from derive.build import render_all
from derive.emit.printers import HandoutLatexPrinter
from derive.spec import BPTT, Example, Loss, Model, Notation, Spec
from derive.symbols import t

COMMAND = "derive build gated.toml"
TOKENS = Example(tokens=("I", "love", "AI"))


def gated(name: str, cell: str, reset: str = "after", preset: str = "", layout: str = "", steps: int = 3) -> Spec:
    return Spec(name=name, model=Model(3, (2,), output_size=3, output_activation="softmax", cell=cell, gru_reset=reset),
                loss=Loss("cross_entropy"), bptt=BPTT(steps=steps), notation=Notation(preset=preset, layout=layout),
                example=TOKENS)


#: lstm, gru-after, gru-before, and the LSTM in the presets pytorch (the default), d2l, cs231n, dlai
SPECS = {
    "lstm": gated("lstm", "lstm"),
    "gru_after": gated("gru_after", "gru", "after"),
    "gru_before": gated("gru_before", "gru", "before"),
    "lstm_d2l": gated("lstm_d2l", "lstm", preset="d2l"),
    "lstm_cs231n": gated("lstm_cs231n", "lstm", preset="cs231n"),
    "lstm_dlai": gated("lstm_dlai", "lstm", preset="dlai"),
    "gru_d2l": gated("gru_d2l", "gru", "before", preset="d2l"),
}


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, str]]:
    """Each spec's handouts; `derive build --format tex,md` needs no generated module."""
    return {name: render_all(spec, ["tex", "md"], "loop", COMMAND) for name, spec in SPECS.items()}


def section(md: str, title: str) -> str:
    """The Markdown of one section (from its heading to the next)."""
    assert f"\n## {title}" in md, title
    return md.split(f"\n## {title}")[1].split("\n## ")[0]


# --------------------------------------------------------------------------- the printer

def rule_latex(spec: Spec) -> dict[str, str]:
    """`lhs = rhs` of the step rule's forward and delta assignments, keyed by the lhs."""
    d = bptt.derive(spec)
    P = HandoutLatexPrinter(d.sym)
    layer = d.rule.layers[0]
    return {P.doprint(a.lhs): f"{P.doprint(a.lhs)} = {P.doprint(a.rhs)}" for a in layer.forward + layer.delta}


def test_the_lstm_prints_as_the_textbooks_write_it() -> None:
    lines = rule_latex(SPECS["lstm"])
    assert lines["i_{t}"] == r"i_{t} = \sigma\left(a_{i,t}\right)"
    assert lines["a_{f,t}"] == r"a_{f,t} = W_{if} x_{t} + W_{hf} h_{t - 1} + b_{f}"
    # the cell state kept, then the candidate written; tanh(c_t) as tanh of a quantity
    assert lines["c_{t}"] == r"c_{t} = f_{t} \odot c_{t - 1} + i_{t} \odot g_{t}"
    assert lines["h_{t}"] == r"h_{t} = o_{t} \odot \tanh\left(c_{t}\right)"
    assert lines[r"\delta_{t}^{c}"] == (r"\delta_{t}^{c} = \delta_{t}^{h} \odot o_{t} \odot \left(1 - \tanh^{2}\left(c_{t}\right)\right)"
                                        r" + \delta_{t + 1}^{c} \odot f_{t + 1}")
    # the gates' terms in PyTorch's order i, f, g, o
    assert lines[r"\delta_{t}^{h}"] == (r"\delta_{t}^{h} = \bar{h_{t}} + W_{hi}^{\top} \delta_{t + 1}^{i} + W_{hf}^{\top} \delta_{t + 1}^{f}"
                                        r" + W_{hg}^{\top} \delta_{t + 1}^{g} + W_{ho}^{\top} \delta_{t + 1}^{o}")
    assert lines[r"\delta_{t}^{f}"] == r"\delta_{t}^{f} = \delta_{t}^{c} \odot c_{t - 1} \odot f_{t} \left(1 - f_{t}\right)"


def test_the_gru_prints_one_minus_z_and_a_subtracted_hadamard_product() -> None:
    lines = rule_latex(SPECS["gru_after"])
    assert lines["h_{t}"] == r"h_{t} = z_{t} \odot h_{t - 1} + \left(1 - z_{t}\right) \odot n_{t}"
    assert lines["a_{n,t}"] == r"a_{n,t} = W_{in} x_{t} + r_{t} \odot \left(W_{hn} h_{t - 1} + b_{hn}\right) + b_{n}"
    assert lines[r"\delta_{t}^{z}"] == (r"\delta_{t}^{z} = \left(\delta_{t}^{h} \odot h_{t - 1} - \delta_{t}^{h} \odot n_{t}\right)"
                                        r" \odot z_{t} \left(1 - z_{t}\right)")
    assert lines[r"\delta_{t}^{n}"] == r"\delta_{t}^{n} = \delta_{t}^{h} \odot \left(1 - z_{t}\right) \odot \left(1 - n_{t}^{2}\right)"
    # r, z, n; the state's own carried term last
    assert lines[r"\delta_{t}^{h}"] == (r"\delta_{t}^{h} = \bar{h_{t}} + W_{hr}^{\top} \delta_{t + 1}^{r} + W_{hz}^{\top} \delta_{t + 1}^{z}"
                                        r" + W_{hn}^{\top} \left(\delta_{t + 1}^{n} \odot r_{t + 1}\right) + \delta_{t + 1}^{h} \odot z_{t + 1}")
    before = rule_latex(SPECS["gru_before"])
    assert before["a_{n,t}"] == r"a_{n,t} = W_{in} x_{t} + W_{hn} \left(r_{t} \odot h_{t - 1}\right) + b_{n}"


def test_a_vector_of_ones_alone_is_still_bold_and_a_scalar_model_prints_numbers() -> None:
    d = bptt.derive(SPECS["gru_after"])
    P = HandoutLatexPrinter(d.sym)
    z = d.sym("gate", 1, t, gate="z")
    assert P.doprint(sp.OneMatrix(*z.shape)) == r"\mathbf{1}"
    assert P.doprint(sp.MatAdd(sp.OneMatrix(*z.shape), -z)) == r"1 - z_{t}"
    r = d.sym("gate", 1, t, gate="r")     # the first gate: the constant is first by rule, not by rank
    assert P.doprint(sp.MatAdd(-r, sp.OneMatrix(*r.shape))) == r"1 - r_{t}"
    scalar = Spec(name="s", model=Model(1, (1,), output_size=1, output_activation="sigmoid", cell="gru"),
                  loss=Loss("bce", at="last_step"), bptt=BPTT(steps=2))
    lines = rule_latex(scalar)
    assert lines["h_{t}"] == r"h_{t} = z_{t} \cdot h_{t - 1} + \left(1 - z_{t}\right) \cdot n_{t}"


def test_each_preset_prints_its_own_gate_symbols() -> None:
    assert rule_latex(SPECS["lstm_d2l"])["C_{t}"] == r"C_{t} = F_{t} \odot C_{t - 1} + I_{t} \odot \tilde{C}_{t}"
    assert rule_latex(SPECS["lstm_dlai"])["c_{t}"] == \
        r"c_{t} = \Gamma_{f,t} \odot c_{t - 1} + \Gamma_{u,t} \odot \tilde{c}_{t}"
    assert rule_latex(SPECS["lstm_cs231n"])["a_{f,t}"] == r"a_{f,t} = x_{t} \mathit{Wx}_{f} + h_{t - 1} \mathit{Wh}_{f} + b_{f}"
    assert rule_latex(SPECS["gru_d2l"])["h_{t}"] == r"h_{t} = Z_{t} \odot h_{t - 1} + \left(1 - Z_{t}\right) \odot \tilde{H}_{t}"


# --------------------------------------------------------------------------- the sections

GATED_SECTIONS = ("Model and notation", "Forward pass, unrolled for $T = 3$ steps", "Loss",
                  "The delta recursion", "Per-step contributions, totals and the update",
                  "The same gradient as a sum over paths", "Why the additive path eases vanishing gradients",
                  "Conventions of the frameworks", "A worked example", "Proof")

#: per spec: the symbols of the keeping gate, the state it keeps, the gates' deltas, a weight
EXPECTED = {
    "lstm": ("f", "c", ("i", "f", "g", "o"), "W_{hf}"),
    "gru_after": ("z", "h", ("r", "z", "n"), "W_{hz}"),
    "gru_before": ("z", "h", ("r", "z", "n"), "W_{hz}"),
    "lstm_d2l": ("F", "C", ("I", "F", r"\tilde{C}", "O"), "W_{hf}"),
    "lstm_cs231n": ("f", "c", ("i", "f", "g", "o"), r"\mathit{Wh}_{f}"),
    "lstm_dlai": (r"\Gamma_{f", "c", (r"\Gamma_{u}", r"\Gamma_{f}", r"\tilde{c}", r"\Gamma_{o}"), r"\mathit{Wfa}"),
    "gru_d2l": ("Z", "h", ("R", "Z", r"\tilde{H}"), "W_{hz}"),
}


def _sub(symbol: str, index: str) -> str:
    """A gate symbol with a time index: f_{j}, \\Gamma_{f,j}."""
    return f"{symbol},{index}}}" if symbol.endswith(("_{f", "_{u", "_{o")) else f"{symbol}_{{{index}}}"


@pytest.mark.parametrize("name", SPECS)
def test_every_section_is_there(name: str, built: dict) -> None:
    md, tex = built[name]["md"], built[name]["tex"]
    spec = SPECS[name]
    lstm = spec.model.cell == "lstm"
    keep, state, gates, weight = EXPECTED[name]
    for title in GATED_SECTIONS + (f"The gates and the {'cell-state' if lstm else 'state'} update",):
        section(md, title)
    # the notation table names every gate
    table = section(md, "Model and notation")
    for gate in (("input gate", "forget gate", "cell candidate", "output gate") if lstm
                 else ("reset gate", "update gate", "candidate state")):
        assert f"| the {gate}, its value |" in table and f"| recurrent weight of the {gate} |" in table
    # the delta recursion gate by gate, the state's delta carrying the keeping gate of step t + 1
    deltas = section(md, "The delta recursion")
    carried = rf"\delta_{{t + 1}}^{{{state}}} \odot {_sub(keep, 't + 1')}"
    assert re.search(rf"\\delta_{{t}}\^{{{re.escape(state)}}} &= [^\n]*{re.escape(carried)}", deltas), carried
    for g in gates:
        assert rf"\delta_{{t}}^{{{g}}} &= " in deltas, g
    # parameter gradients as sums over t
    grads = section(md, "Per-step contributions, totals and the update")
    assert rf"\frac{{\partial L}}{{\partial {weight}}} &= \sum_{{t=1}}^{{3}} " in grads, weight
    # the additive path's product against the Elman product
    additive = section(md, "Why the additive path eases vanishing gradients")
    assert rf"\prod_{{j=k + 1}}^{{t}} \operatorname{{diag}}\left({_sub(keep, 'j')}\right)" in additive
    assert r"\prod_{j=k + 1}^{t} \operatorname{diag}\left(f'\left(" in additive
    assert len(re.findall(r"^\| \$\d+\$ \|", additive, flags=re.M)) == numbers.LONG, "the measured norms"
    assert r"\begin{semilogyaxis}" in tex
    # the convention box
    box = section(md, "Conventions of the frameworks")
    assert box.startswith("\n\n> **Conventions differ between frameworks.**")
    orders = {"lstm": ["PyTorch | $i, f, g, o$", "Keras | $i, f, c, o$", "ONNX | $i, o, f, c$", "CS231n | $i, f, o, g$"],
              "gru": ["PyTorch | $r, z, n$", "Keras | $z, r, h$", "ONNX | $z, r, h$"]}[spec.model.cell]
    for row in orders:
        assert f"| {row} |" in box, row
    full = {"lstm": ["| ONNX | $i, o, f, c$ | $i_{t}, o_{t}, f_{t}, g_{t}$ |", "| CS231n | $i, f, o, g$ | $i_{t}, f_{t}, o_{t}, g_{t}$ |",
                     "| Keras | $i, f, c, o$ | $i_{t}, f_{t}, g_{t}, o_{t}$ |"],
            "gru_after": ["| Keras | $z, r, h$ | $z_{t}, r_{t}, n_{t}$ |", "| PyTorch | $r, z, n$ | $r_{t}, z_{t}, n_{t}$ |"],
            "lstm_d2l": [r"| ONNX | $i, o, f, c$ | $I_{t}, O_{t}, F_{t}, \tilde{C}_{t}$ |"]}
    for row in full.get(name, []):   # each framework's letters are this handout's gates
        assert row in box, row
    assert r"\fbox{" in tex
    # the worked example
    assert "| token |" in section(md, "A worked example")


def test_the_convention_box_shows_both_update_directions_and_both_resets(built: dict) -> None:
    for name, reset in (("gru_after", "after"), ("gru_before", "before")):
        box = section(built[name]["md"], "Conventions of the frameworks")
        assert r"h_{t} &= z_{t} \odot h_{t - 1} + \left(1 - z_{t}\right) \odot n_{t}" in box     # Cho et al.
        assert r"h_{t} &= \left(1 - z_{t}\right) \odot h_{t - 1} + z_{t} \odot n_{t}" in box     # Chung et al.
        after = r"a_{n,t} &= W_{in} x_{t} + r_{t} \odot \left(W_{hn} h_{t - 1} + b_{hn}\right) + b_{n}"
        before = r"a_{n,t} &= W_{in} x_{t} + W_{hn} \left(r_{t} \odot h_{t - 1}\right) + b_{n}"
        own, other = (after, before) if reset == "after" else (before, after)
        assert box.index(own) < box.index(other), "the spec's own form first"
        assert f"This spec applies the reset {reset} the recurrent product" in box
    lstm = section(built["lstm"]["md"], "Conventions of the frameworks")
    assert "z_{t}" not in lstm and "| $i_{t}, o_{t}, f_{t}, g_{t}$ |" in lstm


def test_dlai_shows_the_concatenated_form_and_its_split(built: dict) -> None:
    gates = section(built["lstm_dlai"]["md"], "The gates and the cell-state update")
    assert r"\left[a_{t - 1}; x_{t}\right]" in gates
    assert (r"z_{f,t} &= \left[\begin{matrix}\mathit{Wfa} & \mathit{Wfx}\end{matrix}\right] "
            r"\left[\begin{matrix}a_{t - 1}\\x_{t}\end{matrix}\right] + \mathit{bf} = "
            r"\mathit{Wfx} x_{t} + \mathit{Wfa} a_{t - 1} + \mathit{bf}") in gates
    for name in ("lstm", "lstm_d2l"):
        assert r"\begin{matrix}" not in section(built[name]["md"], "The gates and the cell-state update")


def test_the_elman_handouts_have_none_of_the_gated_sections() -> None:
    from derive.spec import preset
    md = render_all(preset("elman_softmax"), ["md"], "loop", "derive build --all")["md"]
    for title in ("Why the additive path", "Conventions of the frameworks", "The gates and"):
        assert f"## {title}" not in md
    assert "the activation left as a generic f" in md and "sigmoid and tanh" not in md


@pytest.mark.parametrize("name", SPECS)
def test_the_proof_says_what_derive_check_proves_for_a_gated_cell(name: str, built: dict) -> None:
    """derive check leaves the gates' sigmoid and the tanh generic and unrolls two steps
    exactly (README, "What derive check proves"); the handout says that, not the Elman f."""
    md = built[name]["md"]
    proof = md[md.index("## Proof"):]
    assert "with the sigmoid and tanh left as generic functions" in proof
    assert "the loss unrolled over two steps" in proof and "a generic f" not in proof


# --------------------------------------------------------------------------- an independent implementation

def _sigmoid(a):
    return 1 / (1 + anp.exp(-a))


def reference(spec: Spec, d) -> tuple:
    """The cells of CONTRACT §4, written from the contract with HIPS autograd: a step, and
    the loss (softmax cross-entropy on every step, summed) of a parameter dict."""
    sym, m = d.sym, spec.model
    key = {(sym.info[p].role, sym.info[p].gate): numbers.python_name(sym, p) for p in sym.params()}
    row = sym.row

    def lin(P, role, gate, v):
        W = P[key[role, gate]]
        return anp.dot(v, W) if row else anp.dot(W, v)

    def step(P, x, h, c, bump=0.0):
        """One step; `bump` is added to the new state (c, or a GRU's h) before it is used."""
        if m.cell == "lstm":
            pre = {k: lin(P, "input_weight", k, x) + lin(P, "recurrent_weight", k, h) + P[key["bias", k]] for k in "ifgo"}
            i, f, o = (_sigmoid(pre[k]) for k in "ifo")
            c = f * c + i * anp.tanh(pre["g"]) + bump
            return o * anp.tanh(c), c
        r = _sigmoid(lin(P, "input_weight", "r", x) + lin(P, "recurrent_weight", "r", h) + P[key["bias", "r"]])
        z = _sigmoid(lin(P, "input_weight", "z", x) + lin(P, "recurrent_weight", "z", h) + P[key["bias", "z"]])
        if m.gru_reset == "after":
            n = anp.tanh(lin(P, "input_weight", "n", x) + P[key["bias", "n"]]
                         + r * (lin(P, "recurrent_weight", "n", h) + P[key["recurrent_bias", "n"]]))
        else:
            n = anp.tanh(lin(P, "input_weight", "n", x) + lin(P, "recurrent_weight", "n", r * h) + P[key["bias", "n"]])
        return (1 - z) * n + z * h + bump, c

    def loss(P, xs, classes):
        H = m.hidden_sizes[0]
        h, c, total, states = anp.zeros(H), anp.zeros(H), 0.0, []
        for x, y in zip(xs, classes):
            h, c = step(P, x, h, c)
            states.append(h)
            logits = lin(P, "output_weight", None, h) + P[key["output_bias", None]]
            total = total + anp.log(anp.sum(anp.exp(logits - anp.max(logits)))) + anp.max(logits) - logits[y]
        return total, states
    return step, loss, key


@pytest.mark.parametrize("name", ["lstm", "gru_after", "gru_before", "lstm_cs231n"])
def test_the_worked_example_equals_an_independent_implementation(name: str, built: dict) -> None:
    spec = SPECS[name]
    d = bptt.derive(spec)
    example = numbers.worked_example(d)
    _, loss, key = reference(spec, d)
    xs, classes = example.xs[:, 0], [int(c) for c in example.targets[:, 0]]
    value, states = loss(example.params, xs, classes)
    gradients = grad(lambda P: loss(P, xs, classes)[0])(example.params)
    assert example.loss == pytest.approx(float(value), abs=1e-12)
    P = HandoutLatexPrinter(d.sym)
    md = section(built[name]["md"], "A worked example")
    assert f"$L = {P.number(float(value))}$" in md
    for p in d.sym.params():
        total = np.asarray(gradients[numbers.python_name(d.sym, p)]).reshape(example.totals[p].shape)
        assert np.allclose(total, example.totals[p], atol=1e-12), numbers.python_name(d.sym, p)
        assert f"${P.values(total, vertical=True)}$" in md
    for time, h in zip(d.unrolled.times, states):
        assert np.allclose(example.values[d.sym("hidden", 1, time)].reshape(-1), h, atol=1e-12)
    if spec.model.cell == "lstm":
        assert np.allclose(example.values[d.sym("cell", 1, sp.Integer(0))], 0)
    # and the generated module agrees (it is printed from the step rule, the handout from the unrolled graph)
    module = numbers.module_namespace(render_all(spec, ["py"], "loop", COMMAND)["py"], name)
    loss_m, grads_m = module.loss_and_grads(example.params, example.xs, example.targets)
    assert loss_m == pytest.approx(example.loss, abs=1e-12)
    for p in d.sym.params():
        key = numbers.python_name(d.sym, p)
        assert np.allclose(np.asarray(grads_m[key]).reshape(example.totals[p].shape), example.totals[p], atol=1e-12), key


@pytest.mark.parametrize("name", ["lstm", "gru_after", "gru_before"])
def test_the_plot_data_are_the_cells_gradient_norms(name: str, built: dict) -> None:
    """||dL/dc_k|| (LSTM) or ||dL/dh_k|| (GRU), L = g . h_T: with zero inputs and every bias 0
    but the keeping gate's, every state stays 0 and every step is the same, so the gradient
    n steps back is that of g . h_{n+1} with respect to a bump added to the first step's state."""
    spec = SPECS[name]
    d = bptt.derive(spec)
    example = numbers.worked_example(d)
    step, _, key = reference(spec, d)
    lstm = spec.model.cell == "lstm"
    H = spec.model.hidden_sizes[0]
    g = np.full(H, 1 / np.sqrt(H))
    rows = [line.strip("|").split("|") for line in section(built[name]["md"], "Why the additive path eases vanishing gradients")
            .splitlines() if re.match(r"\| \$\d+\$ \|", line)]
    for i, value in enumerate(numbers.GATE_VALUES):
        P = {k: (np.zeros_like(v) if k.startswith("b") else v) for k, v in example.params.items()}
        P[key["bias", "f" if lstm else "z"]] = np.full(H, np.log(value / (1 - value)))

        def run(bump, n):
            h, c = np.zeros(H), np.zeros(H)
            for s in range(n + 1):
                h, c = step(P, np.zeros(spec.model.input_size), h, c, bump if s == 0 else 0.0)
            return anp.dot(g, h)
        expected = [float(np.linalg.norm(grad(run)(np.zeros(H), n))) for n in (0, 1, 2, 5, 20, 49)]
        measured = [_number(rows[n][i + 1]) for n in (0, 1, 2, 5, 20, 49)]
        assert np.allclose(measured, expected, rtol=1e-3, atol=0), value


def _number(cell: str) -> float:
    """A table cell `$1.0729 \\times 10^{-3}$` as a float."""
    mantissa, exponent = re.fullmatch(r"\s*\$(\S+) \\times 10\^\{(-?\d+)\}\$\s*", cell).groups()
    return float(mantissa) * 10.0 ** int(exponent)


# --------------------------------------------------------------------------- LaTeX

#: Stacked gated layers: blocks and tables one per layer, long sums broken (else pages overflow);
#: tables of a gated worked example cut to fit on a page
STACKED = {
    "lstm_stacked": Spec(name="lstm_stacked", model=Model(3, (2, 3), output_size=2, output_activation="softmax", cell="lstm"),
                         loss=Loss("cross_entropy"), bptt=BPTT(steps=3, truncate=2)),
    # four hidden units, as the bundled sentence presets: the worked example's tables are cut to fit the pages
    "lstm_h4": Spec(name="lstm_h4", model=Model(3, (4,), output_size=3, output_activation="softmax", cell="lstm"),
                    loss=Loss("cross_entropy"), bptt=BPTT(steps=3), example=TOKENS),
    "gru_stacked": Spec(name="gru_stacked", model=Model(3, (2, 2), output_size=2, output_activation="softmax", cell="gru",
                                                       gru_reset="before"),
                        loss=Loss("cross_entropy"), bptt=BPTT(steps=3, truncate=2, truncate_style="chunk", clip_norm=1.0)),
}


@pytest.mark.skipif(not shutil.which("latexmk"), reason="no TeX engine")
@pytest.mark.parametrize("name", ["lstm", "gru_after", "lstm_dlai", "gru_d2l", *STACKED])
def test_a_gated_handout_builds_with_a_clean_log(name: str, built: dict, tmp_path: Path) -> None:
    tex = built[name]["tex"] if name in built else render_all(STACKED[name], ["tex"], "loop", COMMAND)["tex"]
    (tmp_path / f"{name}.tex").write_text(tex)
    subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-quiet", f"{name}.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300)
    log = (tmp_path / f"{name}.log").read_text(errors="replace")
    assert "Output written on" in log
    for problem in ("Overfull", "Underfull", "Warning", "Missing character"):
        assert problem not in log, [line for line in log.splitlines() if problem in line][:3]


def test_only_referenced_equations_are_numbered(built: dict) -> None:
    for name, out in built.items():
        tex = out["tex"]
        tags = re.findall(r"\\tag\{(\d+)\}", tex)
        assert tags == [str(i) for i in range(1, len(tags) + 1)], name
        prose = re.sub(r"\\begin\{(align\*|equation\*)\}.*?\\end\{\1\}", "", tex, flags=re.S)
        # "(3) to (6)" refers to the equations of a range
        cited = {int(x) for x in re.findall(r"\((\d+)\)", prose)}
        cited |= {n for a, b in re.findall(r"\((\d+)\) to \((\d+)\)", prose) for n in range(int(a), int(b) + 1)}
        for tag in tags:
            assert int(tag) in cited, f"{name}: equation ({tag}) is numbered but never referenced"


def test_the_handout_is_built_from_the_derivation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    d = bptt.derive(SPECS["gru_after"])
    figures = numbers.compute(d, COMMAND)

    def no(*args, **kwargs):
        raise AssertionError("the document derived again")
    for attr in ("derive", "step_rule", "reverse"):
        monkeypatch.setattr(bptt, attr, no)
    doc = document.build(d, COMMAND, numbers=figures)
    assert doc == document.build(d, COMMAND, numbers=figures), "deterministic"


@pytest.mark.parametrize("name", SPECS)
def test_no_symbol_of_the_notation_table_names_two_things(name: str, built: dict) -> None:
    # (PyTorch's docs name no logits: the preset's o_t would be the LSTM's output gate)
    table = section(built[name]["md"], "Model and notation")
    symbols = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| $")]
    assert len(symbols) == len(set(symbols)) > 20, [s for s in symbols if symbols.count(s) > 1]


def _variant(cell: str, reset: str, case: str) -> Spec:
    model = dict(input_size=2, hidden_sizes=(2,), output_size=2, cell=cell, gru_reset=reset)
    loss, steps, notation = Loss("mse"), BPTT(steps=2), Notation()
    if case == "no_output":
        model["output_size"], loss = 0, Loss("none")
    elif case == "bce_last_no_bias":
        model.update(output_size=1, output_activation="sigmoid", bias=False)
        loss, steps = Loss("bce", at="last_step"), BPTT(steps=3)
    elif case == "window_clip":
        loss, steps = Loss("mse", reduction="mean"), BPTT(steps=3, truncate=2, clip=1.0)
    elif case == "chunk_clip_norm":
        steps = BPTT(steps=4, truncate=2, truncate_style="chunk", clip_norm=1.0)
    elif case == "scalar":
        model.update(input_size=1, hidden_sizes=(1,), output_size=1)
        notation = Notation(preset="cs231n")
    elif case == "dlai_row":
        notation = Notation(preset="dlai", layout="row")
    elif case == "doc000":
        notation = Notation(preset="doc000")
    return Spec(name=f"{cell}_{case}", model=Model(**model), loss=loss, bptt=steps, notation=notation)


@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
@pytest.mark.parametrize("case", ["no_output", "bce_last_no_bias", "window_clip", "chunk_clip_norm", "scalar",
                                  "dlai_row", "doc000"])
def test_every_kind_of_gated_spec_gets_its_handout(cell: str, reset: str, case: str) -> None:
    md = render_all(_variant(cell, reset, case), ["md"], "loop", COMMAND)["md"]
    for title in ("The delta recursion", "Why the additive path eases vanishing gradients",
                  "Conventions of the frameworks", "A worked example", "Proof"):
        section(md, title)


def test_a_gated_handout_needs_no_generated_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # the numbers of a gated handout come from the derivation's step rule, not the module
    from derive.formats import FORMATS

    def no(*args, **kwargs):
        raise AssertionError("the handout rendered the module")
    monkeypatch.setattr(type(FORMATS["py"]), "render", no)
    out = render_all(SPECS["gru_before"], ["tex", "md"], "loop", COMMAND)
    assert "## Why the additive path eases vanishing gradients" in out["md"]
