"""`derive check` for LSTM and GRU cells (issue 14, item 2), and form (b) for them.

Why: the check is the tool's promise that the gradients are right (issue 11), and it must
keep that promise for gated cells: every named adjoint of the step rule (δ^h, δ^c, each
gate's δ), the parameter uses, the gradient sent down and the h_0 / c_0 rules proven at a
symbolic t; the full unrolling at small T; the path sums (b) built from each step's
Jacobians derived with SymPy, independent of the engine's vector-Jacobian table; and the
generated module, including the LSTM's (h, c) state in h0, grads["h0"] and h_final.
Each guarantee below has a test that fails when it is broken (a mutated rule, engine or
module is handed to the check and the right row must fail).
"""
from __future__ import annotations

import dataclasses
import io
import types

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from derive import bptt, check, cli
from derive.cells import CELLS
from derive.spec import BPTT, Loss, Model, Notation, Spec, SpecError
from derive.unroll import t as T_SYM


def gated(cell: str, reset: str = "after", layers: tuple[int, ...] = (3,), layout: str = "column",
          output: int = 2, loss: str = "cross_entropy", out_act: str = "softmax", steps: int = 3,
          bias: bool = True, at: str = "every_step", reduction: str = "sum", **bptt_keys) -> Spec:
    return Spec(name=f"{cell}_rnn",
                model=Model(input_size=2, hidden_sizes=layers, output_size=output, cell=cell, gru_reset=reset,
                            output_activation=out_act, bias=bias),
                loss=Loss(kind=loss, at=at, reduction=reduction), bptt=BPTT(steps=steps, **bptt_keys),
                notation=Notation(layout=layout))


LSTM = gated("lstm")
GRU_AFTER = gated("gru", layout="row", loss="mse", out_act="identity")
GRU_BEFORE = gated("gru", "before", output=1, loss="bce", out_act="sigmoid", reduction="mean")
TABLE = {
    "lstm": LSTM,
    "gru-after-row": GRU_AFTER,
    "gru-before-bce-mean": GRU_BEFORE,
    "lstm-stacked-row-chunk-clip": gated("lstm", layers=(2, 3), layout="row", steps=4, truncate=2,
                                         truncate_style="chunk", clip=0.05),
    "gru-before-stacked-chunk-clip-norm": gated("gru", "before", layers=(3, 2), output=0, loss="mse",
                                                out_act="identity", bias=False, truncate=1,
                                                truncate_style="chunk", clip_norm=0.1),
    "lstm-last-step-no-bias": gated("lstm", at="last_step", bias=False, reduction="mean"),
}
STACKED = {"lstm-stacked-row-chunk-clip", "gru-before-stacked-chunk-clip-norm"}


def run(spec: Spec, **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check.report(spec, out=out, err=err, **kw)
    return code, out.getvalue(), err.getvalue()


def table_rows(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[lines.index("") + 2:-1]


# --------------------------------------------------------------------------- the report

@pytest.mark.parametrize("name", list(TABLE))
def test_report_passes_for_gated_cells(name: str) -> None:
    """No false failure: both cells, both resets, stacked, both layouts, chunk truncation,
    clipping that triggers (clip 0.05, clip_norm 0.1), every loss kind used with gates."""
    spec = TABLE[name]
    code, out, err = run(spec, exact_steps=1 if name in STACKED else None)
    assert code == 0, out
    rows = table_rows(out)
    assert all(r.endswith(" ok") for r in rows), out
    lstm = spec.model.cell == "lstm"
    assert "sigma and tanh uninterpreted" in out and "sigma, tanh generic" in out
    assert any(r.startswith("step rule: parameter uses, gradient below, " + ("h_0, c_0" if lstm else "h_0 "))
               for r in rows), rows
    assert any(r.startswith("(a) delta recursion vs (b) path sums") for r in rows)
    assert any(r.startswith("(a) delta recursion vs (c) sympy.diff, unrolled") for r in rows)
    final = "loss, h_final (h, c)" if lstm else "loss, h_final vs"
    assert sum(r.startswith("module ") for r in rows) == 5 and any(final in r for r in rows), rows
    assert out.splitlines()[-1].startswith(f"derive check: {len(rows)} checks passed in ")


def test_gated_unrolling_defaults_to_two_steps_and_exact_steps_overrides() -> None:
    """T = 2 by default (EXACT_STEPS_GATED); --exact-steps 3 is honoured."""
    small = gated("gru", layers=(1,), output=0, loss="mse", out_act="identity")
    code, out, err = run(small)
    assert code == 0 and "full unrolling at T = 2" in out and "unrolled (T = 2" in out
    code, out, _ = run(small, exact_steps=3)
    assert code == 0 and "unrolled (T = 3" in out


def test_cli_checks_an_lstm_spec(tmp_path, capsys) -> None:
    """The internal error of issue 14 (KeyError: cell[1]@0): `derive check` on an LSTM spec."""
    path = tmp_path / "lstm_try.toml"
    path.write_text('name = "lstm_try"\n[model]\ncell = "lstm"\ninput_size = 3\nhidden_sizes = [4]\n'
                    'output_size = 2\noutput_activation = "softmax"\n[loss]\nkind = "cross_entropy"\n'
                    '[bptt]\nsteps = 3\n')
    code = cli.main(["check", str(path), "--quick"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert captured.out.splitlines()[-1].startswith("derive check: 7 checks passed in ")


def test_cost_is_bounded_for_gated_cells() -> None:
    """Sizes above the cap are reduced, and (b) runs at T <= 10 and sizes <= 4, said in the row."""
    spec = dataclasses.replace(LSTM, model=dataclasses.replace(LSTM.model, hidden_sizes=(4096,), input_size=20),
                               bptt=BPTT(steps=12))
    code, out, _ = run(spec, quick=True)
    assert code == 0, out
    assert f"reduced to input {check.NUMERIC_CAP}, hidden [{check.NUMERIC_CAP}]" in out
    assert any(r.startswith(f"(a) delta recursion vs (b) path sums at T = {check.PATH_SUM_STEPS}, sizes at most "
                            f"{check.PATH_SUM_SIZE_GATED}") for r in table_rows(out)), out


# --------------------------------------------------------------------------- the step rule

@pytest.mark.parametrize("name", list(TABLE))
def test_step_rule_checks_every_named_adjoint(name: str) -> None:
    """One entry per named adjoint (each gate's δ, δ^c, δ^h) and hidden unit of each layer."""
    spec = TABLE[name]
    rows = check.step_rule_rows(spec)
    assert all(r.ok and r.max_abs_diff == 0 for r in rows), rows
    cell = CELLS[spec.model.cell]
    units = sum(min(h, check.EXACT_SIZE) for h in spec.model.hidden_sizes)
    assert rows[0].detail == f"{(len(cell.GATES) + len(cell.STATE)) * units} entries identically 0"
    assert "sigma, tanh generic" in rows[0].form


def _mutate(monkeypatch, spec: Spec, change) -> list[check.Row]:
    """The step-rule rows of `spec` with the rule that `change(rule)` returns."""
    real = bptt.step_rule
    rule = change(real(check.exact_spec(spec)))
    monkeypatch.setattr(bptt, "step_rule", lambda *a, **k: rule)
    return check.step_rule_rows(spec)


def _delta(layer: bptt.LayerRule, role: str, gate: str | None = None) -> int:
    return next(i for i, a in enumerate(layer.delta) if a.lhs.name.startswith(f"{role}[") and
                (gate is None or a.lhs.name.endswith(f".{gate}")))


def _replace_delta(rule: bptt.StepRule, role: str, rhs, gate: str | None = None) -> bptt.StepRule:
    layer = rule.layers[0]
    i = _delta(layer, role, gate)
    layer.delta[i] = dataclasses.replace(layer.delta[i], rhs=rhs(layer.delta[i].rhs))
    return rule


def _without(expr: sp.MatrixExpr, symbol: sp.MatrixSymbol) -> sp.MatrixExpr:
    """The sum `expr` without its terms that read `symbol`."""
    return sp.MatAdd(*[a for a in expr.args if symbol not in a.free_symbols])


def test_the_lstm_additive_path_is_checked(monkeypatch) -> None:
    """δ^c_t without f_{t+1} ⊙ δ^c_{t+1}: the delta row fails, the others hold."""
    def change(rule):
        carried = rule.sym("cell_delta", 1, T_SYM + 1)
        return _replace_delta(rule, "cell_delta", lambda e: _without(e, carried))
    rows = _mutate(monkeypatch, LSTM, change)
    assert [r.ok for r in rows] == [False, True, True], rows


def test_the_forget_gate_of_step_t_plus_1_is_checked(monkeypatch) -> None:
    """δ^c_t carrying f_t instead of f_{t+1} ⊙ δ^c_{t+1}."""
    def change(rule):
        s = rule.sym
        swap = {s("gate", 1, T_SYM + 1, gate="f"): s("gate", 1, T_SYM, gate="f")}
        return _replace_delta(rule, "cell_delta", lambda e: e.xreplace(swap))
    rows = _mutate(monkeypatch, LSTM, change)
    assert [r.ok for r in rows] == [False, True, True], rows


def test_the_gru_carry_through_z_is_checked(monkeypatch) -> None:
    """δ^h_t of a GRU without z_{t+1} ⊙ δ^h_{t+1} (the path that skips the candidate)."""
    def change(rule):
        carried = rule.sym("hidden_delta", 1, T_SYM + 1)
        return _replace_delta(rule, "hidden_delta", lambda e: _without(e, carried))
    rows = _mutate(monkeypatch, GRU_AFTER, change)
    assert [r.ok for r in rows] == [False, True, True], rows


def test_a_gate_slope_is_checked(monkeypatch) -> None:
    """δ^o_t with the candidate's slope 1 - o² instead of σ' = o(1 - o)."""
    def change(rule):
        o = rule.sym("gate", 1, T_SYM, gate="o")
        wrong = {ex: ex.func(sp.Lambda(check.u, 1 - check.u ** 2), o)
                 for ex in rule.layers[0].delta[_delta(rule.layers[0], "delta", "o")].rhs.atoms(
                     sp.matrices.expressions.applyfunc.ElementwiseApplyFunction) if ex.expr == o}
        assert wrong
        return _replace_delta(rule, "delta", lambda e: e.xreplace(wrong), gate="o")
    rows = _mutate(monkeypatch, LSTM, change)
    assert [r.ok for r in rows] == [False, True, True], rows


def test_the_c0_rule_is_checked(monkeypatch) -> None:
    """The c_0 gradient without ⊙ f_1: the row of uses and initial states fails."""
    def change(rule):
        layer = rule.layers[0]
        layer.initial = {**layer.initial, "cell": rule.sym("cell_delta", 1, sp.Integer(1))}
        return rule
    rows = _mutate(monkeypatch, LSTM, change)
    assert [r.ok for r in rows] == [True, False, True], rows


@pytest.mark.parametrize("reset, role, gate", [("after", "recurrent_bias", "n"), ("before", "recurrent_weight", "n"),
                                               ("after", "recurrent_weight", "z")])
def test_a_wrong_parameter_use_is_checked(monkeypatch, reset: str, role: str, gate: str) -> None:
    """A GRU's use of U_n or c_n without the reset gate r (or U_z with a transposed h)."""
    spec = gated("gru", reset, output=2)

    def change(rule):
        layer = rule.layers[0]
        p = rule.sym(role, 1, gate=gate)
        use = layer.uses[p]
        r = rule.sym("gate", 1, T_SYM, gate="r")
        if r in use.free_symbols:
            layer.uses[p] = use.xreplace({r: sp.OneMatrix(*r.shape)})
        else:
            layer.uses[p] = use.T
        return rule
    rows = _mutate(monkeypatch, spec, change)
    assert [r.ok for r in rows] == [True, False, True], rows


def test_the_gradient_sent_down_is_checked(monkeypatch) -> None:
    """The gradient to x_t without the o gate's term."""
    def change(rule):
        layer = rule.layers[0]
        layer.down = _without(layer.down, rule.sym("delta", 1, T_SYM, gate="o"))
        return rule
    rows = _mutate(monkeypatch, LSTM, change)
    assert [r.ok for r in rows] == [True, False, True], rows


# --------------------------------------------------------------------------- the unrolling, (a) = (b) = (c)

@pytest.mark.parametrize("spec", [LSTM, GRU_AFTER, gated("gru", "before", layout="row"),
                                  gated("lstm", layers=(1, 2), truncate=1, truncate_style="chunk")],
                         ids=["lstm", "gru-after-row", "gru-before-row", "lstm-stacked-chunk"])
def test_forms_a_b_c_are_equal_exactly(spec: Spec) -> None:
    """(a) − (c) and (b) − (c) are identically 0 at T = 2 with symbolic entries, σ and tanh generic."""
    rows = check.exact(spec, 2, with_path_sums=True, linear_loss=True)
    assert len(rows) == 2 and all(r.ok for r in rows), rows
    assert rows[1].form.startswith("(b) path sums vs (c) sympy.diff, unrolled (T = 2")


def test_forms_are_exact_with_a_real_loss() -> None:
    """The same with cross-entropy on softmax outputs (a rational function of the exps), at T = 1."""
    rows = check.exact(LSTM, 1, with_path_sums=True)
    assert len(rows) == 2 and all(r.ok for r in rows), rows


@pytest.mark.parametrize("name", list(TABLE))
def test_path_sums_equal_the_delta_recursion(name: str) -> None:
    rows = check.numeric(TABLE[name], path_sums_only=True)
    assert rows[0].ok and rows[0].max_abs_diff < 1e-12, rows


def test_path_sums_do_not_read_the_vjp_table(monkeypatch) -> None:
    """(b) is independent of the engine: a Hadamard rule that forgets the other factors breaks
    (a), and (a) vs (b) and (a) vs central differences both fail."""
    monkeypatch.setitem(bptt.VJPS, sp.HadamardProduct,
                        lambda rhs, lhs, grad: [(f, grad) for f in rhs.args])
    rows = check.numeric(LSTM)
    assert [r.ok for r in rows] == [False, False], rows


def test_path_sums_apply_the_chunks(monkeypatch) -> None:
    """(b) with every (s, k) pair kept ignores the chunk borders: (a) vs (b) fails."""
    spec = TABLE["lstm-stacked-row-chunk-clip"]
    spec = dataclasses.replace(spec, bptt=dataclasses.replace(spec.bptt, clip=0.0))
    assert check.numeric(spec, path_sums_only=True)[0].ok
    monkeypatch.setattr(bptt, "kept_steps", lambda spec, s: range(1, s + 1))
    assert not check.numeric(spec, path_sums_only=True)[0].ok


def test_path_sum_jacobians_are_derived_from_the_cell() -> None:
    """The step Jacobian of an LSTM: ∂c_t/∂c_{t-1} is diag(f_t), read from SymPy's derivative."""
    spec = gated("lstm", layers=(2,), output=0, loss="mse", out_act="identity")
    sym = bptt.Symbols(spec)
    locals_ = bptt.step_jacobians(sym, 1, check.SymPyBackend())
    cell = next(j for j in locals_ if j.lhs == sym("cell", 1, T_SYM))
    c_prev = sym("cell", 1, T_SYM - 1)
    f_gate = cell.fresh[sym("gate", 1, T_SYM, gate="f")]
    assert cell.jacobians[c_prev] == sp.diag(*f_gate)


# --------------------------------------------------------------------------- the generated module

def _wrapped(monkeypatch, change) -> None:
    """`check.load_module` hands the check a module whose loss_and_grads `change` alters."""
    real = check.load_module

    def load(spec):
        mod = real(spec)
        inner = mod.loss_and_grads
        wrapper = types.ModuleType(mod.__name__)
        wrapper.__dict__.update(mod.__dict__)
        wrapper.loss_and_grads = lambda *a, **k: change(inner(*a, **k))
        return wrapper
    monkeypatch.setattr(check, "load_module", load)


def test_the_module_rows_read_dc0(monkeypatch) -> None:
    """grads["h0"] of the LSTM is (dh, dc) per layer: a module that loses dc fails."""
    def change(result):
        loss, grads, *rest = result
        grads = dict(grads, h0=[(dh, np.zeros_like(dc)) for dh, dc in grads["h0"]])
        return (loss, grads, *rest)
    _wrapped(monkeypatch, change)
    rows = check.module_rows(LSTM)
    assert [r.ok for r in rows] == [True, False, False, True, True], rows


def test_the_module_rows_read_h_final(monkeypatch) -> None:
    """h_final of the LSTM is (h, c) per layer: a module that hands on (c, h) fails."""
    def change(result):
        loss, grads, h_final = result
        return loss, grads, [(c, h) for h, c in h_final]
    _wrapped(monkeypatch, change)
    rows = check.module_rows(LSTM)
    assert [r.ok for r in rows] == [False, True, True, True, True], rows


def test_the_module_reads_c0() -> None:
    """The module's h0 is a list of (h, c) tuples, and c_0 reaches the loss: its gradient is
    compared entry by entry (non-zero at a random point)."""
    d = bptt.derive(LSTM)
    env = check.numeric_env(d.unrolled, np.random.default_rng(1))
    params, xs, h0, targets = check._module_inputs(d, env)
    assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in h0)
    a = check._engine_all(d, env)
    assert np.max(np.abs(a[d.sym("cell", 1, sp.Integer(0))])) > 1e-3


# --------------------------------------------------------------------------- no false failure

@st.composite
def random_gated(draw) -> Spec:
    out_act, kind, min_out = draw(st.sampled_from(
        (("identity", "mse", 1), ("softmax", "cross_entropy", 2), ("sigmoid", "bce", 1), (None, "mse", 0),
         (None, "none", 0))))
    steps = draw(st.integers(1, 4))
    truncate = draw(st.integers(0, steps))
    try:
        return Spec(
            name="random_gated",
            model=Model(input_size=draw(st.integers(1, 3)), cell=draw(st.sampled_from(["lstm", "gru"])),
                        gru_reset="after",
                        hidden_sizes=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))),
                        output_size=0 if out_act is None else draw(st.integers(max(min_out, 1), 3)),
                        output_activation=out_act or "identity", bias=draw(st.booleans())),
            loss=Loss(kind=kind, at=draw(st.sampled_from(["every_step", "last_step"])),
                      reduction=draw(st.sampled_from(["sum", "mean"]))),
            bptt=BPTT(steps=steps, truncate=truncate, truncate_style="chunk",
                      clip=draw(st.sampled_from([0.0, 0.05, 0.5]))),
            notation=Notation(layout=draw(st.sampled_from(["row", "column"]))))
    except SpecError:
        from hypothesis import reject
        reject()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(spec=random_gated(), reset=st.sampled_from(["after", "before"]), seed=st.integers(0, 2**16))
def test_no_false_failure_on_random_gated_specs(spec: Spec, reset: str, seed: int) -> None:
    if spec.model.cell == "gru":
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, gru_reset=reset))
    code, out, _ = run(spec, seed=seed, exact_steps=1)
    assert code == 0, out
