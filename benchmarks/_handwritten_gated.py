"""Hand-written batched NumPy LSTM and GRU (forward + BPTT), column layout, with bias.

The baseline that ``bench_gated.py`` measures the generated LSTM/GRU modules against: what a
careful engineer writes by hand for the cells of CONTRACT §4 (PyTorch's ``nn.LSTM`` and
``nn.GRU`` with reset after), on time-major, batch-row data (``xs`` is (T, B, D)).

Parameters are kept the way one writes them by hand: the gates stacked into one weight per
layer, ``W`` (G H, in), ``U`` (G H, H), ``b`` (G H,) (G = 4 for the LSTM, 3 for the GRU),
plus the GRU's n-gate recurrent bias ``cn`` (H,).  The LSTM stores its gates in the order
i, f, o, g (CS231n's), so that the three σ gates are one contiguous block: ``pack_lstm``
reorders PyTorch's i, f, g, o once, outside the timed call.

What makes it fast:

* the input projections of all gates and all steps are one GEMM per layer, written into the
  (T, B, G H) gate buffer, bias added once;
* per step, one recurrent GEMM for all gates (``h_{t-1} @ U.T`` with ``U.T`` copied once to a
  C-contiguous array), σ over the three σ gates as one block, in place (σ(a) =
  (tanh(a/2) + 1)/2, which never overflows), tanh of the candidate in place;
* the gate buffer keeps the activations for backward; slopes (σ' = s(1 - s), tanh' = 1 - g²,
  o·tanh'(c)) are computed after the loop for all steps at once, then the backward time loop
  does only the per-step products that depend on the carried δ and one recurrent GEMM;
* weight gradients, bias gradients and the gradient on the layer input are one operation each
  over all steps after the loop.
"""
from __future__ import annotations

from typing import Any

import numpy as np

Layer = dict[str, np.ndarray]


def _sigmoid_(a: np.ndarray) -> None:
    """σ in place, in the tanh form (never overflows)."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5


# --------------------------------------------------------------------------- LSTM


def pack_lstm(per_gate: dict[str, dict[str, np.ndarray]]) -> Layer:
    """One layer's {gate: {"W", "U", "b"}} (gates i, f, g, o) stacked in the order i, f, o, g."""
    order = ("i", "f", "o", "g")
    return {k: np.ascontiguousarray(np.concatenate([per_gate[g][k] for g in order])) for k in ("W", "U", "b")}


def lstm_forward(layers: list[Layer], xs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Stacked LSTM over ``xs`` (T, B, D) from zero states: (top hs (T, B, H), kept for backward)."""
    T, B, _ = xs.shape
    x = xs
    kept = []
    for lay in layers:
        W, U, b = lay["W"], lay["U"], lay["b"]
        H = U.shape[1]
        gates = np.empty((T, B, 4 * H), xs.dtype)          # i f o | g, then their activations
        np.dot(x.reshape(T * B, -1), W.T, out=gates.reshape(T * B, 4 * H))
        gates += b
        hbuf = np.zeros((T + 1, B, H), xs.dtype)            # hbuf[t + 1] = h_t
        cbuf = np.zeros((T + 1, B, H), xs.dtype)
        tanh_c = np.empty((T, B, H), xs.dtype)
        UT = np.ascontiguousarray(U.T)
        rec = np.empty((B, 4 * H), xs.dtype)
        tmp = np.empty((B, H), xs.dtype)
        for t in range(T):
            a = gates[t]
            np.dot(hbuf[t], UT, out=rec)
            a += rec
            _sigmoid_(a[:, :3 * H])
            np.tanh(a[:, 3 * H:], out=a[:, 3 * H:])
            c = cbuf[t + 1]
            np.multiply(a[:, H:2 * H], cbuf[t], out=c)                  # f * c_{t-1}
            np.multiply(a[:, :H], a[:, 3 * H:], out=tmp)                # i * g
            c += tmp
            np.tanh(c, out=tanh_c[t])
            np.multiply(a[:, 2 * H:3 * H], tanh_c[t], out=hbuf[t + 1])  # o * tanh(c)
        kept.append({"x": x, "gates": gates, "hbuf": hbuf, "cbuf": cbuf, "tanh_c": tanh_c})
        x = hbuf[1:]
    return x, {"layers": layers, "kept": kept}


def lstm_backward(dhs: np.ndarray, cache: dict[str, Any]) -> dict[str, Any]:
    """BPTT from ``dhs`` (T, B, H_top): {"W", "U", "b": per layer (packed order), "xs"}."""
    grads: dict[str, list] = {"W": [], "U": [], "b": []}
    upstream = dhs
    for lay, k in zip(reversed(cache["layers"]), reversed(cache["kept"])):
        W, U = lay["W"], lay["U"]
        gates, hbuf, cbuf, tanh_c, x = k["gates"], k["hbuf"], k["cbuf"], k["tanh_c"], k["x"]
        T, B, H4 = gates.shape
        H = H4 // 4
        # slopes for all steps at once: σ' = s (1 - s) for i f o, tanh' = 1 - g^2 for g
        slope = np.subtract(1.0, gates)                     # σ' = s (1 - s); tanh' = 1 - g^2
        slope[..., :3 * H] *= gates[..., :3 * H]
        np.square(gates[..., 3 * H:], out=slope[..., 3 * H:])
        np.subtract(1.0, slope[..., 3 * H:], out=slope[..., 3 * H:])
        dcoef = np.square(tanh_c)                           # o * (1 - tanh(c)^2)
        np.subtract(1.0, dcoef, out=dcoef)
        dcoef *= gates[..., 2 * H:3 * H]
        da = np.empty_like(gates)
        dh = np.empty((B, H), gates.dtype)
        dc = np.zeros((B, H), gates.dtype)
        rec = np.zeros((B, H), gates.dtype)
        tmp = np.empty((B, H), gates.dtype)
        for t in range(T - 1, -1, -1):
            g_t, d_t = gates[t], da[t]
            np.add(upstream[t], rec, out=dh)
            np.multiply(dh, dcoef[t], out=tmp)
            dc += tmp                                        # dc_t = f_{t+1} dc_{t+1} + dh o tanh'(c)
            np.multiply(dc, g_t[:, 3 * H:], out=d_t[:, :H])            # di = dc g
            np.multiply(dc, cbuf[t], out=d_t[:, H:2 * H])              # df = dc c_{t-1}
            np.multiply(dh, tanh_c[t], out=d_t[:, 2 * H:3 * H])        # do = dh tanh(c)
            np.multiply(dc, g_t[:, :H], out=d_t[:, 3 * H:])            # dg = dc i
            dc *= g_t[:, H:2 * H]                                       # carried: f_t dc_t
            d_t *= slope[t]
            np.dot(d_t, U, out=rec)
        d2 = da.reshape(T * B, H4)
        grads["W"].append(d2.T @ x.reshape(T * B, -1))
        grads["U"].append(d2.T @ hbuf[:-1].reshape(T * B, H))
        grads["b"].append(d2.sum(axis=0))
        upstream = (d2 @ W).reshape(T, B, -1)
    for key in grads:
        grads[key].reverse()
    return {**grads, "xs": upstream}


# --------------------------------------------------------------------------- GRU (reset after)


def pack_gru(per_gate: dict[str, dict[str, np.ndarray]], cn: np.ndarray) -> Layer:
    """One layer's {gate: {"W", "U", "b"}} (gates r, z, n) stacked r, z, n, with the n gate's
    recurrent bias cn."""
    order = ("r", "z", "n")
    packed = {k: np.ascontiguousarray(np.concatenate([per_gate[g][k] for g in order])) for k in ("W", "U", "b")}
    packed["cn"] = np.ascontiguousarray(cn)
    return packed


def gru_forward(layers: list[Layer], xs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Stacked GRU (h = (1 - z) n + z h_prev, n = tanh(x W_n + b_n + r (h U_n + c_n)))."""
    T, B, _ = xs.shape
    x = xs
    kept = []
    for lay in layers:
        W, U, b, cn = lay["W"], lay["U"], lay["b"], lay["cn"]
        H = U.shape[1]
        gates = np.empty((T, B, 3 * H), xs.dtype)          # r z n: pre-activations, then activations
        np.dot(x.reshape(T * B, -1), W.T, out=gates.reshape(T * B, 3 * H))
        gates += b
        hn = np.empty((T, B, H), xs.dtype)                  # h_{t-1} U_n + c_n, for backward
        hbuf = np.zeros((T + 1, B, H), xs.dtype)
        UT = np.ascontiguousarray(U.T)
        rec = np.empty((B, 3 * H), xs.dtype)
        for t in range(T):
            a = gates[t]
            np.dot(hbuf[t], UT, out=rec)
            a[:, :2 * H] += rec[:, :2 * H]
            _sigmoid_(a[:, :2 * H])
            np.add(rec[:, 2 * H:], cn, out=hn[t])
            n = a[:, 2 * H:]
            rn = rec[:, 2 * H:]
            np.multiply(a[:, :H], hn[t], out=rn)
            n += rn
            np.tanh(n, out=n)
            h = hbuf[t + 1]
            np.subtract(hbuf[t], n, out=h)                  # h = n + z (h_prev - n)
            h *= a[:, H:2 * H]
            h += n
        kept.append({"x": x, "gates": gates, "hbuf": hbuf, "hn": hn})
        x = hbuf[1:]
    return x, {"layers": layers, "kept": kept}


def gru_backward(dhs: np.ndarray, cache: dict[str, Any]) -> dict[str, Any]:
    """BPTT from ``dhs``: {"W", "U", "b", "cn": per layer, "xs"}."""
    grads: dict[str, list] = {"W": [], "U": [], "b": [], "cn": []}
    upstream = dhs
    for lay, k in zip(reversed(cache["layers"]), reversed(cache["kept"])):
        W, U = lay["W"], lay["U"]
        gates, hbuf, hn, x = k["gates"], k["hbuf"], k["hn"], k["x"]
        T, B, H3 = gates.shape
        H = H3 // 3
        slope = np.subtract(1.0, gates)                     # σ' = s (1 - s); tanh' = 1 - n^2
        slope[..., :2 * H] *= gates[..., :2 * H]
        np.square(gates[..., 2 * H:], out=slope[..., 2 * H:])
        np.subtract(1.0, slope[..., 2 * H:], out=slope[..., 2 * H:])
        hmn = np.subtract(hbuf[:-1], gates[..., 2 * H:])    # h_{t-1} - n_t, the z gate's factor
        one_z = np.subtract(1.0, gates[..., H:2 * H])
        da = np.empty_like(gates)                           # input-side pre-activation grads (r z n)
        dq = np.empty((T, B, H), gates.dtype)               # grad on h U_n + c_n
        dh = np.empty((B, H), gates.dtype)
        rec = np.zeros((B, H), gates.dtype)
        rec3 = np.empty((B, 3 * H), gates.dtype)
        for t in range(T - 1, -1, -1):
            g_t, d_t = gates[t], da[t]
            np.add(upstream[t], rec, out=dh)
            dn = d_t[:, 2 * H:]
            np.multiply(dh, one_z[t], out=dn)
            dn *= slope[t, :, 2 * H:]                        # grad on n's pre-activation
            np.multiply(dn, hn[t], out=d_t[:, :H])           # dr
            d_t[:, :H] *= slope[t, :, :H]
            np.multiply(dh, hmn[t], out=d_t[:, H:2 * H])     # dz
            d_t[:, H:2 * H] *= slope[t, :, H:2 * H]
            np.multiply(dn, g_t[:, :H], out=dq[t])           # r * dn
            rec3[:, :2 * H] = d_t[:, :2 * H]
            rec3[:, 2 * H:] = dq[t]
            np.dot(rec3, U, out=rec)
            dh *= g_t[:, H:2 * H]
            rec += dh                                        # direct path z h_{t-1}
        d2 = da.reshape(T * B, H3)
        hp = hbuf[:-1].reshape(T * B, H)
        dU = np.empty_like(U)
        np.dot(d2[:, :2 * H].T, hp, out=dU[:2 * H])
        q2 = dq.reshape(T * B, H)
        np.dot(q2.T, hp, out=dU[2 * H:])
        grads["W"].append(d2.T @ x.reshape(T * B, -1))
        grads["U"].append(dU)
        grads["b"].append(d2.sum(axis=0))
        grads["cn"].append(q2.sum(axis=0))
        upstream = (d2 @ W).reshape(T, B, -1)
    for key in grads:
        grads[key].reverse()
    return {**grads, "xs": upstream}


# --------------------------------------------------------------------------- output layer and loss


def softmax_ce_loss_and_grads(cell: str, layers: list[Layer], V: np.ndarray, c: np.ndarray,
                              xs: np.ndarray, targets: np.ndarray) -> tuple[float, dict[str, Any]]:
    """Forward, output layer z = h V.T + c, softmax cross-entropy summed over every step and
    row (one exp, no one-hot, in place), and every gradient."""
    fwd, bwd = (lstm_forward, lstm_backward) if cell == "lstm" else (gru_forward, gru_backward)
    hs, cache = fwd(layers, xs)
    T, B, H = hs.shape
    rows = hs.reshape(T * B, H)
    z = rows @ V.T
    z += c
    idx = targets.reshape(-1, 1)
    picked = np.take_along_axis(z, idx, axis=1)
    m = z.max(axis=1, keepdims=True)
    z -= m
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    z /= s
    loss = float(np.log(s).sum() + m.sum() - picked.sum())
    np.put_along_axis(z, idx, np.take_along_axis(z, idx, axis=1) - 1, axis=1)
    grads = bwd((z @ V).reshape(T, B, H), cache)
    grads["V"], grads["c"] = z.T @ rows, z.sum(axis=0)
    return loss, grads
