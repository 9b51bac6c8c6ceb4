"""Issue 15: the generated module's opt-in `Workspace`.

A training loop passes one `Workspace()` on every call; the module keeps its large scratch
buffers there instead of allocating (and the C library unmapping) them on every call. What
must hold, each checked below on a table that reaches every buffer the templates place in a
workspace (truncation ages, stacked layers, both layouts, every loss and output path, last
step only, chunks, token inputs), in both code styles:

- results are bitwise the same with and without a workspace, over calls whose shapes and
  dtypes change (float64 then float32, longer, shorter, tokens);
- nothing a call returns (loss, grads, h_final, forward's hs and cache) shares memory with
  the workspace, and results kept from call n do not change at call n + 1;
- every buffer is written before it is read: a workspace filled with NaN bytes, or left by
  a float64 call, gives a float32 call exactly its results without one;
- buffers are reused when the next call needs no more bytes and grown when it needs more;
  with a warm workspace a call allocates none of the (T, B, H)-sized buffers;
- a wrong `workspace` argument is a ValueError naming it; threads with one workspace each
  get the results of a serial run (the module has no global state).
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from derive import spec as spec_mod
from derive.spec import BPTT, Loss, Model, Notation, Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_module_table import CASES as TABLE, case, load  # noqa: E402

SPECS = {
    **{name: TABLE[name] for name in (
        "ce-softmax", "bce-sigmoid", "identity", "last-step", "mean-last-step", "truncate-1",
        "truncate-2-clip-stacked", "row-stacked-relu", "stacked-3", "no-output-layer",
        "no-output-layer-none", "none-softmax")},
    "no-output-last-step": case(model=dict(output_size=0), loss=dict(at="last_step")),
    "chunked_elman": spec_mod.preset("chunked_elman"),
    "stacked_mse": spec_mod.preset("stacked_mse"),
    # gated cells (loop style only): every named adjoint, the stacked weights, the stored values
    "lstm_softmax": spec_mod.preset("lstm_softmax"),
    "gru_softmax": spec_mod.preset("gru_softmax"),
    "lstm-stacked-row-window": case(model=dict(cell="lstm", hidden_sizes=(3, 2)), layout="row",
                                    bptt=dict(truncate=2, steps=4)),
    "gru-before-chunk-mse": case(model=dict(cell="gru", gru_reset="before", output_size=0, output_activation="identity"),
                                 loss=dict(kind="mse"), bptt=dict(truncate=2, truncate_style="chunk", steps=4)),
}
STYLES = ("loop", "unrolled")
#: (name, style) pairs: gated cells have the loop style only
PAIRS = [(n, s) for n in SPECS for s in STYLES if s == "loop" or SPECS[n].model.cell == "elman"]
_MODULES: dict = {}


def module(name: str, style: str):
    if (name, style) not in _MODULES:
        _MODULES[name, style] = load(SPECS[name], style)
    return _MODULES[name, style]


def problem(mod, T: int, B: int, dtype, seed: int, tokens: bool = False):
    """params, xs, targets, h0, dhs of the given sizes (T is the spec's in the unrolled style)."""
    rng = np.random.default_rng(seed)
    m, loss = mod.SPEC["model"], mod.SPEC["loss"]
    hidden = list(m["hidden_sizes"])
    out = m["output_size"] or hidden[-1]
    params = {n: (0.7 * rng.standard_normal(meta["shape"])).astype(dtype) for n, meta in mod.PARAMS.items()}
    xs = (rng.integers(0, m["input_size"], size=(T, B)) if tokens
          else rng.standard_normal((T, B, m["input_size"])).astype(dtype))
    lead = (T, B) if loss["at"] == "every_step" else (B,)
    if loss["kind"] == "cross_entropy":
        targets = rng.integers(0, out, size=lead)
    elif loss["kind"] == "bce":
        targets = rng.uniform(0.0, 1.0, size=lead + (out,)).astype(dtype)
    else:
        targets = rng.standard_normal(lead + (out,)).astype(dtype)
    h0 = [(0.5 * rng.standard_normal((B, H))).astype(dtype) for H in hidden]
    if m["cell"] == "lstm":   # the state is (h, c) per layer
        h0 = [(h, (0.5 * rng.standard_normal(h.shape)).astype(dtype)) for h in h0]
    dhs = rng.standard_normal((T, B, hidden[-1])).astype(dtype)
    return params, xs, targets, h0, dhs


def calls(mod, style: str):
    """A training loop's calls whose shapes and dtypes change: (T, B, dtype, tokens, seed)."""
    T = mod.SPEC["bptt"]["steps"]
    runs = [(T, 2, np.float64, False, 0), (T, 2, np.float64, False, 1), (T, 3, np.float32, False, 2),
            (T, 5, np.float64, False, 3), (T, 1, np.float32, True, 4), (T, 2, np.float64, False, 5)]
    if style == "loop":   # the loop style runs any T
        runs[3:3] = [(T + 3, 4, np.float64, False, 6), (max(T - 2, 1), 2, np.float32, False, 7)]
    return runs


def arrays(result) -> list[np.ndarray]:
    """Every array in a result: dicts, lists and tuples walked, scalars as 0-d arrays."""
    if isinstance(result, dict):
        return [a for value in result.values() for a in arrays(value)]
    if isinstance(result, (list, tuple)):
        return [a for value in result for a in arrays(value)]
    if result is None:
        return []
    return [result] if isinstance(result, np.ndarray) else [np.asarray(result)]


def assert_bitwise(got, want, what: str) -> None:
    a, b = arrays(got), arrays(want)
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: array {i}: {x.dtype} {x.shape} != {y.dtype} {y.shape}"
        assert x.tobytes() == y.tobytes(), f"{what}: array {i} differs"


def buffers(ws) -> list[np.ndarray]:
    return list(ws._buffers.values())


def snapshot(result):
    """A deep copy of every array in a result, in the same nesting."""
    if isinstance(result, dict):
        return {k: snapshot(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return type(result)(snapshot(v) for v in result)
    return None if result is None else np.array(result, copy=True)


def one_round(mod, ws, T, B, dtype, tokens, seed):
    """loss_and_grads (with return_state), forward and backward, with the workspace ws (or None)."""
    params, xs, targets, h0, dhs = problem(mod, T, B, dtype, seed, tokens)
    lag = mod.loss_and_grads(params, xs, targets, h0, return_state=True, workspace=ws)
    hs, cache = mod.forward(params, xs, h0, workspace=ws)
    back = mod.backward(dhs, cache, workspace=ws)
    return {"loss_and_grads": lag, "forward": (hs, cache), "backward": back}


@pytest.mark.parametrize("name, style", PAIRS)
def test_results_are_bitwise_equal_with_and_without_a_workspace(name: str, style: str) -> None:
    mod = module(name, style)
    ws = mod.Workspace()
    for run in calls(mod, style):
        assert_bitwise(one_round(mod, ws, *run), one_round(mod, None, *run), f"{name} {style} {run}")
    assert ws.nbytes > 0


@pytest.mark.parametrize("name, style", PAIRS)
def test_returned_arrays_never_share_memory_with_the_workspace(name: str, style: str) -> None:
    mod = module(name, style)
    ws = mod.Workspace()
    kept = []
    for run in calls(mod, style):
        result = one_round(mod, ws, *run)
        for i, a in enumerate(arrays(result)):
            for b in buffers(ws):
                assert not np.shares_memory(a, b), f"{name} {style} {run}: returned array {i} is in the workspace"
        kept.append((result, snapshot(result)))
    # and what a user kept from earlier calls has not changed since
    for result, copy in kept:
        assert_bitwise(result, copy, f"{name} {style}: a result kept from an earlier call changed")


def _poison(ws) -> None:
    for b in buffers(ws):
        b.fill(0xFF)   # NaN in every float dtype


@pytest.mark.parametrize("name, style", PAIRS)
def test_every_buffer_is_written_before_it_is_read(name: str, style: str) -> None:
    """A workspace full of NaN bytes, or left by a float64 call, changes no float32 result."""
    mod = module(name, style)
    T = mod.SPEC["bptt"]["steps"]
    ws = mod.Workspace()
    one_round(mod, ws, T + (3 if style == "loop" else 0), 4, np.float64, False, 0)   # a larger float64 call
    want = one_round(mod, None, T, 3, np.float32, False, 1)
    assert_bitwise(one_round(mod, ws, T, 3, np.float32, False, 1), want, f"{name} {style}: after float64")
    for run in calls(mod, style):
        _poison(ws)
        assert_bitwise(one_round(mod, ws, *run), one_round(mod, None, *run), f"{name} {style} {run}: poisoned")


def test_buffers_are_reused_grown_and_released() -> None:
    mod = module("truncate-2-clip-stacked", "loop")
    ws = mod.Workspace()
    assert ws.nbytes == 0 and "0 buffers" in repr(ws)
    one_round(mod, ws, 6, 4, np.float64, False, 0)
    held = {k: id(b) for k, b in ws._buffers.items()}
    size = ws.nbytes
    one_round(mod, ws, 6, 4, np.float64, False, 1)   # the same shapes: the same buffers
    assert {k: id(b) for k, b in ws._buffers.items()} == held and ws.nbytes == size
    one_round(mod, ws, 3, 2, np.float32, False, 2)   # fewer bytes: still the same buffers
    assert {k: id(b) for k, b in ws._buffers.items()} == held and ws.nbytes == size
    one_round(mod, ws, 9, 5, np.float64, False, 3)   # more bytes: grown
    assert ws.nbytes > size
    ws.clear()
    assert ws.nbytes == 0
    assert_bitwise(one_round(mod, ws, 6, 4, np.float64, False, 0), one_round(mod, None, 6, 4, np.float64, False, 0),
                   "after clear()")


BIG = Spec(name="ws_alloc", model=Model(input_size=2, hidden_sizes=(48,), output_size=48, activation="tanh",
                                        output_activation="softmax", bias=True),
           loss=Loss(kind="cross_entropy", at="every_step", reduction="sum"),
           bptt=BPTT(steps=4), notation=Notation(preset="d2l", layout="column"))


def _traced_peak(call) -> tuple[int, object]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("variant", ["plain", "truncated", "stacked"])
def test_a_warm_workspace_allocates_no_large_buffer(variant: str) -> None:
    """With a warm workspace, a call allocates what it returns and small per-row arrays
    only: less than half of one (T, B, H) buffer beyond the returned arrays (a call without
    one allocates several of them: hidden states, logits, deltas, dtop)."""
    spec = {"plain": BIG,
            "truncated": dataclasses.replace(BIG, bptt=dataclasses.replace(BIG.bptt, truncate=2)),
            "stacked": dataclasses.replace(BIG, model=dataclasses.replace(BIG.model, hidden_sizes=(48, 48)))}[variant]
    mod = load(spec, "loop")
    T, B, H = 30, 16, 48
    one_buffer = T * B * H * 8
    params, xs, targets, h0, dhs = problem(mod, T, B, np.float64, 0)
    ws = mod.Workspace()
    cache = mod.forward(params, xs, h0)[1]
    for name, call in {
        "loss_and_grads": lambda w: mod.loss_and_grads(params, xs, targets, h0, workspace=w),
        "backward": lambda w: mod.backward(dhs, cache, workspace=w),
    }.items():
        call(ws)   # warm
        peak, result = _traced_peak(lambda: call(ws))
        returned = sum(a.nbytes for a in arrays(result))
        cold, _ = _traced_peak(lambda: call(None))
        assert peak - returned < one_buffer / 2, f"{variant} {name}: {peak - returned} bytes beyond the results"
        assert cold - peak > one_buffer / 2, f"{variant} {name}: the cold call should allocate large buffers"


@pytest.mark.parametrize("style", STYLES)
def test_a_wrong_workspace_is_a_value_error_naming_it(style: str) -> None:
    mod = module("ce-softmax", style)
    other = module("bce-sigmoid", style)
    params, xs, targets, h0, dhs = problem(mod, mod.SPEC["bptt"]["steps"], 2, np.float64, 0)
    cache = mod.forward(params, xs, h0)[1]
    for bad in ({}, "ws", 1, other.Workspace()):
        for call in (lambda: mod.loss_and_grads(params, xs, targets, h0, workspace=bad),
                     lambda: mod.forward(params, xs, h0, workspace=bad),
                     lambda: mod.backward(dhs, cache, workspace=bad)):
            with pytest.raises(ValueError, match=r"^workspace: expected None or a Workspace\(\) of this module"):
                call()


def test_threads_with_a_workspace_each_match_a_serial_run() -> None:
    mod = module("truncate-2-clip-stacked", "loop")
    runs = [(5 + i % 3, 2 + i % 2, np.float64 if i % 2 else np.float32, False, i) for i in range(8)]
    want = [one_round(mod, None, *run) for run in runs]
    got: dict[int, list] = {}

    def worker(k: int) -> None:
        ws = mod.Workspace() if k else None   # thread 0 without a workspace
        got[k] = [one_round(mod, ws, *run) for run in runs for _ in range(3)][::3]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(3):
        for run, a, b in zip(runs, got[k], want):
            assert_bitwise(a, b, f"thread {k} {run}")
