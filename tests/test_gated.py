"""The generated LSTM and GRU modules (issue 14, CONTRACT §3 and §4) against independent oracles.

Why: the generated module hand-codes the gate-wise BPTT.  Each module here is built from a
spec at run time with the project's own API (``build.build``, loop and unrolled styles) and
compared, in float64, with

- the HIPS-autograd reference (tests/reference_autograd.py, itself proven against
  ``torch.nn.LSTM`` / ``torch.nn.GRU`` in tests/test_reference_gated_torch.py): ``loss_and_grads``
  and ``backward`` to 1e-10, for the LSTM and both GRU resets, both layouts, bias on and off,
  stacked layers, every loss kind and ``at``, window and chunk truncation, clip and clip_norm,
  token inputs, and random small specs (hypothesis);
- central finite differences of the module's own loss (rel 1e-6);
- ``torch.nn.LSTM`` / ``GRU`` with the weights copied through the module's ``to_torch``
  (forward to 1e-10, gradients too), and ``from_torch`` of torch's own state dict
  (skipped without torch);

and its API: float32 in gives float32 out, ``h_final`` / ``return_state`` / ``grads["h0"]``
as (h, c) and (dh, dc) tuples for the LSTM, ``step`` equals ``predict`` step by step, PARAMS
(role, layer, gate, shape) in CONTRACT §4's order.

Until the cells land, the whole file is collected and skipped (detected by building a
``cell = "lstm"`` spec); once they are accepted, every test runs.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference_autograd import (  # noqa: E402
    reference_backward,
    reference_final_state,
    reference_forward,
    reference_loss_and_grads,
)
from test_reference_gated_torch import (  # noqa: E402
    GATES,
    assert_grads_close,
    central_fd,
    draw_h0,
    draw_targets,
    from_torch_state,
    gated_meta,
    gated_spec,
    to_torch_state,
    torch_loss_and_grads,
)

from derive import build  # noqa: E402
from derive import spec as specs  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-10)


def _gated_accepted() -> bool:
    try:
        specs.from_dict(gated_spec("lstm"))
        specs.from_dict(gated_spec("gru", gru_reset="before"))
    except specs.SpecError:
        return False
    return True


GATED = _gated_accepted()
pytestmark = pytest.mark.skipif(not GATED, reason='cell = "lstm" / "gru" not yet accepted by derive.spec')

_BUILT: dict[tuple, ModuleType] = {}


def module(spec: Mapping[str, Any], style: str = "loop") -> ModuleType:
    """The generated module of a SPEC-shaped dict, built into a scratch folder and imported (once)."""
    key = (repr(spec), style)
    if key not in _BUILT:
        s = specs.from_dict({k: v for k, v in spec.items()})
        out = Path(tempfile.mkdtemp(prefix="derive-gated-"))
        build.build(s, out, formats=["py"], style=style, command="pytest")
        path = out / f"{s.name}.py"
        imp = importlib.util.spec_from_file_location(f"_gated_{len(_BUILT)}_{s.name}", path)
        mod = importlib.util.module_from_spec(imp)
        imp.loader.exec_module(mod)
        _BUILT[key] = mod
    return _BUILT[key]


def problem(spec: Mapping[str, Any], mod: ModuleType, seed: int = 0, batch: int = 2, T: int | None = None,
            scale: float = 0.5) -> tuple:
    """float64 params drawn by PARAMS (nonzero biases), xs, h0 (tuples for the LSTM), targets."""
    rng = np.random.default_rng(seed)
    params = {n: scale * rng.standard_normal(tuple(info["shape"])) for n, info in mod.PARAMS.items()}
    T = spec["bptt"]["steps"] if T is None else T
    xs = rng.standard_normal((T, batch, spec["model"]["input_size"]))
    return params, xs, draw_h0(spec, rng, batch), draw_targets(spec, rng, T, batch)


def ids(cases: list) -> list[str]:
    return [c[0] for c in cases]


# (id, spec): every cell form x layouts, bias, stacking, losses, `at`, truncation, clipping.
def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for tag, cell, reset in (("lstm", "lstm", "after"), ("gru", "gru", "after"), ("grub", "gru", "before")):
        kw = dict(gru_reset=reset)
        out += [
            (f"{tag}-col-mse-every-sum", gated_spec(cell, **kw)),
            (f"{tag}-row-ce-every-mean", gated_spec(cell, layout="row", output_size=3, kind="cross_entropy",
                                                    output_activation="softmax", reduction="mean", **kw)),
            (f"{tag}-col-stack-bce-last-nobias", gated_spec(cell, hidden_sizes=(3, 2), kind="bce", at="last_step",
                                                            output_activation="sigmoid", bias=False, steps=4, **kw)),
            (f"{tag}-row-stack-noout-none", gated_spec(cell, layout="row", hidden_sizes=(2, 3), output_size=0,
                                                       kind="none", **kw)),
            (f"{tag}-col-window2-clip-ce", gated_spec(cell, steps=5, truncate=2, clip=0.05, kind="cross_entropy",
                                                      output_size=3, **kw)),
            (f"{tag}-row-stack-chunk2-clipnorm", gated_spec(cell, layout="row", hidden_sizes=(3, 3), steps=5,
                                                            truncate=2, truncate_style="chunk", clip_norm=0.1, **kw)),
            (f"{tag}-col-mse-last-mean-sigmoid", gated_spec(cell, at="last_step", reduction="mean",
                                                            output_activation="sigmoid", **kw)),
            (f"{tag}-col-ce-last-sum-nobias", gated_spec(cell, kind="cross_entropy", at="last_step", output_size=3,
                                                         bias=False, steps=4, **kw)),
            (f"{tag}-row-window1-stack-bce-every", gated_spec(cell, layout="row", hidden_sizes=(2, 2), truncate=1,
                                                              steps=3, kind="bce", **kw)),
        ]
    return out


CASES = _cases()
STYLES = ["loop"]   # the unrolled style: test_unrolled_style_for_gated_cells


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name, spec", CASES, ids=ids(CASES))
def test_loss_and_grads_match_reference(name: str, spec: dict[str, Any], style: str) -> None:
    """Loss and every gradient (params, xs, h0: (dh, dc) pairs for the LSTM) equal the reference."""
    mod = module(spec, style)
    params, xs, h0, targets = problem(spec, mod)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    ref_loss, ref = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_close(grads, ref, list(mod.PARAMS), spec["model"]["cell"], **TOL)
    if spec["bptt"]["clip"] or spec["bptt"]["clip_norm"]:   # the clipping acts in this case
        _, raw = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0, clip=0, clip_norm=0)
        assert any(not np.allclose(raw[n], ref[n]) for n in mod.PARAMS)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name, spec", CASES, ids=ids(CASES))
def test_backward_matches_reference(name: str, spec: dict[str, Any], style: str) -> None:
    """backward(dhs, cache): gradients of sum(dhs * hs) given the upstream gradient on h only."""
    mod = module(spec, style)
    params, xs, h0, _ = problem(spec, mod, seed=1)
    dhs = np.random.default_rng(7).standard_normal(xs.shape[:2] + (spec["model"]["hidden_sizes"][-1],))
    hs, cache = mod.forward(params, xs, h0)
    ref_hs, _ = reference_forward(spec, mod.PARAMS, params, xs, h0)
    np.testing.assert_allclose(hs, ref_hs[-1], **TOL)
    grads = mod.backward(dhs, cache)
    ref = reference_backward(spec, mod.PARAMS, params, xs, h0, dhs)
    assert_grads_close(grads, ref, list(mod.PARAMS), spec["model"]["cell"], **TOL)


@pytest.mark.parametrize("name, spec", [c for c in CASES if "clip" in c[0]], ids=ids([c for c in CASES if "clip" in c[0]]))
def test_clip_keywords_override_the_spec(name: str, spec: dict[str, Any]) -> None:
    """clip= / clip_norm= per call (0 turns clipping off); both non-zero raise ValueError."""
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=2)
    for kw in (dict(clip=0, clip_norm=0), dict(clip=0.02, clip_norm=0), dict(clip=0, clip_norm=0.05)):
        _, grads = mod.loss_and_grads(params, xs, targets, h0, **kw)
        _, ref = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0, **kw)
        assert_grads_close(grads, ref, list(mod.PARAMS), spec["model"]["cell"], **TOL)
        dhs = np.random.default_rng(8).standard_normal(xs.shape[:2] + (spec["model"]["hidden_sizes"][-1],))
        got = mod.backward(dhs, mod.forward(params, xs, h0)[1], **kw)
        want = reference_backward(spec, mod.PARAMS, params, xs, h0, dhs, **kw)
        assert_grads_close(got, want, list(mod.PARAMS), spec["model"]["cell"], **TOL)
    with pytest.raises(ValueError):
        mod.loss_and_grads(params, xs, targets, h0, clip=1.0, clip_norm=1.0)


@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_unrolled_style_for_gated_cells(cell: str, reset: str) -> None:
    """--style unrolled: either the module equals the reference like the loop module, or the
    build refuses with one readable SpecError line that names the style and 'loop'."""
    spec = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), kind="cross_entropy", output_size=3)
    try:
        mod = module(spec, "unrolled")
    except specs.SpecError as exc:
        assert len(exc.messages) == 1 and "\n" not in str(exc), exc.messages
        assert "unrolled" in str(exc) and "'loop'" in str(exc) and len(str(exc)) > 20, str(exc)
        assert all(len(m) > 3 for m in exc.messages), f"message split into characters: {exc.messages[:5]}"
        return
    params, xs, h0, targets = problem(spec, mod)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    ref_loss, ref = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_close(grads, ref, list(mod.PARAMS), cell, **TOL)


FD_CASES = [c for c in CASES if "window" not in c[0] and "chunk" not in c[0] and "clip" not in c[0]]


@pytest.mark.parametrize("name, spec", FD_CASES, ids=ids(FD_CASES))
def test_finite_differences(name: str, spec: dict[str, Any]) -> None:
    """Central differences of the module's own loss: params, xs and h0 (h and c)."""
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=3)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    f = lambda: float(mod.loss_and_grads(params, xs, targets, h0)[0])  # noqa: E731
    floor = 1e-8 * max(1.0, abs(float(loss)))
    arrays = [(n, params[n], grads[n]) for n in mod.PARAMS] + [("xs", xs, grads["xs"])]
    for l, s in enumerate(h0):
        if spec["model"]["cell"] == "lstm":
            arrays += [(f"h0[{l}].h", s[0], grads["h0"][l][0]), (f"h0[{l}].c", s[1], grads["h0"][l][1])]
        else:
            arrays.append((f"h0[{l}]", s, grads["h0"][l]))
    for what, x, g in arrays:
        fd = central_fd(f, x)
        g = np.asarray(g)
        bad = np.abs(fd - g) > 1e-6 * np.maximum(np.abs(fd), np.abs(g)) + floor
        assert not bad.any(), f"{what}: finite differences {fd[bad]} vs gradient {g[bad]}"


@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_params_follow_contract_order_roles_gates_shapes(cell: str, reset: str) -> None:
    """PARAMS: per layer, per gate in PyTorch's order, input_weight, recurrent_weight, bias (and
    the GRU n gate's recurrent_bias with reset after); then the output layer; shapes per layout."""
    for layout in ("column", "row"):
        for bias in (True, False):
            spec = gated_spec(cell, gru_reset=reset, layout=layout, bias=bias, hidden_sizes=(4, 3), input_size=5)
            mod = module(spec)
            want = [(v["role"], v["layer"], v["gate"], tuple(v["shape"])) for v in gated_meta(spec).values()]
            got = [(v["role"], v["layer"], v["gate"], tuple(v["shape"])) for v in mod.PARAMS.values()]
            assert got == want, (layout, bias)
            assert mod.LAYOUT == layout
            assert mod.SPEC["model"]["cell"] == cell
            if cell == "gru":
                assert mod.SPEC["model"]["gru_reset"] == reset
            init = mod.init_params(seed=0)
            assert list(init) == list(mod.PARAMS)
            assert all(init[n].shape == tuple(mod.PARAMS[n]["shape"]) for n in init)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_state_tuples_h_final_and_return_state(cell: str, reset: str, style: str) -> None:
    """cache["h_final"], return_state and grads["h0"]: lists per layer; LSTM entries are Python
    tuples (h, c) / (dh, dc), equal to the reference; h0=None means zeros."""
    spec = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), steps=4, kind="cross_entropy", output_size=3)
    mod = module(spec, style)
    params, xs, h0, targets = problem(spec, mod, seed=4)
    _, cache = mod.forward(params, xs, h0)
    loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0, return_state=True)
    want = reference_final_state(spec, mod.PARAMS, params, xs, h0)
    for got in (cache["h_final"], h_final):
        assert isinstance(got, list) and len(got) == 2
        for l, (a, b) in enumerate(zip(got, want)):
            if cell == "lstm":
                assert type(a) is tuple and len(a) == 2, f"h_final[{l}] must be a tuple (h, c)"
                for x, y in zip(a, b):
                    np.testing.assert_allclose(x, y, **TOL)
            else:
                assert isinstance(a, np.ndarray)
                np.testing.assert_allclose(a, b, **TOL)
    for l, g in enumerate(grads["h0"]):
        assert (type(g) is tuple and len(g) == 2) if cell == "lstm" else isinstance(g, np.ndarray), l
    # h0 = None: zeros (for the LSTM both h and c)
    zeros = [tuple(np.zeros_like(x) for x in s) if cell == "lstm" else np.zeros_like(s) for s in h0]
    l1, g1 = mod.loss_and_grads(params, xs, targets)
    l2, g2 = mod.loss_and_grads(params, xs, targets, zeros)
    assert l1 == l2
    for n in mod.PARAMS:
        np.testing.assert_array_equal(g1[n], g2[n])


@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_chunk_is_a_loop_over_chunks_carrying_the_state(cell: str, reset: str) -> None:
    """Chunked truncation at a run-time T that is not a multiple of k: one call equals the loop
    over chunks that carries h_final ((h, c) for the LSTM) into the next chunk's h0."""
    spec = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), steps=4, truncate=2, truncate_style="chunk",
                      kind="cross_entropy", output_size=3)
    plain = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), steps=4, kind="cross_entropy", output_size=3)
    mod, loop = module(spec), module(plain)
    params, xs, h0, targets = problem(spec, mod, seed=5, T=7)
    loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0, return_state=True)
    state, total, summed = h0, 0.0, {n: 0.0 for n in mod.PARAMS}
    for a in range(0, 7, 2):
        part = slice(a, a + 2)
        l, g, state = loop.loss_and_grads(params, xs[part], targets[part], state, return_state=True)
        total += l
        summed = {n: summed[n] + g[n] for n in mod.PARAMS}
    np.testing.assert_allclose(loss, total, **TOL)
    for n in mod.PARAMS:
        np.testing.assert_allclose(grads[n], summed[n], err_msg=n, **TOL)
    _, ref = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0)
    assert_grads_close(grads, ref, list(mod.PARAMS), cell, **TOL)
    flat = lambda s: [x for p in s for x in (p if isinstance(p, tuple) else (p,))]  # noqa: E731
    for a, b in zip(flat(h_final), flat(state)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_token_inputs(cell: str, reset: str, style: str) -> None:
    """Integer xs (T, B): the same as their one-hot rows (= the reference), grads["xs"] None."""
    spec = gated_spec(cell, gru_reset=reset, input_size=5, hidden_sizes=(3, 2), steps=4, kind="cross_entropy",
                      output_size=5, truncate=2, truncate_style="chunk")
    mod = module(spec, style)
    params, _, h0, targets = problem(spec, mod, seed=6)
    tokens = np.random.default_rng(6).integers(0, 5, size=(4, 2))
    onehot = np.eye(5)[tokens]
    loss, grads = mod.loss_and_grads(params, tokens, targets, h0)
    ref_loss, ref = reference_loss_and_grads(spec, mod.PARAMS, params, onehot, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert grads["xs"] is None
    assert_grads_close(grads, ref, list(mod.PARAMS), cell, xs=False, **TOL)
    np.testing.assert_allclose(mod.predict(params, tokens, h0), reference_forward(spec, mod.PARAMS, params, onehot, h0)[1], **TOL)
    dhs = np.random.default_rng(1).standard_normal((4, 2, 2))
    got = mod.backward(dhs, mod.forward(params, tokens, h0)[1])
    want = reference_backward(spec, mod.PARAMS, params, onehot, h0, dhs)
    assert got["xs"] is None
    assert_grads_close(got, want, list(mod.PARAMS), cell, xs=False, **TOL)
    with pytest.raises(ValueError, match="xs"):
        mod.predict(params, tokens + 5, h0)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_step_equals_predict_step_by_step(cell: str, reset: str, style: str) -> None:
    """step(params, x, h) -> (y, h): y is predict's row for that step, h the carried state
    ((h, c) tuples for the LSTM) and the last h is h_final; tokens and h=None too."""
    spec = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), steps=4, kind="cross_entropy", output_size=3,
                      output_activation="softmax")
    mod = module(spec, style)
    params, xs, h0, _ = problem(spec, mod, seed=7)
    ys = mod.predict(params, xs, h0)
    h = h0
    for t in range(4):
        y, h = mod.step(params, xs[t], h)
        np.testing.assert_allclose(y, ys[t], **TOL)
        assert len(h) == 2 and all((type(s) is tuple and len(s) == 2) if cell == "lstm" else True for s in h)
    final = mod.forward(params, xs, h0)[1]["h_final"]
    flat = lambda s: [x for p in s for x in (p if isinstance(p, tuple) else (p,))]  # noqa: E731
    for a, b in zip(flat(h), flat(final)):
        np.testing.assert_allclose(a, b, **TOL)
    index = np.array([0, 2])
    y1, h1 = mod.step(params, index)
    y2, h2 = mod.step(params, np.eye(3)[index])
    np.testing.assert_allclose(y1, y2, **TOL)
    np.testing.assert_allclose(y2, reference_forward(spec, mod.PARAMS, params, np.eye(3)[index][None])[1][0], **TOL)
    for a, b in zip(flat(h1), flat(h2)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("cell, reset", [("lstm", "after"), ("gru", "after"), ("gru", "before")])
def test_float32_in_float32_out(cell: str, reset: str) -> None:
    """float32 params and data: every output float32 (hs, ys, loss grads, h_final, step), and
    close to the float64 result."""
    spec = gated_spec(cell, gru_reset=reset, hidden_sizes=(3, 2), kind="cross_entropy", output_size=3,
                      truncate=2, truncate_style="chunk", clip_norm=1.0)
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=8)
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    p32 = {n: f32(v) for n, v in params.items()}
    h32 = [tuple(map(f32, s)) if cell == "lstm" else f32(s) for s in h0]
    flat = lambda s: [x for p in s for x in (p if isinstance(p, tuple) else (p,))]  # noqa: E731
    hs, cache = mod.forward(p32, f32(xs), h32)
    assert hs.dtype == np.float32 and all(x.dtype == np.float32 for x in flat(cache["h_final"]))
    assert mod.predict(p32, f32(xs), h32).dtype == np.float32
    loss, grads, h_final = mod.loss_and_grads(p32, f32(xs), targets, h32, return_state=True)
    assert all(grads[n].dtype == np.float32 for n in mod.PARAMS) and grads["xs"].dtype == np.float32
    assert all(x.dtype == np.float32 for x in flat(grads["h0"]) + flat(h_final))
    back = mod.backward(f32(np.ones(hs.shape)), cache)
    assert all(back[n].dtype == np.float32 for n in mod.PARAMS)
    y, h = mod.step(p32, f32(xs[0]), h32)
    assert y.dtype == np.float32 and all(x.dtype == np.float32 for x in flat(h))
    tokens = np.zeros((3, 2), dtype=np.int64)
    assert mod.loss_and_grads(p32, tokens, targets)[1][next(iter(mod.PARAMS))].dtype == np.float32
    _, g64 = mod.loss_and_grads(params, xs, targets, h0)
    for n in mod.PARAMS:
        np.testing.assert_allclose(grads[n], g64[n], rtol=1e-3, atol=1e-4, err_msg=n)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_wrong_state_shapes_raise(cell: str) -> None:
    """An LSTM h0 that is not (h, c) pairs, or a state of the wrong width: ValueError naming h0."""
    spec = gated_spec(cell, hidden_sizes=(3,))
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=9)
    bad = [np.zeros((2, 3))] if cell == "lstm" else [np.zeros((2, 4))]
    with pytest.raises(ValueError, match="h0"):
        mod.forward(params, xs, bad)
    if cell == "lstm":
        with pytest.raises(ValueError, match="h0"):
            mod.forward(params, xs, [(np.zeros((2, 3)), np.zeros((2, 4)))])


# --------------------------------------------------------------------------- hypothesis

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def gated_specs(draw: st.DrawFn) -> dict[str, Any]:
    from derive.rules.losses import LOSSES

    cell, reset = draw(st.sampled_from([("lstm", "after"), ("gru", "after"), ("gru", "before")]))
    hidden = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    steps = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(sorted(LOSSES)))
    row = LOSSES[kind]
    out_size = draw(st.sampled_from(([0] if row.without_output_layer else [])
                                    + ([2, 3] if row.target == "class" else [1, 2, 3])))
    out_act = "identity" if out_size == 0 else draw(st.sampled_from(sorted(row.outputs)))
    clip, clip_norm = draw(st.sampled_from([(0.0, 0.0), (0.05, 0.0), (0.0, 0.2)]))
    return gated_spec(
        cell, gru_reset=reset, input_size=draw(st.integers(1, 3)), hidden_sizes=hidden, output_size=out_size,
        output_activation=out_act, bias=draw(st.booleans()), kind=kind, at=draw(st.sampled_from(["every_step", "last_step"])),
        reduction=draw(st.sampled_from(["sum", "mean"])), steps=steps, truncate=draw(st.integers(0, steps)),
        truncate_style=draw(st.sampled_from(["window", "chunk"])), clip=clip, clip_norm=clip_norm,
        layout=draw(st.sampled_from(["row", "column"])))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=gated_specs(), seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_random_gated_specs_match_reference(spec: dict[str, Any], seed: int, batch: int) -> None:
    """Random small LSTM/GRU specs: loss_and_grads and backward equal the reference."""
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=seed, batch=batch)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    ref_loss, ref = reference_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), ref_loss, **TOL)
    assert_grads_close(grads, ref, list(mod.PARAMS), spec["model"]["cell"], **TOL)
    dhs = np.random.default_rng(seed).standard_normal(xs.shape[:2] + (spec["model"]["hidden_sizes"][-1],))
    got = mod.backward(dhs, mod.forward(params, xs, h0)[1])
    want = reference_backward(spec, mod.PARAMS, params, xs, h0, dhs)
    assert_grads_close(got, want, list(mod.PARAMS), spec["model"]["cell"], **TOL)


# --------------------------------------------------------------------------- torch


TORCH_SPECS = [
    ("lstm-col-stack2", gated_spec("lstm", hidden_sizes=(4, 4), output_size=3, kind="cross_entropy",
                                   output_activation="softmax", steps=5)),
    ("lstm-row-nobias", gated_spec("lstm", layout="row", bias=False, steps=4)),
    ("gru-col-stack2", gated_spec("gru", hidden_sizes=(4, 4), output_size=3, kind="cross_entropy",
                                  output_activation="softmax", steps=5)),
    ("gru-row-nobias-sigmoid", gated_spec("gru", layout="row", bias=False, kind="bce", output_activation="sigmoid")),
    ("gru-row-stack2-noout", gated_spec("gru", layout="row", hidden_sizes=(3, 3), output_size=0)),
]


def _torch_modules(torch: Any, spec: Mapping[str, Any]) -> tuple[Any, Any]:
    m = spec["model"]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[m["cell"]]
    rnn = cls(m["input_size"], m["hidden_sizes"][0], num_layers=len(m["hidden_sizes"]), bias=m["bias"]).double()
    out = torch.nn.Linear(m["hidden_sizes"][-1], m["output_size"], bias=m["bias"]).double() if m["output_size"] else None
    return rnn, out


def _torch_predict(torch: Any, spec: Mapping[str, Any], rnn: Any, out: Any, xs: np.ndarray) -> tuple:
    with torch.no_grad():
        hs, state = rnn(torch.from_numpy(xs))
        if out is None:
            return hs.numpy(), hs.numpy(), state
        z = out(hs)
        act = {"identity": lambda v: v, "softmax": lambda v: torch.softmax(v, -1),
               "sigmoid": torch.sigmoid}[spec["model"]["output_activation"]]
        return hs.numpy(), act(z).numpy(), state


@pytest.mark.parametrize("name, spec", TORCH_SPECS, ids=ids(TORCH_SPECS))
def test_forward_matches_torch_through_to_torch(name: str, spec: dict[str, Any]) -> None:
    """Weights copied through the module's to_torch into torch.nn.LSTM/GRU (+ nn.Linear):
    hidden states, predictions and final states agree to 1e-10 in float64."""
    torch = pytest.importorskip("torch")
    mod = module(spec)
    params, xs, _, _ = problem(spec, mod, seed=10, scale=0.8)
    sd = mod.to_torch(params)
    mine = to_torch_state(spec, mod.PARAMS, params)
    assert list(sd) == list(mine), "to_torch keys and their order"
    for k in mine:
        np.testing.assert_array_equal(np.asarray(sd[k]), mine[k], err_msg=k)
    rnn, out = _torch_modules(torch, spec)
    rnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items() if not k.startswith("out.")})
    if out is not None:
        out.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in sd.items() if k.startswith("out.")})
    t_hs, t_ys, t_state = _torch_predict(torch, spec, rnn, out, xs)
    hs, cache = mod.forward(params, xs)
    np.testing.assert_allclose(hs, t_hs, **TOL)
    np.testing.assert_allclose(mod.predict(params, xs), t_ys, **TOL)
    for l, s in enumerate(cache["h_final"]):
        if spec["model"]["cell"] == "lstm":
            np.testing.assert_allclose(s[0], t_state[0][l].numpy(), **TOL)
            np.testing.assert_allclose(s[1], t_state[1][l].numpy(), **TOL)
        else:
            np.testing.assert_allclose(s, t_state[l].numpy(), **TOL)
    back = mod.from_torch(sd)
    assert list(back) == list(mod.PARAMS)
    for n in mod.PARAMS:
        np.testing.assert_array_equal(back[n], params[n])


@pytest.mark.parametrize("name, spec", TORCH_SPECS, ids=ids(TORCH_SPECS))
def test_from_torch_reads_torch_state_dicts(name: str, spec: dict[str, Any]) -> None:
    """from_torch of torch's own (random, both biases nonzero) state dict: the module predicts
    what torch predicts, and the parameters equal the test's own from_torch."""
    torch = pytest.importorskip("torch")
    mod = module(spec)
    torch.manual_seed(3)
    rnn, out = _torch_modules(torch, spec)
    sd = {k: v.numpy() for k, v in rnn.state_dict().items()}
    if out is not None:
        sd.update({f"out.{k}": v.numpy() for k, v in out.state_dict().items()})
    params = mod.from_torch(sd)
    mine = from_torch_state(spec, mod.PARAMS, sd)
    for n in mod.PARAMS:
        np.testing.assert_allclose(params[n], mine[n], rtol=0, atol=1e-15, err_msg=n)
    xs = np.random.default_rng(11).standard_normal((5, 3, spec["model"]["input_size"]))
    _, t_ys, _ = _torch_predict(torch, spec, rnn, out, xs)
    np.testing.assert_allclose(mod.predict(params, xs), t_ys, **TOL)
    del sd["weight_hh_l0"]
    with pytest.raises(ValueError, match="weight_hh_l0"):
        mod.from_torch(sd)


@pytest.mark.parametrize("name, spec", TORCH_SPECS, ids=ids(TORCH_SPECS))
def test_gradients_match_torch(name: str, spec: dict[str, Any]) -> None:
    """loss_and_grads against torch autograd through the same weights (h0 given, (h, c) for LSTM)."""
    pytest.importorskip("torch")
    mod = module(spec)
    params, xs, h0, targets = problem(spec, mod, seed=12, scale=0.8)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    t_loss, t_grads = torch_loss_and_grads(spec, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(float(loss), t_loss, **TOL)
    assert_grads_close(grads, t_grads, list(mod.PARAMS), spec["model"]["cell"], **TOL)


def test_gru_bias_keys_and_recurrent_bias_in_torch_dicts() -> None:
    """GRU with reset after: to_torch puts c_n in the n block of bias_hh, zeros elsewhere;
    from_torch keeps bias_hh's n block apart and adds the r and z blocks."""
    spec = gated_spec("gru", hidden_sizes=(3,))
    mod = module(spec)
    params, *_ = problem(spec, mod, seed=13)
    sd = mod.to_torch(params)
    rb = next(n for n, v in mod.PARAMS.items() if v["role"] == "recurrent_bias")
    np.testing.assert_array_equal(np.asarray(sd["bias_hh_l0"])[:6], 0)
    np.testing.assert_array_equal(np.asarray(sd["bias_hh_l0"])[6:], params[rb])
    sd = {k: np.asarray(v, dtype=float).copy() for k, v in sd.items()}
    sd["bias_hh_l0"] += 1.0
    back = mod.from_torch(sd)
    for n, v in mod.PARAMS.items():
        if v["role"] == "bias":
            np.testing.assert_allclose(back[n], params[n] + (0.0 if v["gate"] == "n" else 1.0), err_msg=n)
    np.testing.assert_allclose(back[rb], params[rb] + 1.0)
    nobias = module(gated_spec("lstm", bias=False))
    p2, *_ = problem(gated_spec("lstm", bias=False), nobias)
    assert not [k for k in nobias.to_torch(p2) if "bias" in k]


# --------------------------------------------------------------------------- the benchmark's baseline


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_handwritten_benchmark_baseline_matches_reference(cell: str) -> None:
    """benchmarks/_handwritten_gated.py (what bench_gated.py measures against) is right:
    loss and every gradient equal the reference (float64), and float32 stays float32."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import _handwritten_gated as hw

    spec = gated_spec(cell, input_size=5, hidden_sizes=(4,), output_size=5, kind="cross_entropy",
                      output_activation="softmax", steps=6)
    meta = gated_meta(spec)
    rng = np.random.default_rng(0)
    params = {n: 0.5 * rng.standard_normal(v["shape"]) for n, v in meta.items()}
    xs = rng.standard_normal((6, 3, 5))
    targets = rng.integers(0, 5, size=(6, 3))
    loss, ref = reference_loss_and_grads(spec, meta, params, xs, targets)
    per = {g: {"W": params[f"W{g}1"], "U": params[f"U{g}1"], "b": params[f"b{g}1"]} for g in GATES[cell]}
    layer = hw.pack_lstm(per) if cell == "lstm" else hw.pack_gru(per, params["cn1"])
    h_loss, got = hw.softmax_ce_loss_and_grads(cell, [layer], params["Vout"], params["cout"], xs, targets)
    np.testing.assert_allclose(h_loss, loss, **TOL)
    order = ("i", "f", "o", "g") if cell == "lstm" else ("r", "z", "n")
    for k, g in enumerate(order):
        block = slice(4 * k, 4 * k + 4)
        for key in ("W", "U", "b"):
            np.testing.assert_allclose(got[key][0][block], ref[f"{key}{g}1"], err_msg=f"{key}{g}", **TOL)
    if cell == "gru":
        np.testing.assert_allclose(got["cn"][0], ref["cn1"], **TOL)
    np.testing.assert_allclose(got["V"], ref["Vout"], **TOL)
    np.testing.assert_allclose(got["c"], ref["cout"], **TOL)
    np.testing.assert_allclose(got["xs"], ref["xs"], **TOL)
    f32 = [{k: v.astype(np.float32) for k, v in layer.items()}]
    _, g32 = hw.softmax_ce_loss_and_grads(cell, f32, params["Vout"].astype(np.float32),
                                          params["cout"].astype(np.float32), xs.astype(np.float32), targets)
    assert all(g.dtype == np.float32 for g in (g32["W"][0], g32["U"][0], g32["xs"], g32["V"]))
