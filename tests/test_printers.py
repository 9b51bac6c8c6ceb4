"""Exact strings of printed equations: LaTeX in each notation, and the NumPy of the step rule."""
from __future__ import annotations

import pytest
import sympy as sp

from derive import bptt
from derive.emit.printers import HandoutLatexPrinter, LoopCodePrinter
from derive.rules import ACTIVATIONS, u, v
from derive.spec import BPTT, Loss, Model, Notation, Spec
from derive.unroll import Symbols, t


def softmax_spec(preset: str, **bptt_args) -> Spec:
    return Spec(name="rnn", model=Model(3, (4,), output_size=2, output_activation="softmax"),
                loss=Loss("cross_entropy"), bptt=BPTT(steps=2, **bptt_args), notation=Notation(preset=preset))


LATEX = [
    ("doc000", r"z^{1} = x^{1} W + h^{0} V + b",
     r"\delta^{2} = \left(\delta_{y}^{2} W_{y}^{\top}\right) \odot \left(1 - \left(h^{2}\right)^{2}\right)"),
    ("doc001", r"z_{1} = U x_{1} + W s_{0} + b",
     r"\delta_{2}^{s} = \left(V^{\top} \delta_{2}^{y}\right) \odot \left(1 - s_{2}^{2}\right)"),
    ("d2l", r"a_{1} = W_{xh} x_{1} + W_{hh} h_{0} + b_{h}",
     r"\delta_{2}^{h} = \left(W_{hy}^{\top} \delta_{2}^{y}\right) \odot \left(1 - h_{2}^{2}\right)"),
    ("doc003", r"a_{1} = x_{1} w_{i} + o_{0} w_{h} + b",
     r"\delta_{2}^{o} = \left(\delta_{2}^{y} w_{o}^{\top}\right) \odot \left(1 - o_{2}^{2}\right)"),
    ("cs231n", r"a_{1} = x_{1} \mathit{Wx} + h_{0} \mathit{Wh} + b",
     r"\delta_{2}^{h} = \left(\delta_{2}^{y} \mathit{Wy}^{\top}\right) \odot \left(1 - h_{2}^{2}\right)"),
    ("dlai", r"z_{1} = \mathit{Wax} x_{1} + \mathit{Waa} a_{0} + \mathit{ba}",
     r"\delta_{2}^{a} = \left(\mathit{Wya}^{\top} \delta_{2}^{y}\right) \odot \left(1 - a_{2}^{2}\right)"),
]


@pytest.mark.parametrize("preset, forward, delta", LATEX, ids=[row[0] for row in LATEX])
def test_latex_of_the_first_step_and_the_last_delta(preset: str, forward: str, delta: str) -> None:
    d = bptt.derive(softmax_spec(preset))
    P = HandoutLatexPrinter(d.sym)
    a = d.unrolled.forward[0]
    assert f"{P.doprint(a.lhs)} = {P.doprint(a.rhs)}" == forward
    last = next(x for x in d.deltas if d.sym.info[x.lhs].role == "delta")
    assert f"{P.doprint(last.lhs)} = {P.doprint(last.rhs)}" == delta


CODE = [
    ("doc000", "h[t] @ V", "(g[t] + d[t + 1] @ V.T) * (1 - h[t + 1] ** 2)"),
    ("doc001", "h[t] @ W.T", "(g[t] + d[t + 1] @ W) * (1 - h[t + 1] ** 2)"),
    ("d2l", "h[t] @ W_hh.T", "(g[t] + d[t + 1] @ W_hh) * (1 - h[t + 1] ** 2)"),
    ("doc003", "h[t] @ w_h", "(g[t] + d[t + 1] @ w_h.T) * (1 - h[t + 1] ** 2)"),
    ("cs231n", "h[t] @ Wh", "(g[t] + d[t + 1] @ Wh.T) * (1 - h[t + 1] ** 2)"),
    ("dlai", "h[t] @ Waa.T", "(g[t] + d[t + 1] @ Waa) * (1 - h[t + 1] ** 2)"),
]


@pytest.mark.parametrize("preset, recurrence, delta", CODE, ids=[row[0] for row in CODE])
def test_numpy_of_the_step_rule_in_batch_rows(preset: str, recurrence: str, delta: str) -> None:
    rule = bptt.step_rule(softmax_spec(preset))
    sym, layer = rule.sym, rule.layers[0]
    refs = {p: sym.names.python(sym.info[p].role, sym.info[p].layer) for p in sym.params()}
    refs.update({sym("hidden", 1, t - 1): "h[t]", sym("hidden_grad", 1, t): "g[t]",
                 sym("delta", 1, t + 1): "d[t + 1]", sym("hidden", 1, t): "h[t + 1]"})
    C = LoopCodePrinter(sym, refs)
    assert C.vector(layer.recurrence) == recurrence
    assert C.vector(layer.delta[0].rhs) == delta


@pytest.mark.parametrize("name, slope, activate", [
    ("tanh", ["np.square(h[1:], out=d)", "np.subtract(1, d, out=d)"], ["np.tanh(h, out=h)"]),
    ("sigmoid", ["d[...] = h[1:]*(1 - h[1:])"],
     # sigma(h) = 0.5 tanh(0.5 h) + 0.5: no overflow for any h, and no temporary
     ["np.multiply(h, 0.5, out=h)", "np.tanh(h, out=h)", "np.multiply(h, 0.5, out=h)", "np.add(h, 0.5, out=h)"]),
    ("relu", ["d[...] = (h[1:] > 0)"], ["np.maximum(h, 0, out=h)"]),
    ("identity", ["d[...] = 1"], []),
])
def test_activations_and_slopes_are_written_in_place(name: str, slope: list, activate: list) -> None:
    C = LoopCodePrinter(Symbols(softmax_spec("d2l")), {})
    act = ACTIVATIONS[name]
    assert C.apply_into("d", sp.Lambda(u, act.slope.xreplace({v: u})), "h[1:]") == slope
    assert C.activate("h", sp.Lambda(u, act.value)) == activate


def test_truncated_deltas_carry_their_age() -> None:
    d = bptt.derive(softmax_spec("d2l", truncate=1))
    P = HandoutLatexPrinter(d.sym)
    assert [P.doprint(x.lhs) for x in d.deltas] == [
        r"\delta_{2}^{[0]\,y}", r"\delta_{2}^{[0]\,h}", r"\delta_{1}^{[0]\,y}", r"\delta_{1}^{[0]\,h}"]
    # with k = 1 no delta reaches back a step: delta_1 has no recurrent term
    assert "W_{hh}" not in P.doprint(d.deltas[-1].rhs)


def test_path_sum_form_in_document_003_notation() -> None:
    from derive import document
    from derive.spec import preset
    doc = document.build(bptt.derive(preset("many_to_one_bce")), "derive build --all")
    rhs = {e.label: e.rhs for s in doc.sections for b in s.blocks if isinstance(b, document.Equations) for e in b.lines}
    # a scalar model: no diag, no transpose; the slope as f' first, then written out
    assert rhs["eq:many_to_one_bce:jacobian"] == r"f'\left(a_{j}\right) w_{h} = \left(1 - o_{j}^{2}\right) w_{h}"
    assert rhs["eq:many_to_one_bce:pathsum"].startswith(r"\sum_{k=1}^{3} \frac{\partial E_{3}}{\partial \hat{y}_{3}}")
