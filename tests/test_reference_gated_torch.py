"""The gated cells of the autograd reference (tests/reference_autograd.py), proven before the
generated LSTM/GRU modules are compared with it (tests/test_gated.py).

Why: test_gated.py trusts the reference to 1e-10; a mistake in its LSTM or GRU would hide a
generator bug or fail correct code.  Here the reference's gated cells, written from CONTRACT
§4 only, are checked three ways:

- against ``torch.nn.LSTM`` / ``torch.nn.GRU`` (float64; weights copied gate by gate in
  PyTorch's order, both biases drawn by torch and added as ``from_torch`` does): forward to
  1e-12, and loss, parameter, input and initial-state gradients from torch's autograd to
  1e-10, stacked (one ``num_layers = 2`` module, and chained modules for unequal sizes),
  both layouts, bias on and off, every loss and ``at``, window truncation (each loss term
  replayed from detached states) and chunk truncation (PyTorch's ``detach`` loop), clip and
  clip_norm applied by their definitions.  Skipped without torch, never failed by its absence.
- against central finite differences of its own loss (every cell, the GRU's reset before too,
  which torch does not implement);
- its forward math against a second, naive per-row matrix-vector implementation.

The helpers here (``gated_spec``, ``gated_meta``, ``torch_loss_and_grads``, ...) are reused by
tests/test_gated.py.  Parameter names are arbitrary on purpose (and listed out of PARAMS
order in one test): the reference must find each by (role, layer, gate).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_autograd import (  # noqa: E402
    reference_backward,
    reference_cell_states,
    reference_final_state,
    reference_forward,
    reference_loss,
    reference_loss_and_grads,
)

GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
B = 2


# --------------------------------------------------------------------------- specs and data


def gated_spec(
    cell: str,
    *,
    gru_reset: str = "after",
    input_size: int = 3,
    hidden_sizes: Sequence[int] = (4,),
    output_size: int = 2,
    output_activation: str = "identity",
    bias: bool = True,
    kind: str = "mse",
    at: str = "every_step",
    reduction: str = "sum",
    steps: int = 3,
    truncate: int = 0,
    truncate_style: str = "window",
    clip: float = 0.0,
    clip_norm: float = 0.0,
    layout: str = "column",
) -> dict[str, Any]:
    """A SPEC dict (the module's ``SPEC`` shape) for a gated cell."""
    model = {"cell": cell, "input_size": input_size, "hidden_sizes": list(hidden_sizes),
             "output_size": output_size, "activation": "tanh", "output_activation": output_activation,
             "bias": bias}
    if cell == "gru":
        model["gru_reset"] = gru_reset
    return {
        "name": f"{cell}_case",
        "title": "",
        "model": model,
        "loss": {"kind": kind, "at": at, "reduction": reduction},
        "bptt": {"steps": steps, "truncate": truncate, "truncate_style": truncate_style,
                 "clip": clip, "clip_norm": clip_norm},
        "notation": {"preset": "pytorch", "layout": layout, "names": {}},
    }


def has_recurrent_bias(spec: Mapping[str, Any]) -> bool:
    m = spec["model"]
    return m["cell"] == "gru" and m.get("gru_reset", "after") == "after" and m["bias"]


def gated_meta(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """PARAMS as CONTRACT §4 orders and shapes them, under arbitrary names (Wi1, Ui1, bi1, cn1, ...)."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    meta: dict[str, dict[str, Any]] = {}
    prev = m["input_size"]
    for l, H in enumerate(m["hidden_sizes"], start=1):
        for g in GATES[m["cell"]]:
            meta[f"W{g}{l}"] = {"role": "input_weight", "layer": l, "gate": g,
                                "shape": (prev, H) if row else (H, prev)}
            meta[f"U{g}{l}"] = {"role": "recurrent_weight", "layer": l, "gate": g, "shape": (H, H)}
            if m["bias"]:
                meta[f"b{g}{l}"] = {"role": "bias", "layer": l, "gate": g, "shape": (H,)}
            if g == "n" and has_recurrent_bias(spec):
                meta[f"c{g}{l}"] = {"role": "recurrent_bias", "layer": l, "gate": g, "shape": (H,)}
        prev = H
    L, O = len(m["hidden_sizes"]), m["output_size"]
    if O > 0:
        meta["Vout"] = {"role": "output_weight", "layer": L + 1, "gate": None,
                        "shape": (prev, O) if row else (O, prev)}
        if m["bias"]:
            meta["cout"] = {"role": "output_bias", "layer": L + 1, "gate": None, "shape": (O,)}
    return meta


def draw_targets(spec: Mapping[str, Any], rng: np.random.Generator, T: int, batch: int) -> np.ndarray:
    """Targets per loss kind and ``at``: class indices, probabilities or floats."""
    m = spec["model"]
    out = m["output_size"] or m["hidden_sizes"][-1]
    lead = (T, batch) if spec["loss"]["at"] == "every_step" else (batch,)
    kind = spec["loss"]["kind"]
    if kind == "cross_entropy":
        return rng.integers(0, out, size=lead)
    if kind == "bce":
        return rng.uniform(0.05, 0.95, size=lead + (out,))
    return rng.standard_normal(lead + (out,))


def draw_h0(spec: Mapping[str, Any], rng: np.random.Generator, batch: int) -> list[Any]:
    """Nonzero initial states: (h, c) tuples for the LSTM, arrays for the GRU."""
    hs = spec["model"]["hidden_sizes"]
    if spec["model"]["cell"] == "lstm":
        return [(0.5 * rng.standard_normal((batch, H)), 0.5 * rng.standard_normal((batch, H))) for H in hs]
    return [0.5 * rng.standard_normal((batch, H)) for H in hs]


def make_problem(spec: Mapping[str, Any], seed: int = 0, batch: int = B, scale: float = 0.5) -> tuple:
    """(meta, params, xs, h0, targets), params N(0, scale^2) with nonzero biases."""
    rng = np.random.default_rng(seed)
    meta = gated_meta(spec)
    params = {n: scale * rng.standard_normal(v["shape"]) for n, v in meta.items()}
    T = spec["bptt"]["steps"]
    xs = rng.standard_normal((T, batch, spec["model"]["input_size"]))
    return meta, params, xs, draw_h0(spec, rng, batch), draw_targets(spec, rng, T, batch)


# --------------------------------------------------------------------------- the torch side


def to_torch_state(spec: Mapping[str, Any], meta: Mapping[str, Mapping[str, Any]],
                   params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The CONTRACT §3 ``to_torch`` written independently: gate blocks stacked in PyTorch's
    order, each bias in ``bias_ih`` and zeros in ``bias_hh`` (the GRU n gate's recurrent bias
    in the n block of ``bias_hh``), row-layout weights transposed."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    by = {(v["layer"], v["role"], v.get("gate")): n for n, v in meta.items()}
    tr = (lambda a: np.asarray(a).T) if row else np.asarray
    sd: dict[str, np.ndarray] = {}
    for l, H in enumerate(m["hidden_sizes"], start=1):
        gates = GATES[m["cell"]]
        sd[f"weight_ih_l{l - 1}"] = np.concatenate([tr(params[by[(l, "input_weight", g)]]) for g in gates])
        sd[f"weight_hh_l{l - 1}"] = np.concatenate([tr(params[by[(l, "recurrent_weight", g)]]) for g in gates])
        if m["bias"]:
            sd[f"bias_ih_l{l - 1}"] = np.concatenate([np.asarray(params[by[(l, "bias", g)]]) for g in gates])
            sd[f"bias_hh_l{l - 1}"] = np.concatenate(
                [np.asarray(params[by[(l, "recurrent_bias", g)]]) if (l, "recurrent_bias", g) in by
                 else np.zeros(H) for g in gates])
    L = len(m["hidden_sizes"])
    if m["output_size"]:
        sd["out.weight"] = tr(params[by[(L + 1, "output_weight", None)]])
        if m["bias"]:
            sd["out.bias"] = np.asarray(params[by[(L + 1, "output_bias", None)]])
    return sd


def from_torch_state(spec: Mapping[str, Any], meta: Mapping[str, Mapping[str, Any]],
                     sd: Mapping[str, Any], *, add_biases: bool = True) -> dict[str, np.ndarray]:
    """The inverse: each gate's bias is bias_ih + bias_hh (the GRU n gate with reset after keeps
    bias_hh apart as its recurrent bias).  ``add_biases=False`` reads gradients: a gate's bias
    gradient is then the ``bias_ih`` block alone (torch gives both blocks the same gradient)."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    tr = (lambda a: np.asarray(a).T) if row else np.asarray
    sizes = m["hidden_sizes"]
    gates = GATES[m["cell"]]
    out: dict[str, np.ndarray] = {}
    for name, v in meta.items():
        l, role, g = v["layer"], v["role"], v.get("gate")
        if role in ("output_weight", "output_bias"):
            out[name] = tr(sd["out.weight"]) if role == "output_weight" else np.asarray(sd["out.bias"])
            continue
        H, k = sizes[l - 1], gates.index(g)
        block = slice(k * H, (k + 1) * H)
        if role == "input_weight":
            out[name] = tr(np.asarray(sd[f"weight_ih_l{l - 1}"])[block])
        elif role == "recurrent_weight":
            out[name] = tr(np.asarray(sd[f"weight_hh_l{l - 1}"])[block])
        elif role == "recurrent_bias":
            out[name] = np.asarray(sd[f"bias_hh_l{l - 1}"])[block]
        elif role == "bias":
            b = np.asarray(sd[f"bias_ih_l{l - 1}"])[block]
            if add_biases and not (g == "n" and has_recurrent_bias(spec)):
                b = b + np.asarray(sd[f"bias_hh_l{l - 1}"])[block]
            out[name] = b
        else:
            raise AssertionError(role)
    return {n: out[n] for n in meta}


def torch_problem(spec: Mapping[str, Any], seed: int = 0, batch: int = B, gain: float = 2.0) -> tuple:
    """(meta, params, xs, h0, targets) with params drawn by torch's own initialisation (times
    ``gain``, so that gates saturate unevenly), both biases nonzero, read through from_torch."""
    import torch

    torch.manual_seed(seed)
    m = spec["model"]
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[m["cell"]]
    sd: dict[str, np.ndarray] = {}
    prev = m["input_size"]
    for l, H in enumerate(m["hidden_sizes"]):
        layer = cls(prev, H, bias=m["bias"]).double()
        for k, v in layer.state_dict().items():
            sd[k.replace("_l0", f"_l{l}")] = gain * v.numpy()
        prev = H
    if m["output_size"]:
        out = torch.nn.Linear(prev, m["output_size"], bias=m["bias"]).double()
        sd.update({f"out.{k}": gain * v.numpy() for k, v in out.state_dict().items()})
    meta = gated_meta(spec)
    params = from_torch_state(spec, meta, sd)
    rng = np.random.default_rng(seed + 100)
    T = spec["bptt"]["steps"]
    xs = rng.standard_normal((T, batch, m["input_size"]))
    return meta, params, xs, draw_h0(spec, rng, batch), draw_targets(spec, rng, T, batch)


class TorchNet:
    """The spec's network built from torch modules: one ``num_layers = L`` LSTM/GRU when the
    hidden sizes are equal and ``stacked`` is asked for, else one module per layer, chained;
    plus an ``nn.Linear`` output layer.  Parameters come from ``to_torch_state``."""

    def __init__(self, spec: Mapping[str, Any], meta: Mapping[str, Any], params: Mapping[str, np.ndarray],
                 stacked: bool = True) -> None:
        import torch

        self.torch = torch
        self.spec = spec
        m = spec["model"]
        self.cell, self.sizes, self.L = m["cell"], list(m["hidden_sizes"]), len(m["hidden_sizes"])
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[self.cell]
        sd = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in to_torch_state(spec, meta, params).items()}
        self.stacked = stacked and len(set(self.sizes)) == 1
        if self.stacked:
            self.rnns = [cls(m["input_size"], self.sizes[0], num_layers=self.L, bias=m["bias"]).double()]
            self.rnns[0].load_state_dict({k: v for k, v in sd.items() if not k.startswith("out.")})
        else:
            self.rnns, prev = [], m["input_size"]
            for l, H in enumerate(self.sizes):
                rnn = cls(prev, H, bias=m["bias"]).double()
                rnn.load_state_dict({k.replace(f"_l{l}", "_l0"): v for k, v in sd.items() if k.endswith(f"_l{l}")})
                self.rnns.append(rnn)
                prev = H
        self.out = None
        if m["output_size"]:
            self.out = torch.nn.Linear(self.sizes[-1], m["output_size"], bias=m["bias"]).double()
            self.out.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("out.")})

    def run(self, x: Any, state: list[Any]) -> tuple[Any, list[Any]]:
        """Top hidden states (T, B, H) and the final per-layer states from ``state``."""
        if self.stacked:
            if self.cell == "lstm":
                hs, (h, c) = self.rnns[0](x, (self.torch.stack([s[0] for s in state]),
                                              self.torch.stack([s[1] for s in state])))
                return hs, [(h[l], c[l]) for l in range(self.L)]
            hs, h = self.rnns[0](x, self.torch.stack(state))
            return hs, [h[l] for l in range(self.L)]
        final = []
        for rnn, s in zip(self.rnns, state):
            if self.cell == "lstm":
                x, (h, c) = rnn(x, (s[0][None], s[1][None]))
                final.append((h[0], c[0]))
            else:
                x, h = rnn(x, s[None])
                final.append(h[0])
        return x, final

    def parameters(self) -> dict[str, Any]:
        named = {}
        for l, rnn in enumerate(self.rnns):
            for k, p in rnn.named_parameters():
                named[k if self.stacked else k.replace("_l0", f"_l{l}")] = p
        if self.out is not None:
            named.update({f"out.{k}": p for k, p in self.out.named_parameters()})
        return named

    def loss_term(self, h_top: Any, target: np.ndarray) -> Any:
        """One step's loss summed over batch rows, from torch's own loss functions."""
        F = self.torch.nn.functional
        z = self.out(h_top) if self.out is not None else h_top
        kind = self.spec["loss"]["kind"]
        act = self.spec["model"]["output_activation"] if self.out is not None else "identity"
        y = {"identity": lambda v: v, "softmax": lambda v: self.torch.softmax(v, -1),
             "sigmoid": self.torch.sigmoid}[act](z)
        t = self.torch.from_numpy(np.asarray(target))
        if kind == "mse":
            return 0.5 * F.mse_loss(y, t, reduction="sum")
        if kind == "cross_entropy":
            return F.cross_entropy(z, t, reduction="sum")
        if kind == "bce":
            return F.binary_cross_entropy_with_logits(z, t, reduction="sum")
        if kind == "none":
            return (t * y).sum()
        raise AssertionError(kind)


def _leaf_state(cell: str, h0: Sequence[Any], torch: Any) -> list[Any]:
    if cell == "lstm":
        return [(torch.tensor(h, requires_grad=True), torch.tensor(c, requires_grad=True)) for h, c in h0]
    return [torch.tensor(h, requires_grad=True) for h in h0]


def _detach(state: list[Any]) -> list[Any]:
    return [tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach() for s in state]


def torch_total(net: TorchNet, xs: Any, state0: list[Any], steps: list[int],
                term: Callable[[int, Any], Any]) -> Any:
    """Sum of term(s, h_top_s) over ``steps`` under the spec's truncation, the torch way:
    window: each term re-run from the state entering its window, detached (computed without
    gradient); chunk: a loop over chunks that detaches the carried state at each border."""
    bptt = net.spec["bptt"]
    k, style = bptt["truncate"], bptt.get("truncate_style", "window")
    T = xs.shape[0]
    if k == 0:
        hs, _ = net.run(xs, state0)
        return sum(term(s, hs[s]) for s in steps)
    if style == "chunk":
        total, state = 0.0, state0
        for a in range(0, T, k):
            hs, final = net.run(xs[a:a + k], state)
            total = total + sum(term(s, hs[s - a]) for s in steps if a <= s < a + k)
            state = _detach(final)
        return total
    total = 0.0
    for s in steps:
        j0 = max(0, s - k + 1)
        if j0 == 0:
            start = state0
        else:
            with net.torch.no_grad():
                _, start = net.run(xs[:j0], state0)
        hs, _ = net.run(xs[j0:s + 1], start)
        total = total + term(s, hs[-1])
    return total


def _clip(spec: Mapping[str, Any], grads: dict[str, np.ndarray], names: list[str],
          clip: float | None, clip_norm: float | None) -> None:
    """CONTRACT §2: clip each entry to [-c, c], or scale all parameter gradients by
    min(1, n / (||g||_2 + 1e-6)), ||g||_2 over every entry of every parameter gradient."""
    c = spec["bptt"]["clip"] if clip is None else clip
    n = spec["bptt"]["clip_norm"] if clip_norm is None else clip_norm
    if c > 0:
        for name in names:
            grads[name] = np.clip(grads[name], -c, c)
    if n > 0:
        norm = np.sqrt(sum(float(np.sum(grads[name] ** 2)) for name in names))
        coef = min(1.0, n / (norm + 1e-6))
        for name in names:
            grads[name] = grads[name] * coef


def _torch_grads(net: TorchNet, meta: Mapping[str, Any], xs_t: Any, state0: list[Any],
                 zero_output: bool) -> dict[str, Any]:
    named = net.parameters()
    sd = {k: (p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))) for k, p in named.items()}
    # torch gives bias_ih and bias_hh the same gradient wherever they are summed
    m = net.spec["model"]
    if m["bias"]:
        for l, H in enumerate(net.sizes):
            ih, hh = sd[f"bias_ih_l{l}"], sd[f"bias_hh_l{l}"]
            n_block = slice(2 * H, 3 * H) if has_recurrent_bias(net.spec) else slice(0, 0)
            keep = np.ones(ih.shape[0], bool)
            keep[n_block] = False
            np.testing.assert_allclose(ih[keep], hh[keep], rtol=1e-12, atol=1e-15)
    grads: dict[str, Any] = from_torch_state(net.spec, meta, sd, add_biases=False)
    if zero_output:
        for name, v in meta.items():
            if v["role"] in ("output_weight", "output_bias"):
                grads[name] = np.zeros_like(grads[name])
    grads["xs"] = xs_t.grad.numpy().copy()
    if net.cell == "lstm":
        grads["h0"] = [tuple(x.grad.numpy().copy() if x.grad is not None else np.zeros(tuple(x.shape)) for x in s)
                       for s in state0]
    else:
        grads["h0"] = [s.grad.numpy().copy() if s.grad is not None else np.zeros(tuple(s.shape)) for s in state0]
    return grads


def torch_loss_and_grads(spec: Mapping[str, Any], meta: Mapping[str, Any], params: Mapping[str, np.ndarray],
                         xs: np.ndarray, targets: np.ndarray, h0: Sequence[Any], *, stacked: bool = True,
                         clip: float | None = None, clip_norm: float | None = None) -> tuple[float, dict[str, Any]]:
    """Loss and gradients of the spec's network computed by torch (float64, CPU autograd)."""
    import torch

    net = TorchNet(spec, meta, params, stacked)
    xs_t = torch.tensor(np.asarray(xs, dtype=np.float64), requires_grad=True)
    state0 = _leaf_state(net.cell, h0, torch)
    T, batch = xs.shape[0], xs.shape[1]
    every = spec["loss"]["at"] == "every_step"
    steps = list(range(T)) if every else [T - 1]
    mean = spec["loss"]["reduction"] == "mean"
    scale = 1.0 / (batch * (T if every else 1)) if mean else 1.0
    total = scale * torch_total(net, xs_t, state0, steps,
                                lambda s, h: net.loss_term(h, targets[s] if every else targets))
    total.backward()
    with torch.no_grad():
        hs, _ = net.run(xs_t, [tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach() for s in state0])
        value = scale * sum(net.loss_term(hs[s], targets[s] if every else targets) for s in steps)
    grads = _torch_grads(net, meta, xs_t, state0, zero_output=False)
    _clip(spec, grads, list(meta), clip, clip_norm)
    return float(value), grads


def torch_backward(spec: Mapping[str, Any], meta: Mapping[str, Any], params: Mapping[str, np.ndarray],
                   xs: np.ndarray, h0: Sequence[Any], dhs: np.ndarray, *, stacked: bool = True) -> dict[str, Any]:
    """Gradients of sum(dhs * hs_top) by torch, truncated and clipped as the spec says."""
    import torch

    net = TorchNet(spec, meta, params, stacked)
    xs_t = torch.tensor(np.asarray(xs, dtype=np.float64), requires_grad=True)
    state0 = _leaf_state(net.cell, h0, torch)
    d = torch.from_numpy(np.asarray(dhs, dtype=np.float64))
    total = torch_total(net, xs_t, state0, list(range(xs.shape[0])), lambda s, h: (d[s] * h).sum())
    total.backward()
    grads = _torch_grads(net, meta, xs_t, state0, zero_output=True)
    _clip(spec, grads, list(meta), None, None)
    return grads


def torch_forward(spec: Mapping[str, Any], meta: Mapping[str, Any], params: Mapping[str, np.ndarray],
                  xs: np.ndarray, h0: Sequence[Any], *, stacked: bool = True) -> tuple[np.ndarray, np.ndarray, list]:
    """(top hidden states, predictions, final per-layer states) from torch."""
    import torch

    net = TorchNet(spec, meta, params, stacked)
    with torch.no_grad():
        state = [tuple(torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in s) if isinstance(s, tuple)
                 else torch.from_numpy(np.asarray(s, dtype=np.float64)) for s in h0]
        hs, final = net.run(torch.from_numpy(np.asarray(xs, dtype=np.float64)), state)
        ys = hs
        if net.out is not None:
            z = net.out(hs)
            act = spec["model"]["output_activation"]
            ys = {"identity": lambda v: v, "softmax": lambda v: torch.softmax(v, -1), "sigmoid": torch.sigmoid}[act](z)
    final = [tuple(x.numpy() for x in s) if isinstance(s, tuple) else s.numpy() for s in final]
    return hs.numpy(), ys.numpy(), final


# --------------------------------------------------------------------------- comparisons


def assert_grads_close(got: Mapping[str, Any], want: Mapping[str, Any], names: Sequence[str],
                       cell: str, rtol: float = 1e-10, atol: float = 1e-10, h0: bool = True,
                       xs: bool = True) -> None:
    """Every parameter gradient, "xs" and each layer's h0 gradient ((dh, dc) pairs for the LSTM)."""
    for n in list(names) + (["xs"] if xs else []):
        assert np.shape(got[n]) == np.shape(want[n]), n
        np.testing.assert_allclose(got[n], want[n], rtol=rtol, atol=atol, err_msg=n)
    if h0:
        assert len(got["h0"]) == len(want["h0"])
        for l, (a, b) in enumerate(zip(got["h0"], want["h0"])):
            if cell == "lstm":
                assert isinstance(a, tuple) and len(a) == 2, f"h0[{l}] must be a (dh, dc) tuple, got {type(a)}"
                for part, x, y in zip("hc", a, b):
                    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"h0[{l}].d{part}")
            else:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"h0[{l}]")


# Cases the torch proofs run: (id, cell, spec keywords).  Every loss and `at`, both layouts,
# bias on and off, stacked with equal and unequal sizes, both truncation styles, both clips.
TORCH_CASES = [
    ("lstm-col-mse-every", "lstm", {}),
    ("lstm-row-ce-every-mean", "lstm", dict(layout="row", output_size=3, kind="cross_entropy", reduction="mean",
                                            output_activation="softmax")),
    ("lstm-col-stack2-bce-last", "lstm", dict(hidden_sizes=(4, 4), kind="bce", at="last_step",
                                              output_activation="sigmoid", steps=4)),
    ("lstm-row-stack-unequal-nobias-mse", "lstm", dict(layout="row", hidden_sizes=(3, 2), bias=False)),
    ("lstm-col-noout-none", "lstm", dict(output_size=0, kind="none", output_activation="identity")),
    ("lstm-col-window2-clip", "lstm", dict(steps=5, truncate=2, clip=0.05, kind="cross_entropy", output_size=3)),
    ("lstm-row-stack2-chunk2-clipnorm", "lstm", dict(layout="row", hidden_sizes=(3, 3), steps=5, truncate=2,
                                                     truncate_style="chunk", clip_norm=0.1)),
    ("gru-col-mse-every", "gru", {}),
    ("gru-row-ce-every-mean", "gru", dict(layout="row", output_size=3, kind="cross_entropy", reduction="mean",
                                          output_activation="softmax")),
    ("gru-col-stack2-bce-last", "gru", dict(hidden_sizes=(4, 4), kind="bce", at="last_step",
                                            output_activation="sigmoid", steps=4)),
    ("gru-row-stack-unequal-nobias", "gru", dict(layout="row", hidden_sizes=(3, 2), bias=False)),
    ("gru-col-noout-ce-last", "gru", dict(output_size=0, kind="cross_entropy", at="last_step")),
    ("gru-col-window2-clipnorm", "gru", dict(steps=5, truncate=2, clip_norm=0.1, hidden_sizes=(3, 3))),
    ("gru-row-chunk2-clip-mean", "gru", dict(layout="row", steps=5, truncate=2, truncate_style="chunk",
                                             clip=0.05, reduction="mean")),
]


def _torch_case(case: tuple) -> dict[str, Any]:
    _, cell, kw = case
    return gated_spec(cell, **kw)


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_reference_forward_matches_torch(case: tuple) -> None:
    """Forward: top hidden states, predictions, final (h, c) of every layer, to 1e-12."""
    pytest.importorskip("torch")
    spec = _torch_case(case)
    meta, params, xs, h0, _ = torch_problem(spec)
    hs, ys = reference_forward(spec, meta, params, xs, h0)
    final = reference_final_state(spec, meta, params, xs, h0)
    t_hs, t_ys, t_final = torch_forward(spec, meta, params, xs, h0)
    np.testing.assert_allclose(hs[-1], t_hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ys, t_ys, rtol=1e-12, atol=1e-12)
    assert len(final) == len(t_final)
    for a, b in zip(final, t_final):
        if spec["model"]["cell"] == "lstm":
            assert isinstance(a, tuple) and len(a) == 2
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_reference_loss_and_grads_match_torch(case: tuple) -> None:
    """Loss (1e-12) and every gradient (1e-10): params, xs, h0 (LSTM: dh and dc)."""
    pytest.importorskip("torch")
    spec = _torch_case(case)
    meta, params, xs, h0, targets = torch_problem(spec, seed=1)
    loss, grads = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    t_loss, t_grads = torch_loss_and_grads(spec, meta, params, xs, targets, h0)
    assert loss == pytest.approx(t_loss, rel=1e-12, abs=1e-12)
    assert_grads_close(grads, t_grads, list(meta), spec["model"]["cell"])
    if spec["bptt"]["clip"] or spec["bptt"]["clip_norm"]:   # the clipping really acts here
        _, raw = torch_loss_and_grads(spec, meta, params, xs, targets, h0, clip=0, clip_norm=0)
        assert any(not np.allclose(raw[n], t_grads[n]) for n in meta), "clipping did not trigger"


@pytest.mark.parametrize("case", [c for c in TORCH_CASES if c[2].get("output_size", 2)],
                         ids=[c[0] for c in TORCH_CASES if c[2].get("output_size", 2)])
def test_reference_backward_matches_torch(case: tuple) -> None:
    """backward: gradients of sum(dhs * hs_top), output layer zero, truncated and clipped."""
    pytest.importorskip("torch")
    spec = _torch_case(case)
    meta, params, xs, h0, _ = torch_problem(spec, seed=2)
    dhs = np.random.default_rng(9).standard_normal(xs.shape[:2] + (spec["model"]["hidden_sizes"][-1],))
    got = reference_backward(spec, meta, params, xs, h0, dhs)
    want = torch_backward(spec, meta, params, xs, h0, dhs)
    assert_grads_close(got, want, list(meta), spec["model"]["cell"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stacked_module_equals_chained_layers(cell: str) -> None:
    """The torch side itself: num_layers = 2 equals two chained one-layer modules (so the
    unequal-size cases, which only the chain can run, are the same construction)."""
    pytest.importorskip("torch")
    spec = gated_spec(cell, hidden_sizes=(3, 3), kind="cross_entropy", output_size=3)
    meta, params, xs, h0, targets = torch_problem(spec, seed=4)
    a = torch_loss_and_grads(spec, meta, params, xs, targets, h0, stacked=True)
    b = torch_loss_and_grads(spec, meta, params, xs, targets, h0, stacked=False)
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    assert_grads_close(a[1], b[1], list(meta), cell, rtol=1e-12, atol=1e-13)


def test_to_torch_from_torch_round_trip_helpers() -> None:
    """The test-side to_torch/from_torch: key order, shapes, inverse of each other."""
    for cell, kw in [("lstm", dict(layout="row", hidden_sizes=(3, 2))), ("gru", {}), ("gru", dict(bias=False)),
                     ("gru", dict(gru_reset="before"))]:
        spec = gated_spec(cell, **kw)
        meta, params, *_ = make_problem(spec)
        sd = to_torch_state(spec, meta, params)
        H = spec["model"]["hidden_sizes"]
        ng = len(GATES[cell])
        assert sd["weight_ih_l0"].shape == (ng * H[0], spec["model"]["input_size"])
        back = from_torch_state(spec, meta, sd)
        for n in meta:
            np.testing.assert_array_equal(back[n], params[n])


# --------------------------------------------------------------------------- without torch


def central_fd(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of f() over every entry of x (perturbed in place, then restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def assert_fd_close(fd: np.ndarray, g: np.ndarray, scale: float, what: str) -> None:
    tol = 1e-6 * np.maximum(np.abs(fd), np.abs(g)) + 1e-8 * max(1.0, abs(scale))
    bad = np.abs(fd - g) > tol
    assert not bad.any(), f"{what}: fd {fd[bad]} vs grad {g[bad]}"


FD_CASES = [
    ("lstm-col", gated_spec("lstm", kind="cross_entropy", output_size=3)),
    ("lstm-row-stack-nobias", gated_spec("lstm", layout="row", hidden_sizes=(3, 2), bias=False, kind="bce",
                                         at="last_step")),
    ("gru-after-col-stack", gated_spec("gru", hidden_sizes=(2, 3), reduction="mean")),
    ("gru-before-col", gated_spec("gru", gru_reset="before", kind="cross_entropy", output_size=3)),
    ("gru-before-row-stack", gated_spec("gru", gru_reset="before", layout="row", hidden_sizes=(3, 2))),
    ("gru-before-row-nobias-noout", gated_spec("gru", gru_reset="before", layout="row", bias=False, output_size=0,
                                               kind="none")),
]


@pytest.mark.parametrize("name, spec", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_gated_reference_matches_finite_differences(name: str, spec: dict[str, Any]) -> None:
    """Every gradient of the reference (params, xs, h0 incl. the LSTM's c0) = FD of its loss."""
    meta, params, xs, h0, targets = make_problem(spec, seed=3)
    loss, grads = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    f = lambda: reference_loss(spec, meta, params, xs, targets, h0)  # noqa: E731
    assert set(grads) == set(meta) | {"xs", "h0"}
    for n in meta:
        assert_fd_close(central_fd(f, params[n]), grads[n], loss, n)
    assert_fd_close(central_fd(f, xs), grads["xs"], loss, "xs")
    for l, s in enumerate(h0):
        if spec["model"]["cell"] == "lstm":
            assert isinstance(grads["h0"][l], tuple)
            for part, x, g in zip("hc", s, grads["h0"][l]):
                assert_fd_close(central_fd(f, x), g, loss, f"h0[{l}].{part}")
        else:
            assert_fd_close(central_fd(f, s), grads["h0"][l], loss, f"h0[{l}]")


def _sig(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


def naive_gated_states(spec: Mapping[str, Any], params: Mapping[str, np.ndarray], xs: np.ndarray,
                       h0: Sequence[Any]) -> list[list[Any]]:
    """CONTRACT §4 written a second way: per batch row, matrix-vector products, by name.
    Returns per row, per step, the top layer's h (and the final states per layer)."""
    m = spec["model"]
    row = spec["notation"]["layout"] == "row"
    mv = (lambda W, v: W.T @ v) if row else (lambda W, v: W @ v)
    L, cell = len(m["hidden_sizes"]), m["cell"]
    P = lambda kind, g, l: params.get(f"{kind}{g}{l}")  # noqa: E731  (gated_meta's names)
    tops = []
    for r in range(xs.shape[1]):
        if cell == "lstm":
            h = [h0[l][0][r].copy() for l in range(L)]
            c = [h0[l][1][r].copy() for l in range(L)]
        else:
            h = [h0[l][r].copy() for l in range(L)]
        seq = []
        for t in range(xs.shape[0]):
            x = xs[t, r]
            for l in range(1, L + 1):
                def pre(g: str, hh: np.ndarray) -> np.ndarray:
                    v = mv(P("W", g, l), x) + mv(P("U", g, l), hh)
                    return v + P("b", g, l) if m["bias"] else v
                hp = h[l - 1]
                if cell == "lstm":
                    i, f, g, o = _sig(pre("i", hp)), _sig(pre("f", hp)), np.tanh(pre("g", hp)), _sig(pre("o", hp))
                    c[l - 1] = f * c[l - 1] + i * g
                    h[l - 1] = o * np.tanh(c[l - 1])
                else:
                    rr, z = _sig(pre("r", hp)), _sig(pre("z", hp))
                    if m.get("gru_reset", "after") == "after":
                        hu = mv(P("U", "n", l), hp) + (P("c", "n", l) if m["bias"] else 0)
                        n = np.tanh(mv(P("W", "n", l), x) + (P("b", "n", l) if m["bias"] else 0) + rr * hu)
                    else:
                        n = np.tanh(mv(P("W", "n", l), x) + mv(P("U", "n", l), rr * hp)
                                    + (P("b", "n", l) if m["bias"] else 0))
                    h[l - 1] = (1 - z) * n + z * hp
                x = h[l - 1]
            seq.append(h[-1].copy())
        tops.append(seq)
    return tops


@pytest.mark.parametrize("name, spec", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_gated_reference_forward_matches_naive_loop(name: str, spec: dict[str, Any]) -> None:
    meta, params, xs, h0, _ = make_problem(spec, seed=5)
    hs, _ = reference_forward(spec, meta, params, xs, h0)
    tops = naive_gated_states(spec, params, xs, h0)
    want = np.array(tops).transpose(1, 0, 2)
    np.testing.assert_allclose(hs[-1], want, rtol=1e-13, atol=1e-14)


def test_gru_reset_before_differs_from_after() -> None:
    """The two GRU forms are different functions (same weights; c_n dropped)."""
    after = gated_spec("gru", bias=False)
    before = gated_spec("gru", bias=False, gru_reset="before")
    meta, params, xs, h0, _ = make_problem(after, seed=6)
    a = reference_forward(after, meta, params, xs, h0)[0][-1]
    b = reference_forward(before, gated_meta(before), params, xs, h0)[0][-1]
    assert np.abs(a - b).max() > 1e-3


def test_params_found_by_role_layer_gate_not_name_or_order() -> None:
    """Renamed and reordered PARAMS give the same results."""
    spec = gated_spec("lstm", hidden_sizes=(3, 2), steps=4)
    meta, params, xs, h0, targets = make_problem(spec, seed=8)
    loss, grads = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    rename = {n: f"p{k:02d}" for k, n in enumerate(reversed(list(meta)))}
    meta2 = {rename[n]: meta[n] for n in reversed(list(meta))}
    params2 = {rename[n]: v for n, v in params.items()}
    loss2, grads2 = reference_loss_and_grads(spec, meta2, params2, xs, targets, h0)
    assert loss2 == loss
    for n in meta:
        np.testing.assert_array_equal(grads2[rename[n]], grads[n])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunk_truncation_is_a_loop_over_chunks(cell: str) -> None:
    """Chunk k: one call equals a loop over chunks that carries the final state ((h, c) for
    the LSTM) into the next chunk's h0, gradients summed (the definition, without torch)."""
    spec = gated_spec(cell, hidden_sizes=(3, 2), steps=5, truncate=2, truncate_style="chunk",
                      kind="cross_entropy", output_size=3)
    full = gated_spec(cell, hidden_sizes=(3, 2), steps=2, kind="cross_entropy", output_size=3)
    meta, params, xs, h0, targets = make_problem(spec, seed=10)
    loss, grads = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    state, total, summed = h0, 0.0, {n: 0.0 for n in meta}
    for a in range(0, 5, 2):
        part = slice(a, a + 2)
        l, g = reference_loss_and_grads(full, meta, params, xs[part], targets[part], state)
        state = reference_final_state(full, meta, params, xs[part], state)
        total += l
        summed = {n: summed[n] + g[n] for n in meta}
        if a == 0:
            first_h0 = g["h0"]
    assert loss == pytest.approx(total, rel=1e-13)
    for n in meta:
        np.testing.assert_allclose(grads[n], summed[n], rtol=1e-12, atol=1e-13, err_msg=n)
    assert_grads_close(grads, {**summed, "h0": first_h0}, [], cell, rtol=1e-12, atol=1e-13, xs=False)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_window_one_reaches_only_its_step(cell: str) -> None:
    """Window k = 1, stacked, last_step: only xs[T-1] gets gradient; h0 (h and c) none."""
    spec = gated_spec(cell, hidden_sizes=(3, 2), steps=3, at="last_step", truncate=1)
    meta, params, xs, h0, targets = make_problem(spec, seed=11)
    _, g = reference_loss_and_grads(spec, meta, params, xs, targets, h0)
    assert np.all(g["xs"][:2] == 0) and np.any(g["xs"][2] != 0)
    flat = [x for s in g["h0"] for x in (s if isinstance(s, tuple) else (s,))]
    assert all(np.all(x == 0) for x in flat)


def test_lstm_cell_state_is_the_additive_path() -> None:
    """The LSTM c recursion c_t = f c_{t-1} + i g: with the forget bias very large and the
    input gate shut (bias very negative), c stays c0 over all steps."""
    spec = gated_spec("lstm", steps=4)
    meta, params, xs, h0, _ = make_problem(spec, seed=12)
    params = dict(params)
    params["bf1"] = params["bf1"] + 60.0
    params["bi1"] = params["bi1"] - 60.0
    cs = reference_cell_states(spec, meta, params, xs, h0)[0]
    for t in range(4):
        np.testing.assert_allclose(cs[t], h0[0][1], rtol=1e-12, atol=1e-12)
