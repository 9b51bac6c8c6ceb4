"""Independent reference for the generated RNN modules, written with HIPS ``autograd``.

Why this exists: the generated modules hand-code back-propagation through time.  This
file states the *forward* math of CONVENTIONS.md once, plainly, and lets ``autograd``
do the differentiation, so that the two implementations share no derivative code.

Truncation (``bptt.truncate = k > 0``) is implemented by its definition rather than by
a backward recursion: the loss term at step ``s`` is re-evaluated from step
``j0 = s - k + 1`` with the hidden states entering ``j0`` (in every layer) replaced by
constants from a non-differentiated forward pass.  Then exactly the uses at steps
``j`` with ``s - j < k`` (parameters, ``xs[j]``, and ``h0`` as a use at the first
step) receive gradient from that term, and the per-term gradients are summed.

Chunked truncation (``truncate_style = "chunk"``) uses the same construction with
``j0 = k * (s // k)``, the first step of ``s``'s chunk.  Clipping by norm follows
``torch.nn.utils.clip_grad_norm_`` (coefficient ``min(1, n / (norm + 1e-6))``).

Gated cells (CONTRACT §4): ``cell = "lstm"`` (PyTorch ``nn.LSTM``: gates i, f, g, o;
``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``, the state is the pair (h, c)) and
``cell = "gru"`` (PyTorch ``nn.GRU``: gates r, z, n; ``gru_reset = "after"`` puts the reset
on ``h_{t-1} @ U_n.T + c_n``, ``"before"`` on ``h_{t-1}``; ``h_t = (1 - z) * n + z * h_{t-1}``).
Gates are σ, the candidate and the cell output tanh.  Parameters are looked up by
(role, layer, gate) from PARAMS, never by name.  For the LSTM, ``h0`` is a list per layer
of ``(h, c)`` tuples, ``grads["h0"]`` a list of ``(dh, dc)`` tuples and the final state a
list of ``(h, c)`` tuples; truncation replaces the whole state entering a window or chunk
(h and c of every layer) by constants, as for Elman cells.

Steps here are 0-based (``xs[0]`` is step 1 of CONVENTIONS.md); differences
``s - j`` are the same in both counts.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import autograd.numpy as anp
import numpy as np
from autograd import grad
from autograd.tracer import getval

Array = Any  # an ndarray or an autograd ArrayBox
Spec = Mapping[str, Any]
ParamsMeta = Mapping[str, Mapping[str, Any]]

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
OUTPUT_ACTIVATIONS = ("identity", "softmax", "sigmoid")
LOSSES = ("mse", "cross_entropy", "bce", "none")
CELLS = ("elman", "lstm", "gru")


# --------------------------------------------------------------------------- pieces


def _sigmoid(a: Array) -> Array:
    """Logistic function in the tanh form, which never overflows."""
    return 0.5 * (anp.tanh(0.5 * a) + 1.0)


def _activation(name: str, a: Array) -> Array:
    """Hidden activation f; relu uses f'(0) = 0 (the mask is a constant, a > 0)."""
    if name == "tanh":
        return anp.tanh(a)
    if name == "relu":
        return a * (getval(a) > 0)
    if name == "sigmoid":
        return _sigmoid(a)
    if name == "identity":
        return a
    raise ValueError(f"unknown activation {name!r}; allowed: {ACTIVATIONS}")


def _logsumexp(z: Array) -> Array:
    """log sum exp over the last axis, keepdims; the shift is a constant (exact gradient)."""
    m = np.max(getval(z), axis=-1, keepdims=True)
    return m + anp.log(anp.sum(anp.exp(z - m), axis=-1, keepdims=True))


def _output_activation(name: str, z: Array) -> Array:
    """Output activation g applied to the logits z."""
    if name == "identity":
        return z
    if name == "softmax":
        return anp.exp(z - _logsumexp(z))
    if name == "sigmoid":
        return _sigmoid(z)
    raise ValueError(f"unknown output_activation {name!r}; allowed: {OUTPUT_ACTIVATIONS}")


def _linear(layout: str, x: Array, W: Array) -> Array:
    """x @ W in row layout, x @ W.T (the math of W x on each row) in column layout."""
    if layout == "row":
        return anp.dot(x, W)
    if layout == "column":
        return anp.dot(x, anp.transpose(W))
    raise ValueError(f"unknown layout {layout!r}; allowed: row, column")


class _Model:
    """The spec and PARAMS digested into per-layer parameter names."""

    def __init__(self, spec: Spec, PARAMS: ParamsMeta) -> None:
        model = spec["model"]
        self.layout: str = spec["notation"]["layout"]
        self.hidden_sizes: list[int] = list(model["hidden_sizes"])
        self.L = len(self.hidden_sizes)
        self.input_size: int = model["input_size"]
        self.output_size: int = model["output_size"]
        self.activation: str = model["activation"]
        self.output_activation: str = model["output_activation"]
        self.loss_kind: str = spec["loss"]["kind"]
        self.at: str = spec["loss"]["at"]
        self.reduction: str = spec["loss"]["reduction"]
        self.truncate: int = int(spec["bptt"]["truncate"])
        self.truncate_style: str = spec["bptt"].get("truncate_style", "window")
        self.clip: float = float(spec["bptt"]["clip"])
        self.clip_norm: float = float(spec["bptt"].get("clip_norm", 0.0))
        if self.truncate_style not in ("window", "chunk"):
            raise ValueError(f"unknown truncate_style {self.truncate_style!r}; allowed: window, chunk")
        self.cell: str = model.get("cell", "elman")
        self.gru_reset: str = model.get("gru_reset", "after")
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; allowed: {CELLS}")
        if self.cell != "elman" and self.activation != "tanh":
            raise ValueError(f"{self.cell} cells need activation tanh, got {self.activation!r}")
        if self.cell == "gru" and self.gru_reset not in ("after", "before"):
            raise ValueError(f"unknown gru_reset {self.gru_reset!r}; allowed: after, before")
        # (layer, role, gate) -> name; layer is 1-based, the output layer is L + 1; gate None
        # for Elman cells and the output layer.
        self.names: dict[tuple[int, str, str | None], str] = {}
        for name, meta in PARAMS.items():
            key = (int(meta["layer"]), meta["role"], meta.get("gate"))
            if key in self.names:
                raise ValueError(f"PARAMS has two entries for (layer, role, gate) = {key}")
            self.names[key] = name
        self.output_names = [
            n for (layer, role, gate), n in self.names.items() if role in ("output_weight", "output_bias")
        ]
        if self.loss_kind not in LOSSES:
            raise ValueError(f"unknown loss kind {self.loss_kind!r}; allowed: {LOSSES}")
        if self.loss_kind == "cross_entropy" and self.output_activation == "sigmoid":
            raise ValueError("cross_entropy with output_activation sigmoid is rejected")
        if self.loss_kind == "bce" and self.output_activation == "softmax":
            raise ValueError("bce with output_activation softmax is rejected")

    @property
    def out_size(self) -> int:
        """Width of the predictions (the top hidden size without an output layer)."""
        return self.output_size if self.output_size > 0 else self.hidden_sizes[-1]

    def p(self, params: Mapping[str, Array], layer: int, role: str, gate: str | None = None) -> Array:
        """The parameter of (layer, role, gate), found through PARAMS."""
        return params[self.names[(layer, role, gate)]]

    def has(self, layer: int, role: str, gate: str | None = None) -> bool:
        return (layer, role, gate) in self.names

    def _pre(self, params: Mapping[str, Array], l: int, gate: str | None, x: Array, h: Array) -> Array:
        """x W_k + h U_k + b_k of one gate (the bias only when PARAMS has it)."""
        a = _linear(self.layout, x, self.p(params, l, "input_weight", gate))
        a = a + _linear(self.layout, h, self.p(params, l, "recurrent_weight", gate))
        if self.has(l, "bias", gate):
            a = a + self.p(params, l, "bias", gate)
        return a

    def cell_step(self, params: Mapping[str, Array], l: int, x: Array, state: Any) -> Any:
        """Layer l's new state from its input x and previous state (h, or (h, c) for the LSTM)."""
        if self.cell == "elman":
            return _activation(self.activation, self._pre(params, l, None, x, state))
        if self.cell == "lstm":
            h, c = state
            i = _sigmoid(self._pre(params, l, "i", x, h))
            f = _sigmoid(self._pre(params, l, "f", x, h))
            g = anp.tanh(self._pre(params, l, "g", x, h))
            o = _sigmoid(self._pre(params, l, "o", x, h))
            c_new = f * c + i * g
            return (o * anp.tanh(c_new), c_new)
        if self.cell == "gru":
            h = state
            r = _sigmoid(self._pre(params, l, "r", x, h))
            z = _sigmoid(self._pre(params, l, "z", x, h))
            a = _linear(self.layout, x, self.p(params, l, "input_weight", "n"))
            if self.gru_reset == "after":
                hu = _linear(self.layout, h, self.p(params, l, "recurrent_weight", "n"))
                if self.has(l, "recurrent_bias", "n"):
                    hu = hu + self.p(params, l, "recurrent_bias", "n")
                a = a + r * hu
            else:
                a = a + _linear(self.layout, r * h, self.p(params, l, "recurrent_weight", "n"))
            if self.has(l, "bias", "n"):
                a = a + self.p(params, l, "bias", "n")
            n = anp.tanh(a)
            return (1.0 - z) * n + z * h
        raise AssertionError(self.cell)

    def top(self, state: Any) -> Array:
        """A layer's hidden state h (the first of the LSTM's pair)."""
        return state[0] if self.cell == "lstm" else state

    def step(self, params: Mapping[str, Array], x: Array, h_prev: list[Any]) -> list[Any]:
        """One time step through every layer: new per-layer states."""
        h_new = []
        for l in range(1, self.L + 1):
            state = self.cell_step(params, l, x, h_prev[l - 1])
            h_new.append(state)
            x = self.top(state)
        return h_new

    def logits(self, params: Mapping[str, Array], h_top: Array) -> Array:
        """z_t: output-layer pre-activation, or h^L_t itself without an output layer."""
        if self.output_size == 0:
            return h_top
        z = _linear(self.layout, h_top, self.p(params, self.L + 1, "output_weight"))
        if self.has(self.L + 1, "output_bias"):
            z = z + self.p(params, self.L + 1, "output_bias")
        return z

    def prediction(self, z: Array) -> Array:
        """y_hat_t from the logits (identity when there is no output layer)."""
        if self.output_size == 0:
            return z
        return _output_activation(self.output_activation, z)

    def loss_term(self, params: Mapping[str, Array], h_top: Array, target: np.ndarray) -> Array:
        """Unreduced loss of one step, summed over batch rows."""
        z = self.logits(params, h_top)
        kind = self.loss_kind
        if kind == "mse":
            return 0.5 * anp.sum((self.prediction(z) - target) ** 2)
        if kind == "cross_entropy":
            onehot = np.eye(z.shape[-1])[np.asarray(target, dtype=np.int64)]
            return anp.sum(_logsumexp(z)) - anp.sum(onehot * z)
        if kind == "bce":
            # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z
            return anp.sum(anp.logaddexp(0.0, z) - target * z)
        if kind == "none":
            return anp.sum(target * self.prediction(z))
        raise AssertionError(kind)


def _overrides(m: _Model, clip: float | None, clip_norm: float | None) -> _Model:
    """The model with the clipping of one call (None keeps the spec's value)."""
    if clip is not None:
        m.clip = float(clip)
    if clip_norm is not None:
        m.clip_norm = float(clip_norm)
    return m


def _h0_list(m: _Model, xs: np.ndarray, h0: Sequence[Any] | None) -> list[Any]:
    """h0 as a list of (B, H_l) arrays ((h, c) tuples for the LSTM); None means zeros."""
    B = xs.shape[1]
    dtype = xs.dtype if np.issubdtype(xs.dtype, np.floating) else np.float64
    if h0 is None:
        zeros = [np.zeros((B, H), dtype=dtype) for H in m.hidden_sizes]
        return [(z, z.copy()) for z in zeros] if m.cell == "lstm" else zeros
    if m.cell == "lstm":
        return [(np.asarray(h), np.asarray(c)) for h, c in h0]
    return [np.asarray(h) for h in h0]


def _states(m: _Model, params: Mapping[str, np.ndarray], xs: np.ndarray, h0: list) -> list[list]:
    """states[t + 1][l] = h^{l+1}_t (0-based t); states[0] = h0. Works on boxes or arrays."""
    states = [list(h0)]
    for t in range(xs.shape[0]):
        states.append(m.step(params, xs[t], states[-1]))
    return states


def _differentiable_total(
    m: _Model,
    params_np: Mapping[str, np.ndarray],
    xs_np: np.ndarray,
    h0_np: list[np.ndarray],
    term: Callable[[Mapping[str, Array], int, Array], Array],
    steps: Sequence[int],
    scale: float,
) -> Callable[[tuple], Array]:
    """Build theta -> scale * sum_s term(s), with truncation applied by definition.

    ``term(params, s, h_top_s)`` is the loss term at step s.  With k = truncate > 0
    each term starts its own forward pass at j0 = max(0, s - k + 1) from the constant
    states of a non-differentiated pass, so nothing before j0 receives its gradient.
    """
    k = m.truncate
    const_states = _states(m, params_np, xs_np, h0_np) if k > 0 else None

    def total(theta: tuple) -> Array:
        params, xs, h0 = theta
        acc = 0.0
        if k == 0:
            states = _states(m, params, xs, h0)
            for s in steps:
                acc = acc + term(params, s, m.top(states[s + 1][-1]))
        else:
            for s in steps:
                # window: the k steps ending at s; chunk: s's own chunk [k * (s // k), s]
                j0 = k * (s // k) if m.truncate_style == "chunk" else max(0, s - k + 1)
                h = list(h0) if j0 == 0 else list(const_states[j0])
                for j in range(j0, s + 1):
                    h = m.step(params, xs[j], h)
                acc = acc + term(params, s, m.top(h[-1]))
        return scale * acc

    return total


def _finish(m: _Model, g: tuple, zero_names: Sequence[str] = ()) -> dict[str, Any]:
    """Flatten autograd's (params, xs, h0) gradient into the module's grads dict, clipped."""
    gp, gxs, gh0 = g
    grads: dict[str, Any] = {}
    for name, value in gp.items():
        value = np.zeros_like(value) if name in zero_names else np.asarray(value)
        if m.clip > 0:
            value = np.clip(value, -m.clip, m.clip)
        grads[name] = value
    if m.clip_norm > 0:
        # torch.nn.utils.clip_grad_norm_: the 2-norm of the per-tensor 2-norms, coef clamped at 1
        norm = float(np.linalg.norm([np.linalg.norm(grads[name].ravel()) for name in gp]))
        coef = min(1.0, m.clip_norm / (norm + 1e-6))
        grads = {name: value * coef for name, value in grads.items()}
    grads["xs"] = np.asarray(gxs)
    if m.cell == "lstm":
        grads["h0"] = [(np.asarray(dh), np.asarray(dc)) for dh, dc in gh0]
    else:
        grads["h0"] = [np.asarray(h) for h in gh0]
    return grads


def _theta(params: Mapping[str, np.ndarray], xs: np.ndarray, h0: list) -> tuple:
    """The differentiated argument: (params dict, xs, h0 list), as float arrays."""
    return ({n: np.asarray(v) for n, v in params.items()}, np.asarray(xs),
            [tuple(h) if isinstance(h, tuple) else h for h in h0])


# --------------------------------------------------------------------------- public API


def reference_forward(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    h0: Sequence[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-layer hidden states h [(T, B, H_l)] and predictions y_hat (T, B, out)."""
    m = _Model(spec, PARAMS)
    xs = np.asarray(xs)
    states = _states(m, params, xs, _h0_list(m, xs, h0))
    hs = [np.stack([m.top(states[t + 1][l]) for t in range(xs.shape[0])]) for l in range(m.L)]
    ys = np.stack([m.prediction(m.logits(params, h)) for h in hs[-1]])
    return hs, ys


def reference_final_state(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    h0: Sequence[Any] | None = None,
) -> list[Any]:
    """Every layer's last state, as ``cache["h_final"]``: arrays, or (h, c) tuples for the LSTM."""
    m = _Model(spec, PARAMS)
    xs = np.asarray(xs)
    return list(_states(m, params, xs, _h0_list(m, xs, h0))[-1])


def reference_cell_states(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    h0: Sequence[Any] | None = None,
) -> list[np.ndarray]:
    """The LSTM's per-layer cell states c [(T, B, H_l)]."""
    m = _Model(spec, PARAMS)
    if m.cell != "lstm":
        raise ValueError("only LSTM cells have a cell state")
    xs = np.asarray(xs)
    states = _states(m, params, xs, _h0_list(m, xs, h0))
    return [np.stack([states[t + 1][l][1] for t in range(xs.shape[0])]) for l in range(m.L)]


def _loss_setup(m: _Model, xs: np.ndarray, targets: np.ndarray) -> tuple[list[int], float, Callable]:
    """Loss steps, reduction scale, and the per-step term for a loss spec."""
    T, B = xs.shape[0], xs.shape[1]
    targets = np.asarray(targets)
    if m.at == "every_step":
        steps = list(range(T))
        pick = lambda s: targets[s]  # noqa: E731
    elif m.at == "last_step":
        steps = [T - 1]
        pick = lambda s: targets  # noqa: E731
    else:
        raise ValueError(f"unknown loss.at {m.at!r}; allowed: every_step, last_step")
    if m.reduction == "sum":
        scale = 1.0
    elif m.reduction == "mean":
        scale = 1.0 / (B * (T if m.at == "every_step" else 1))
    else:
        raise ValueError(f"unknown reduction {m.reduction!r}; allowed: sum, mean")

    def term(params: Mapping[str, Array], s: int, h_top: Array) -> Array:
        return m.loss_term(params, h_top, pick(s))

    return steps, scale, term


def reference_loss(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    targets: np.ndarray,
    h0: Sequence[np.ndarray] | None = None,
) -> float:
    """The loss value alone (no truncation or clipping matters for the value)."""
    m = _Model(spec, PARAMS)
    xs = np.asarray(xs)
    steps, scale, term = _loss_setup(m, xs, targets)
    h0l = _h0_list(m, xs, h0)
    states = _states(m, params, xs, h0l)
    return float(scale * sum(term(params, s, m.top(states[s + 1][-1])) for s in steps))


def reference_loss_and_grads(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    targets: np.ndarray,
    h0: Sequence[np.ndarray] | None = None,
    *,
    clip: float | None = None,
    clip_norm: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """(loss, grads) like the generated ``loss_and_grads``: params, "xs", "h0" (list).
    ``clip`` / ``clip_norm`` replace the spec's values when given."""
    m = _overrides(_Model(spec, PARAMS), clip, clip_norm)
    xs = np.asarray(xs)
    h0l = _h0_list(m, xs, h0)
    steps, scale, term = _loss_setup(m, xs, targets)
    total = _differentiable_total(m, params, xs, h0l, term, steps, scale)
    g = grad(total)(_theta(params, xs, h0l))
    return reference_loss(spec, PARAMS, params, xs, targets, h0l), _finish(m, g)


def reference_backward(
    spec: Spec,
    PARAMS: ParamsMeta,
    params: Mapping[str, np.ndarray],
    xs: np.ndarray,
    h0: Sequence[np.ndarray] | None,
    dhs: np.ndarray,
    *,
    clip: float | None = None,
    clip_norm: float | None = None,
) -> dict[str, Any]:
    """Gradients of sum(dhs * hs) (hs: top hidden states), each dhs[t] a term at step t.

    Same truncation and clipping as the loss; output-layer parameters get zeros.
    """
    m = _overrides(_Model(spec, PARAMS), clip, clip_norm)
    xs = np.asarray(xs)
    dhs = np.asarray(dhs)
    h0l = _h0_list(m, xs, h0)

    def term(params: Mapping[str, Array], s: int, h_top: Array) -> Array:
        return anp.sum(dhs[s] * h_top)

    total = _differentiable_total(m, params, xs, h0l, term, list(range(xs.shape[0])), 1.0)
    g = grad(total)(_theta(params, xs, h0l))
    return _finish(m, g, zero_names=m.output_names)
