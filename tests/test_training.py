"""The training-loop additions (issue 13, CONTRACT §2 and §3 "Additions for training loops"),
each tested against its definition:

- chunked truncation equals a loop over chunks that carries h_final into the next chunk's
  h0, with the gradients summed (the module run chunk by chunk, and the independent
  autograd reference); window truncation is unchanged;
- clip_norm is torch's clip_grad_norm_ (its 1e-6 included); clip / clip_norm keywords;
- return_state, integer token inputs (= their one-hot rows, gathered), step, to_torch /
  from_torch (with torch.nn.RNN + nn.Linear when torch is installed), "gate" in PARAMS.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference_autograd import reference_backward, reference_loss_and_grads  # noqa: E402

from derive import bptt, build, check  # noqa: E402
from derive import spec as specs  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-10)
_BUILT: dict[tuple, ModuleType] = {}


def variant(preset: str, **bptt_fields) -> specs.Spec:
    s = specs.preset(preset)
    return dataclasses.replace(s, bptt=dataclasses.replace(s.bptt, **bptt_fields))


def module(s: specs.Spec, style: str = "loop") -> ModuleType:
    """The generated module of a spec, built into a scratch folder and imported (once)."""
    key = (repr(s), style)
    if key not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="derive-train-"))
        build.build(s, out, formats=["py"], style=style, command="pytest")
        path = out / f"{s.name}.py"
        spec = importlib.util.spec_from_file_location(f"_train_{len(_BUILT)}_{s.name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _BUILT[key] = mod
    return _BUILT[key]


def problem(mod: ModuleType, T: int, B: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    m = mod.SPEC["model"]
    params = {n: rng.normal(scale=0.7, size=info["shape"]) for n, info in mod.PARAMS.items()}
    xs = rng.normal(size=(T, B, m["input_size"]))
    h0 = [0.5 * rng.normal(size=(B, H)) for H in m["hidden_sizes"]]
    out = m["output_size"] or m["hidden_sizes"][-1]
    loss = mod.SPEC["loss"]
    lead = (T, B) if loss["at"] == "every_step" else (B,)
    if loss["kind"] == "cross_entropy":
        targets = rng.integers(0, out, size=lead)
    elif loss["kind"] == "bce":
        targets = rng.uniform(0.05, 0.95, size=lead + (out,))
    else:
        targets = rng.normal(size=lead + (out,))
    return params, xs, h0, targets


# chunk specs: single layer (column), stacked (row), many-to-one (row, no bias), at T = steps
CHUNKED = [variant("chunked_elman"), variant("stacked_mse", steps=5, truncate=2, truncate_style="chunk"),
           variant("elman_softmax", steps=6, truncate=3, truncate_style="chunk", clip=0.0),
           variant("uwv_softmax", steps=4, truncate=3, truncate_style="chunk")]
IDS = [f"{s.name}-T{s.bptt.steps}-k{s.bptt.truncate}" for s in CHUNKED]


def chunks(T: int, k: int) -> list[slice]:
    return [slice(a, min(a + k, T)) for a in range(0, T, k)]


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("s", CHUNKED, ids=IDS)
def test_chunk_equals_a_loop_over_chunks(s: specs.Spec, style: str) -> None:
    """The definition: run the module on each chunk from the last chunk's h_final, sum."""
    mod = module(s, style)
    T, k = s.bptt.steps, s.bptt.truncate
    params, xs, h0, targets = problem(mod, T)
    loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0, return_state=True, clip_norm=0)
    # chunk by chunk with the untruncated module of the same model (each chunk is shorter than k + 1)
    loop_mod = module(dataclasses.replace(s, bptt=dataclasses.replace(s.bptt, truncate=0)), "loop")
    h, total, summed, dxs = h0, 0.0, {n: 0.0 for n in mod.PARAMS}, []
    for i, part in enumerate(chunks(T, k)):
        l, g, h = loop_mod.loss_and_grads(params, xs[part], targets[part], h, return_state=True, clip_norm=0)
        total += l
        summed = {n: summed[n] + g[n] for n in mod.PARAMS}
        dxs.append(g["xs"])
        if i == 0:
            dh0 = g["h0"]
    np.testing.assert_allclose(loss, total, **TOL)
    for n in mod.PARAMS:
        np.testing.assert_allclose(grads[n], summed[n], err_msg=n, **TOL)
    np.testing.assert_allclose(grads["xs"], np.concatenate(dxs), **TOL)
    for a, b in zip(grads["h0"], dh0):
        np.testing.assert_allclose(a, b, **TOL)
    for a, b in zip(h_final, h):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("T", [5, 7])
def test_chunk_loop_module_at_other_lengths(T: int) -> None:
    """The loop module's chunks follow the run-time T, also when T is not a multiple of k."""
    s = variant("chunked_elman")
    mod, plain = module(s), module(variant("chunked_elman", truncate=0))
    params, xs, h0, targets = problem(mod, T, seed=T)
    _, grads = mod.loss_and_grads(params, xs, targets, h0, clip_norm=0)
    h, summed = h0, {n: 0.0 for n in mod.PARAMS}
    for part in chunks(T, 2):
        _, g, h = plain.loss_and_grads(params, xs[part], targets[part], h, return_state=True, clip_norm=0)
        summed = {n: summed[n] + g[n] for n in mod.PARAMS}
    for n in mod.PARAMS:
        np.testing.assert_allclose(grads[n], summed[n], err_msg=n, **TOL)


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("s", CHUNKED, ids=IDS)
def test_chunk_matches_autograd_reference(s: specs.Spec, style: str) -> None:
    mod = module(s, style)
    params, xs, h0, targets = problem(mod, s.bptt.steps, seed=1)
    loss, grads = mod.loss_and_grads(params, xs, targets, h0)
    want_loss, want = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, h0)
    np.testing.assert_allclose(loss, want_loss, **TOL)
    for n in [*mod.PARAMS, "xs"]:
        np.testing.assert_allclose(grads[n], want[n], err_msg=n, **TOL)
    dhs = np.random.default_rng(2).normal(size=xs.shape[:2] + (s.model.hidden_sizes[-1],))
    got, want = mod.backward(dhs, mod.forward(params, xs, h0)[1]), reference_backward(mod.SPEC, mod.PARAMS, params, xs, h0, dhs)
    for n in [*mod.PARAMS, "xs"]:
        np.testing.assert_allclose(got[n], want[n], err_msg=n, **TOL)
    for a, b in zip(got["h0"], want["h0"]):
        np.testing.assert_allclose(a, b, **TOL)


def test_chunk_differs_from_window_and_full() -> None:
    """The styles are different gradients (else the tests above could not tell them apart)."""
    grads = {}
    for style, k in (("chunk", 2), ("window", 2), ("window", 0)):
        mod = module(variant("chunked_elman", truncate=k, truncate_style=style, clip_norm=0.0))
        params, xs, h0, targets = problem(mod, 5)
        grads[style, k] = mod.loss_and_grads(params, xs, targets, h0)[1]["W_hh"]
    assert not np.allclose(grads["chunk", 2], grads["window", 2])
    assert not np.allclose(grads["chunk", 2], grads["window", 0])


def test_kept_steps_band_and_blocks() -> None:
    window, chunk = variant("chunked_elman", truncate_style="window"), variant("chunked_elman")
    assert [list(bptt.kept_steps(window, s)) for s in range(1, 6)] == [[1], [1, 2], [2, 3], [3, 4], [4, 5]]
    assert [list(bptt.kept_steps(chunk, s)) for s in range(1, 6)] == [[1], [1, 2], [3], [3, 4], [5]]
    assert list(bptt.kept_steps(variant("chunked_elman", truncate=0), 4)) == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse"])
def test_check_proves_chunk(name: str) -> None:
    """derive check's forms (a), (b) and central differences agree for the chunk style."""
    s = variant(name, steps=5, truncate=2, truncate_style="chunk", clip=0.0, clip_norm=0.0)
    rows = check.numeric(s)
    assert all(r.ok for r in rows), rows


def test_check_proves_chunk_exactly() -> None:
    rows = check.exact(variant("chunked_elman", steps=3))
    assert all(r.ok for r in rows), rows


# --------------------------------------------------------------------------- clipping


def test_clip_norm_is_torch_formula() -> None:
    mod = module(variant("chunked_elman", clip_norm=0.5))
    params, xs, h0, targets = problem(mod, 5)
    _, raw = mod.loss_and_grads(params, xs, targets, h0, clip_norm=0)
    _, got = mod.loss_and_grads(params, xs, targets, h0)
    norm = np.sqrt(sum(np.sum(raw[n] ** 2) for n in mod.PARAMS))
    assert norm > 0.5
    for n in mod.PARAMS:
        np.testing.assert_allclose(got[n], raw[n] * 0.5 / (norm + 1e-6), rtol=1e-13, atol=0)
    # direction kept, norm n (up to the 1e-6)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(got[n] ** 2) for n in mod.PARAMS)), 0.5 * norm / (norm + 1e-6), rtol=1e-13)
    # below the threshold nothing changes
    _, same = mod.loss_and_grads(params, xs, targets, h0, clip_norm=10 * norm)
    for n in mod.PARAMS:
        np.testing.assert_array_equal(same[n], raw[n])
    # h0 and xs are never clipped
    np.testing.assert_array_equal(got["xs"], raw["xs"])
    np.testing.assert_array_equal(got["h0"][0], raw["h0"][0])


@pytest.mark.parametrize("style", ["loop", "unrolled"])
def test_clip_keywords_override_the_spec(style: str) -> None:
    mod = module(variant("truncated_elman"), style)   # spec: clip = 5
    params, xs, h0, targets = problem(mod, 3)
    params = {n: 4 * v for n, v in params.items()}
    for clip, clip_norm in ((None, None), (0, None), (0.3, None), (0, 0.7), (0.0, 0.0)):
        _, got = mod.loss_and_grads(params, xs, targets, h0, clip=clip, clip_norm=clip_norm)
        _, want = reference_loss_and_grads(mod.SPEC, mod.PARAMS, params, xs, targets, h0, clip=clip, clip_norm=clip_norm)
        for n in [*mod.PARAMS, "xs"]:
            np.testing.assert_allclose(got[n], want[n], err_msg=f"{n} clip={clip} clip_norm={clip_norm}", **TOL)
    _, raw = mod.loss_and_grads(params, xs, targets, h0, clip=0)
    _, small = mod.loss_and_grads(params, xs, targets, h0, clip=1e-3)
    assert max(np.abs(small[n]).max() for n in mod.PARAMS) <= 1e-3
    np.testing.assert_array_equal(small["xs"], raw["xs"])      # never the data gradients
    np.testing.assert_array_equal(small["h0"][0], raw["h0"][0])
    cache = mod.forward(params, xs, h0)[1]
    dhs = np.ones(xs.shape[:2] + (4,))
    got = mod.backward(dhs, cache, clip=0, clip_norm=0.1)
    want = reference_backward(mod.SPEC, mod.PARAMS, params, xs, h0, dhs, clip=0, clip_norm=0.1)
    for n in [*mod.PARAMS, "xs"]:
        np.testing.assert_allclose(got[n], want[n], err_msg=n, **TOL)


def test_clip_and_clip_norm_together_raise() -> None:
    mod = module(variant("truncated_elman"))   # spec: clip = 5
    params, xs, h0, targets = problem(mod, 3)
    with pytest.raises(ValueError, match="clip"):
        mod.loss_and_grads(params, xs, targets, h0, clip_norm=1.0)   # the spec's clip stays
    with pytest.raises(ValueError, match="clip"):
        mod.backward(np.ones((3, 3, 4)), mod.forward(params, xs)[1], clip=1, clip_norm=1)
    with pytest.raises(ValueError, match="clip_norm"):
        mod.loss_and_grads(params, xs, targets, h0, clip=0, clip_norm=-1.0)
    mod.loss_and_grads(params, xs, targets, h0, clip=0, clip_norm=1.0)   # fine once clip is off


def test_spec_rejects_clip_and_clip_norm(tmp_path: Path) -> None:
    with pytest.raises(specs.SpecError, match="at most one"):
        variant("truncated_elman", clip_norm=1.0)
    with pytest.raises(specs.SpecError, match="truncate_style"):
        variant("truncated_elman", truncate_style="chunks")


# --------------------------------------------------------------------------- module API


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse", "many_to_one_bce", "elman_softmax"])
def test_return_state_is_h_final(name: str, style: str) -> None:
    mod = module(specs.preset(name), style)
    params, xs, h0, targets = problem(mod, specs.preset(name).bptt.steps)
    loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0, return_state=True)
    loss2, grads2 = mod.loss_and_grads(params, xs, targets, h0)
    assert loss == loss2
    want = mod.forward(params, xs, h0)[1]["h_final"]
    assert isinstance(h_final, list) and len(h_final) == len(want)
    for a, b in zip(h_final, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse", "many_to_one_bce", "truncated_elman"])
def test_token_inputs_equal_one_hot_rows(name: str, style: str) -> None:
    s = specs.preset(name)
    mod = module(s, style)
    params, _, h0, targets = problem(mod, s.bptt.steps)
    V = s.model.input_size
    tokens = np.random.default_rng(5).integers(0, V, size=(s.bptt.steps, 3))
    onehot = np.eye(V)[tokens]
    l1, g1, s1 = mod.loss_and_grads(params, tokens, targets, h0, return_state=True)
    l2, g2, s2 = mod.loss_and_grads(params, onehot, targets, h0, return_state=True)
    np.testing.assert_allclose(l1, l2, **TOL)
    for n in mod.PARAMS:
        np.testing.assert_allclose(g1[n], g2[n], err_msg=n, **TOL)
    assert g1["xs"] is None and g2["xs"] is not None
    for a, b in zip(g1["h0"] + s1, g2["h0"] + s2):
        np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(mod.predict(params, tokens, h0), mod.predict(params, onehot, h0), **TOL)
    dhs = np.random.default_rng(6).normal(size=tokens.shape + (s.model.hidden_sizes[-1],))
    b1 = mod.backward(dhs, mod.forward(params, tokens, h0)[1])
    b2 = mod.backward(dhs, mod.forward(params, onehot, h0)[1])
    for n in mod.PARAMS:
        np.testing.assert_allclose(b1[n], b2[n], err_msg=n, **TOL)
    assert b1["xs"] is None
    with pytest.raises(ValueError, match=r"xs: token indices must be in \[0, "):
        mod.predict(params, tokens + V, h0)


def test_tokens_are_gathered_not_multiplied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop module never multiplies one-hot rows: no matrix product reads the inputs."""
    s = specs.preset("chunked_elman")
    mod = module(s)
    params, _, h0, targets = problem(mod, 5)
    tokens = np.random.default_rng(0).integers(0, 3, size=(5, 3))
    seen = []
    for helper in [h for h in ("_matmul_steps", "_contract_steps", "_one_hot") if hasattr(mod, h)]:   # issue 15: no _one_hot
        original = getattr(mod, helper)

        def spy(*args, _original=original, _name=helper, **kwargs):
            seen.append((_name, [a is tokens for a in args]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(mod, helper, spy)
    mod.loss_and_grads(params, tokens, targets, h0)
    assert seen and not [name for name, reads in seen if any(reads)], seen


def test_token_inputs_keep_float32() -> None:
    mod = module(specs.preset("chunked_elman"))
    params, _, _, targets = problem(mod, 5)
    params = {n: v.astype(np.float32) for n, v in params.items()}
    tokens = np.zeros((5, 3), dtype=np.int64)
    loss, grads = mod.loss_and_grads(params, tokens, targets)
    assert grads["W_xh"].dtype == np.float32 and mod.predict(params, tokens).dtype == np.float32


@pytest.mark.parametrize("style", ["loop", "unrolled"])
@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse", "many_to_one_bce"])
def test_step_is_one_step_of_predict(name: str, style: str) -> None:
    s = specs.preset(name)
    mod = module(s, style)
    params, xs, h0, _ = problem(mod, s.bptt.steps)
    ys = mod.predict(params, xs, h0)
    states = mod.forward(params, xs, h0)[1]
    h = h0
    for t in range(s.bptt.steps):
        y, h = mod.step(params, xs[t], h)
        if t == 0:
            assert y.shape == ys.shape[1:]
        np.testing.assert_allclose(y, mod.predict(params, xs[t:t + 1], h0 if t == 0 else prev)[0], **TOL) \
            if style == "loop" else None
        np.testing.assert_allclose(y, ys[t], **TOL)
        prev = h
    for a, b in zip(h, states["h_final"]):
        np.testing.assert_allclose(a, b, **TOL)
    # token indices and h=None
    V = s.model.input_size
    index = np.array([0, V - 1, 1]) % V
    y1, h1 = mod.step(params, index)
    y2, h2 = mod.step(params, np.eye(V)[index])
    np.testing.assert_allclose(y1, y2, **TOL)


def test_params_carry_gate_none() -> None:
    for name in specs.preset_names():
        s = specs.preset(name)
        mod = module(s)
        gates = {"elman": {None}, "lstm": set("ifgo"), "gru": set("rzn")}[s.model.cell]
        assert all("gate" in info for info in mod.PARAMS.values())
        assert {info["gate"] for info in mod.PARAMS.values() if info["layer"] <= s.model.layers} == gates
        assert all(info["gate"] is None for info in mod.PARAMS.values() if info["layer"] > s.model.layers)


@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse", "uwv_softmax", "many_to_one_bce"])
def test_to_torch_from_torch_round_trip(name: str) -> None:
    s = specs.preset(name)
    mod = module(s)
    params = problem(mod, 3)[0]
    sd = mod.to_torch(params)
    L = s.model.layers
    keys = [f"{w}_l{k}" for k in range(L) for w in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if s.model.bias else ())]
    keys += (["out.weight"] + (["out.bias"] if s.model.bias else [])) if s.model.output_size else []
    assert list(sd) == keys
    for k in range(L) if s.model.bias else ():
        assert not sd[f"bias_hh_l{k}"].any()
    back = mod.from_torch(sd)
    for n in mod.PARAMS:
        np.testing.assert_array_equal(back[n], params[n])
    if s.model.bias:   # from_torch adds bias_hh into the bias
        sd["bias_hh_l0"] = np.ones_like(sd["bias_hh_l0"])
        first_bias = next(n for n, i in mod.PARAMS.items() if i["role"] == "bias")
        np.testing.assert_allclose(mod.from_torch(sd)[first_bias], params[first_bias] + 1)
    del sd["weight_hh_l0"]
    with pytest.raises(ValueError, match="weight_hh_l0"):
        mod.from_torch(sd)
    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"numpy"}   # no torch import anywhere in the module


def row_layout() -> specs.Spec:
    """elman_softmax in document 000's row layout (x @ W): torch's weights are the transposes."""
    s = specs.preset("elman_softmax")
    return dataclasses.replace(s, name="elman_row", notation=dataclasses.replace(s.notation, preset="doc000", layout="row"))


@pytest.mark.parametrize("name", ["chunked_elman", "stacked_mse", "many_to_one_bce", "row"])
def test_torch_rnn_agrees(name: str) -> None:
    torch = pytest.importorskip("torch")
    s = row_layout() if name == "row" else specs.preset(name)
    assert name != "row" or s.layout == "row"
    mod = module(s)
    torch.manual_seed(0)
    rnn = torch.nn.RNN(s.model.input_size, s.model.hidden_sizes[0], num_layers=s.model.layers,
                       nonlinearity=s.model.activation, bias=s.model.bias).double()
    if len(set(s.model.hidden_sizes)) > 1:
        pytest.skip("torch.nn.RNN needs equal hidden sizes")
    out = torch.nn.Linear(s.model.hidden_sizes[-1], s.model.output_size, bias=s.model.bias).double()
    sd = {**rnn.state_dict(), **{f"out.{k}": v for k, v in out.state_dict().items()}}
    params = mod.from_torch(sd)
    xs = np.random.default_rng(0).normal(size=(4, 2, s.model.input_size))
    with torch.no_grad():
        hs, _ = rnn(torch.from_numpy(xs))
        z = out(hs).numpy()
    act = {"softmax": lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True), "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
           "identity": lambda z: z}[s.model.output_activation]
    np.testing.assert_allclose(mod.predict(params, xs), act(z), **TOL)
    # and back: a fresh torch model loaded from to_torch gives the same outputs
    rnn2 = torch.nn.RNN(s.model.input_size, s.model.hidden_sizes[0], num_layers=s.model.layers,
                        nonlinearity=s.model.activation, bias=s.model.bias).double()
    sd2 = mod.to_torch(params)
    rnn2.load_state_dict({k: torch.from_numpy(v) for k, v in sd2.items() if not k.startswith("out.")})
    with torch.no_grad():
        np.testing.assert_allclose(rnn2(torch.from_numpy(xs))[0].numpy(), hs.numpy(), **TOL)


def test_torch_gradients_agree_chunked() -> None:
    """The example's training step against torch: token inputs, chunks with detach, summed gradients."""
    torch = pytest.importorskip("torch")
    s = specs.preset("chunked_elman")
    mod = module(s)
    params, _, _, _ = problem(mod, 5)
    rng = np.random.default_rng(3)
    tokens, targets = rng.integers(0, 3, size=(7, 2)), rng.integers(0, 3, size=(7, 2))
    _, grads = mod.loss_and_grads(params, tokens, targets, clip_norm=0)
    rnn = torch.nn.RNN(3, 4, bias=True).double()
    out = torch.nn.Linear(4, 3).double()
    sd = {k: torch.from_numpy(v) for k, v in mod.to_torch(params).items()}
    rnn.load_state_dict({k: v for k, v in sd.items() if not k.startswith("out.")})
    out.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("out.")})
    x = torch.nn.functional.one_hot(torch.from_numpy(tokens), 3).double()
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    for part in chunks(7, 2):
        hs, h = rnn(x[part], h.detach())
        loss = torch.nn.functional.cross_entropy(out(hs).reshape(-1, 3), torch.from_numpy(targets[part]).reshape(-1),
                                                 reduction="sum")
        loss.backward()
    # (no clip_grad_norm_ here: torch's split biases would count the bias gradient twice)
    got = mod.to_torch(grads)
    got["bias_hh_l0"] = got["bias_ih_l0"]   # the bias gradient reaches both torch biases
    named = {**dict(rnn.named_parameters()), **{f"out.{k}": v for k, v in out.named_parameters()}}
    for k, p in named.items():
        np.testing.assert_allclose(got[k], p.grad.numpy(), err_msg=k, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bptt, key", [('truncate = 2\ntruncate_style = "chunks"', "bptt.truncate_style"),
                                       ("clip = 1.0\nclip_norm = 1.0", "bptt.clip_norm"),
                                       ("clip_norm = -1.0", "bptt.clip_norm"),
                                       ('clip_norm = "1"', "bptt.clip_norm")])
def test_cli_rejects_bad_training_keys(tmp_path: Path, capsys: pytest.CaptureFixture, bptt: str, key: str) -> None:
    from derive.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n[model]\ninput_size = 2\nhidden_sizes = [2]\n[bptt]\n{bptt}\n', encoding="utf-8")
    assert main(["build", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("derive: error: ") and key in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, rows", [
    ("chunked_elman", ["x....", "xx...", "..x..", "..xx.", "....x"]),   # blocks of k = 2
    ("truncated_elman", ["x..", "xx.", ".xx"]),                         # a band of width k = 2
])
def test_handout_shows_the_kept_pairs(name: str, rows: list[str], tmp_path: Path) -> None:
    build.build(specs.preset(name), tmp_path, formats=["md"], command="pytest")
    text = (tmp_path / f"{name}.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| $") and ("bullet" in line or "cdot" in line)]
    got = ["".join("x" if "bullet" in cell else "." for cell in line.strip("|").split("|")[1:]) for line in table]
    assert got == rows
    kind = "chunked truncation" if name == "chunked_elman" else "truncated BPTT"
    assert kind in text and "keeps its direction" in text   # both clip: the direction sentence


def test_derive_check_module_rows_with_chunk_and_clip_norm() -> None:
    """derive check's module rows: the module (chunked, clipped by norm) against (a) and FD."""
    rows = check.module_rows(specs.preset("chunked_elman"))
    assert len(rows) == 5 and all(r.ok for r in rows), rows


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from([1, 2, 3, 5]), T=st.integers(1, 13), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       name=st.sampled_from(["chunked_elman", "stacked_mse"]))
def test_chunk_is_a_loop_over_chunks_at_any_length(k: int, T: int, B: int, seed: int, name: str) -> None:
    """Any run-time T, any chunk length: one call equals the loop over chunks (loop style)."""
    s = variant(name, steps=5, truncate=k, truncate_style="chunk", clip_norm=0.0, clip=0.0)
    mod, plain = module(s), module(variant(name, steps=5, truncate=0, clip_norm=0.0, clip=0.0))
    params, xs, h0, targets = problem(mod, T, B, seed)
    loss, grads, h_final = mod.loss_and_grads(params, xs, targets, h0, return_state=True)
    h, total, summed = h0, 0.0, {n: 0.0 for n in mod.PARAMS}
    for part in chunks(T, k):
        l, g, h = plain.loss_and_grads(params, xs[part], targets[part], h, return_state=True)
        total += l
        summed = {n: summed[n] + g[n] for n in mod.PARAMS}
    np.testing.assert_allclose(loss, total, **TOL)
    for n in mod.PARAMS:
        np.testing.assert_allclose(grads[n], summed[n], err_msg=n, **TOL)
    for a, b in zip(h_final, h):
        np.testing.assert_allclose(a, b, **TOL)
