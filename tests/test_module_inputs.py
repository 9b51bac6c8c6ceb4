"""Issue 12: the generated module refuses non-finite and mistyped inputs naming the argument,
checks BCE targets and params keys, and never returns an array that shares the cache."""
from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from derive import build, spec

GENERATED = Path(__file__).resolve().parents[1] / "generated"
STYLES = ("loop", "unrolled")


def _load(path: Path, key: str) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(f"_inputs_{key}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], ModuleType]:
    """Every preset in both styles, built from the templates as they are now."""
    out = {}
    folder = tmp_path_factory.mktemp("modules")
    for name, style in CASES:
        (path,) = build.build(spec.preset(name), folder / style / name, formats=["py"], style=style,
                              command="test")
        out[name, style] = _load(path, f"{name}_{style}")
    return out


def _inputs(mod: ModuleType, T: int | None = None, B: int = 2, seed: int = 0):
    T = T or mod.SPEC["bptt"]["steps"]   # the unrolled style takes its spec's T only
    rng = np.random.default_rng(seed)
    m, loss = mod.SPEC["model"], mod.SPEC["loss"]
    xs = rng.normal(size=(T, B, m["input_size"]))
    shape = (B,) if loss["at"] == "last_step" else (T, B)
    width = m["output_size"] or m["hidden_sizes"][-1]
    if loss["kind"] == "cross_entropy":
        targets = rng.integers(0, width, size=shape)
    else:
        targets = rng.uniform(0, 1, size=shape + (width,))
    h0 = [rng.normal(size=(B, h)) for h in m["hidden_sizes"]]
    if m["cell"] == "lstm":   # the state is (h, c) per layer
        h0 = [(h, rng.normal(size=h.shape)) for h in h0]
    return mod.init_params(seed=1), xs, targets, h0


def _poison_h0(h0: list, bad: float) -> tuple[str, list]:
    """h0 with one non-finite entry in the first layer's h, and the name the error gives."""
    if isinstance(h0[0], tuple):
        return "h0[0][0]", [(_poison(h0[0][0], bad), h0[0][1])] + h0[1:]
    return "h0[0]", [_poison(h0[0], bad)] + h0[1:]


CASES = [(name, style) for name in spec.preset_names() for style in STYLES
         if style == "loop" or spec.preset(name).model.cell == "elman"]   # gated cells: loop style only


def _poison(array: np.ndarray, value: float) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.flat[array.size // 2] = value
    return array


@pytest.mark.parametrize("name, style", CASES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_naming_the_argument(modules, name: str, style: str, bad: float) -> None:
    mod = modules[name, style]
    params, xs, targets, h0 = _inputs(mod)
    first = next(iter(mod.PARAMS))
    h0_name, h0_bad = _poison_h0(h0, bad)
    calls = {
        "xs": lambda: mod.loss_and_grads(params, _poison(xs, bad), targets, h0),
        f"params['{first}']": lambda: mod.loss_and_grads({**params, first: _poison(params[first], bad)}, xs, targets, h0),
        h0_name: lambda: mod.loss_and_grads(params, xs, targets, h0_bad),
        "forward xs": lambda: mod.forward(params, _poison(xs, bad)),
        "predict xs": lambda: mod.predict(params, _poison(xs, bad)),
        "dhs": lambda: mod.backward(_poison(mod.forward(params, xs)[0], bad), mod.forward(params, xs)[1]),
    }
    if mod.SPEC["loss"]["kind"] != "cross_entropy":
        calls["targets"] = lambda: mod.loss_and_grads(params, xs, _poison(targets, bad), h0)
    for what, call in calls.items():
        argument = re.escape(what.split()[-1])
        with pytest.raises(ValueError, match=rf"^{argument}: contains NaN or infinity "
                                             r"\(check_finite=False skips this check\)$"):
            call()


@pytest.mark.parametrize("name, style", CASES)
def test_check_finite_false_skips_the_scan(modules, name: str, style: str) -> None:
    mod = modules[name, style]
    params, xs, targets, h0 = _inputs(mod)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        loss, _ = mod.loss_and_grads(params, _poison(xs, np.nan), targets, h0, check_finite=False)
        hs, cache = mod.forward(params, _poison(xs, np.nan), check_finite=False)
        mod.backward(hs, cache, check_finite=False)
        mod.predict(params, _poison(xs, np.nan), check_finite=False)
    assert np.isnan(loss)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("value", [5.0, -3.0, 1.0 + 1e-9, -1e-12])
def test_bce_targets_must_lie_in_0_1(modules, style: str, value: float) -> None:
    mod = modules["many_to_one_bce", style]
    params, xs, targets, h0 = _inputs(mod)
    with pytest.raises(ValueError, match=r"^targets: bce targets must lie in \[0, 1\]$"):
        mod.loss_and_grads(params, xs, _poison(targets, value))
    for edge in (0.0, 1.0):
        loss, _ = mod.loss_and_grads(params, xs, np.full_like(targets, edge))
        assert np.isfinite(loss)


@pytest.mark.parametrize("name, style", CASES)
def test_an_extra_params_key_is_refused_by_name(modules, name: str, style: str) -> None:
    mod = modules[name, style]
    params, xs, targets, h0 = _inputs(mod)
    with pytest.raises(ValueError, match=r"^params: unknown key 'W_typo'; expected exactly " + ", ".join(mod.PARAMS)):
        mod.forward({**params, "W_typo": np.zeros(2)}, xs)
    with pytest.raises(ValueError, match=r"params: unknown key 'W_typo'"):
        mod.loss_and_grads({**params, "W_typo": np.zeros(2)}, xs, targets)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("call, match", [
    (lambda m, p, xs, t: m.forward(p, xs, h0=0), r"^h0: expected a list of 1 arrays of shapes \[\(2, 4\)\] or None, got int$"),
    (lambda m, p, xs, t: m.forward(p, xs, h0=np.zeros((2, 4))), r"^h0: expected a list of 1 arrays .* got ndarray$"),
    (lambda m, p, xs, t: m.forward(list(p.values()), xs), r"^params: expected a dict of arrays keyed W_xh, W_hh, b_h, W_hy, b_y \(see PARAMS\), got list$"),
    (lambda m, p, xs, t: m.forward(None, xs), r"^params: expected a dict of arrays .* got NoneType$"),
    (lambda m, p, xs, t: m.loss_and_grads(None, xs, t), r"^params: expected a dict"),
    (lambda m, p, xs, t: m.forward({**p, "W_hh": None}, xs), r"^params\['W_hh'\]: expected a real array of shape \(4, 4\), got object \(\)$"),
    (lambda m, p, xs, t: m.forward({**p, "W_hh": [[1, 2], [3]]}, xs), r"^params\['W_hh'\]: expected a real array of shape \(4, 4\), got a ragged"),
    (lambda m, p, xs, t: m.forward(p, [[[1, 2, 3]], [[1, 2]]]), r"^xs: expected a real array of shape \(\?, \?, 3\), got a ragged or non-numeric list$"),
    (lambda m, p, xs, t: m.forward(p, None), r"^xs: expected a real array of shape \(\?, \?, 3\), got object \(\)$"),
    (lambda m, p, xs, t: m.forward(p, "abc"), r"^xs: expected a real array"),
    (lambda m, p, xs, t: m.forward(p, xs, h0=[[[1.0] * 4, [2.0]]]), r"^h0\[0\]: expected a real array of shape \(2, 4\), got a ragged"),
    (lambda m, p, xs, t: m.backward(np.zeros((3, 2, 4)), {}), r"^cache: expected the cache returned by forward\(params, xs, h0\)$"),
    (lambda m, p, xs, t: m.backward(np.zeros((3, 2, 4)), None), r"^cache: expected the cache"),
    (lambda m, p, xs, t: m.backward(np.zeros((3, 2, 4)), {"xs": xs}), r"^cache: expected the cache"),
    (lambda m, p, xs, t: m.backward([[1.0], [1.0, 2.0]], m.forward(p, xs)[1]), r"^dhs: expected a real array of shape \(3, 2, 4\), got a ragged"),
    (lambda m, p, xs, t: m.loss_and_grads(p, xs, [[0, 1], [2]]), r"^targets: expected a real array of shape \(3, 2\), got a ragged"),
    (lambda m, p, xs, t: m.loss_and_grads(p, xs, None), r"^targets: expected integer class indices of shape \(3, 2\), got object \(\)$"),
])
def test_every_wrong_type_is_a_value_error_naming_the_argument(modules, style: str, call, match: str) -> None:
    mod = modules["elman_softmax", style]
    params, xs, targets, h0 = _inputs(mod)
    with pytest.raises(ValueError, match=match):
        call(mod, params, xs, targets)


def _arrays(value, copy: bool = False) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value.copy() if copy else value]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays(v, copy)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v, copy)]
    return []


@pytest.mark.parametrize("name, style", CASES)
def test_returned_arrays_never_alias_the_cache(modules, name: str, style: str) -> None:
    mod = modules[name, style]
    params, xs, targets, h0 = _inputs(mod)
    hs, cache = mod.forward(params, xs, h0)
    cached = _arrays(cache)
    assert not any(np.shares_memory(hs, c) for c in cached)
    dhs = np.random.default_rng(2).normal(size=hs.shape)
    before = mod.backward(dhs, cache)
    hs *= 0.5     # the user's arrays are theirs to change
    after = mod.backward(dhs, cache)
    for key in before:
        for a, b in zip(_arrays(before[key]), _arrays(after[key])):
            np.testing.assert_array_equal(a, b)
    for returned in (before, mod.predict(params, xs, h0), mod.loss_and_grads(params, xs, targets, h0)[1]):
        for array in _arrays(returned):
            assert not any(np.shares_memory(array, c) for c in cached)


@pytest.mark.parametrize("name, style", CASES)
def test_the_inputs_are_not_changed(modules, name: str, style: str) -> None:
    mod = modules[name, style]
    params, xs, targets, h0 = _inputs(mod)
    copies = [{k: v.copy() for k, v in params.items()}, xs.copy(), targets.copy(), _arrays(h0, copy=True)]
    hs, cache = mod.forward(params, xs, h0)
    dhs = np.ones_like(hs)
    mod.backward(dhs, cache)
    mod.loss_and_grads(params, xs, targets, h0)
    for k in params:
        np.testing.assert_array_equal(params[k], copies[0][k])
    np.testing.assert_array_equal(xs, copies[1])
    np.testing.assert_array_equal(targets, copies[2])
    for h, c in zip(_arrays(h0), copies[3]):
        np.testing.assert_array_equal(h, c)
    np.testing.assert_array_equal(dhs, np.ones_like(hs))


def test_the_module_documents_check_finite() -> None:
    text = (GENERATED / "elman_softmax" / "elman_softmax.py").read_text()
    assert "check_finite=True" in text.split('"""')[1] and "check_finite=False" in text.split('"""')[1]
