"""The numbers of the handout: a worked example and the vanishing-gradient data.

A stage between the derivation and the document (`derive.build.render`): the document
prints numbers, it never computes them. The worked example evaluates the derivation's own
assignments (forward, losses, deltas, per-step contributions, totals) with NumPy
(`derive.evaluate`) on the small fixed weights and inputs of the spec's `[example]` table.
The vanishing-gradient data come from running the generated module, rendered in memory
from the same derivation, over a longer sequence (`LONG` steps) with the recurrent weight
scaled to each spectral radius of `RADII`.

The defaults (documented in README, "The worked example"): every weight and bias is
`round(scale * N(0, 1), 1)` drawn in the order of the module's `PARAMS` from
`numpy.random.default_rng(seed)`, then the inputs `round(N(0, 1), 1)`, then the targets
(`round(N(0, 1), 1)` for mse, classes drawn uniformly for cross-entropy, `1.0` for bce).
With `tokens` (when the inputs can hold one per distinct token), x_t is the one-hot vector of the t-th token (cyclically) in the vocabulary of
the distinct tokens in order of first appearance, and a class target is the next token.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from derive.evaluate import NumPyBackend, evaluate
from derive.rules import ACTIVATIONS, v

if TYPE_CHECKING:
    from derive.bptt import Derivation

#: The sequence length of the vanishing-gradient experiment, and the spectral radii of the
#: recurrent weight it compares (vanishing, neutral, exploding).
LONG = 50
RADII = (0.5, 1.0, 1.5)
#: The experiment linearises around the zero state (inputs and biases 0, h_0 = 0), where tanh' = 1:
#: the product of Jacobians is then exactly (W_hh^T)^n and the three regimes are plain.
INPUT_SCALE = 0.0


@dataclass
class Numbers:
    """Every number the handout prints, keyed by the derivation's symbols."""

    eta: float
    values: dict[sp.MatrixSymbol, np.ndarray]        # parameters, inputs, targets, forward values, deltas, losses
    uses: dict[sp.MatrixSymbol, list[tuple[sp.Expr, np.ndarray]]]
    totals: dict[sp.MatrixSymbol, np.ndarray]        # after clipping when the spec clips
    updated: dict[sp.MatrixSymbol, np.ndarray]
    loss: float
    tokens: tuple[str, ...]
    xs: np.ndarray                                   # (T, 1, input_size), as the module takes them
    targets: np.ndarray                              # as `loss_and_grads` takes them
    params: dict[str, np.ndarray]                    # as the module takes them (PARAMS order)
    #: spectral radius -> ||dL/dh_k|| for t - k = 0 .. LONG - 1 (empty when not measured)
    vanishing: dict[float, list[float]] = field(default_factory=dict)


#: The roles of parameters that the module holds as 1-D arrays.
BIASES = ("bias", "output_bias", "recurrent_bias")


def python_name(sym, p: sp.MatrixSymbol) -> str:
    """The module's name of a parameter (the key of PARAMS and grads)."""
    q = sym.info[p]
    return sym.names.python(q.role, q.layer, q.gate)


def _shape(expr: sp.MatrixExpr, sizes: dict) -> tuple[int, int]:
    return tuple(int(sp.sympify(n).xreplace(sizes)) for n in expr.shape)


def module_namespace(source: str, name: str) -> types.ModuleType:
    """The generated module's source executed in a fresh module."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}.py>", "exec"), module.__dict__)
    return module


def example_inputs(d: Derivation) -> tuple[dict[sp.MatrixSymbol, np.ndarray], np.ndarray, np.ndarray, tuple[str, ...]]:
    """The worked example's leaves by symbol, and xs and targets as the module takes them."""
    spec, sym = d.spec, d.sym
    ex, m, T = spec.example, spec.model, spec.bptt.steps
    sizes = sym.sizes()
    rng = np.random.default_rng(ex.seed)
    env: dict[sp.MatrixSymbol, np.ndarray] = {}
    for p in sym.params():
        env[p] = np.round(ex.scale * rng.standard_normal(_shape(p, sizes)), 1)
    # tokens need one input per distinct token; a model with fewer inputs draws its inputs
    tokens = tuple(ex.tokens) if len(set(ex.tokens)) <= m.input_size else ()
    vocabulary = list(dict.fromkeys(tokens))
    if tokens:
        xs = np.zeros((T, 1, m.input_size))
        for i in range(T):
            xs[i, 0, vocabulary.index(tokens[i % len(tokens)])] = 1.0
    else:
        xs = np.round(rng.standard_normal((T, 1, m.input_size)), 1)
    for l in range(1, m.layers + 1):
        for role in sym.cell.STATE:      # h_0 (and an LSTM's c_0) are zero
            s0 = sym(role, l, sp.Integer(0))
            env[s0] = np.zeros(_shape(s0, sizes))
    for time in d.unrolled.times:
        x = sym("input", None, time)
        env[x] = xs[int(time) - 1, 0].reshape(_shape(x, sizes))
    steps = [int(s) for s in d.unrolled.loss_steps]
    out = m.output_size or m.hidden_sizes[-1]
    kind = spec.loss.kind
    if kind == "cross_entropy":
        if tokens:
            classes = [vocabulary.index(tokens[s % len(tokens)]) % out for s in steps]
        else:
            classes = [int(c) for c in rng.integers(out, size=len(steps))]
        values = [np.eye(out)[c] for c in classes]
        module_targets = np.array(classes).reshape(len(steps), 1)
    else:
        values = [np.ones(out) if kind == "bce" else np.round(rng.standard_normal(out), 1) for _ in steps]
        module_targets = np.array(values).reshape(len(steps), 1, out)
    for s, value in zip(d.unrolled.loss_steps, values):
        y = d.unrolled.at(s).target
        env[y] = value.reshape(_shape(y, sizes))
    if spec.loss.at == "last_step":
        module_targets = module_targets[0]
    return env, xs, module_targets, tokens


def worked_example(d: Derivation) -> Numbers:
    """Evaluate the derivation on the example: forward, losses, deltas, contributions, totals."""
    spec, sym = d.spec, d.sym
    sizes, backend = sym.sizes(), NumPyBackend()
    env, xs, targets, tokens = example_inputs(d)
    for a in d.unrolled.forward + d.unrolled.losses + d.deltas:
        env[a.lhs] = evaluate(a.rhs, env, backend, sizes)
    uses = {p: [(time, evaluate(e, env, backend, sizes)) for time, e in steps] for p, steps in d.uses.items()}
    totals = {p: evaluate(e, env, backend, sizes) for p, e in d.totals.items()}
    if spec.bptt.clip:
        totals = {p: np.clip(g, -spec.bptt.clip, spec.bptt.clip) for p, g in totals.items()}
    if getattr(spec.bptt, "clip_norm", 0):   # all gradients as one vector, scaled to the norm
        norm = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in totals.values())))
        scale = min(1.0, spec.bptt.clip_norm / (norm + 1e-6))
        totals = {p: g * scale for p, g in totals.items()}
    eta = spec.example.eta
    updated = {p: env[p] - eta * totals[p] for p in totals}
    loss = float(evaluate(d.scale * sp.MatAdd(*[a.lhs for a in d.unrolled.losses]), env, backend, sizes)[0, 0]) \
        if len(d.unrolled.losses) > 1 else float(d.scale * env[d.unrolled.losses[0].lhs][0, 0])
    params = {python_name(sym, p): (env[p].reshape(-1) if sym.info[p].role in BIASES else env[p])
              for p in sym.params()}
    steps = tuple(tokens[i % len(tokens)] for i in range(spec.bptt.steps)) if tokens else ()
    return Numbers(eta, env, uses, totals, updated, loss, steps, xs, targets, params)


def _norm_of(h0_grads: Any) -> float:
    parts = h0_grads if isinstance(h0_grads, (list, tuple)) else [h0_grads]
    return float(np.sqrt(sum(float(np.sum(np.square(g))) for g in parts)))


def vanishing(d: Derivation, module: types.ModuleType, params: dict[str, np.ndarray]) -> dict[float, list[float]]:
    """||dL/dh_k|| for t - k = 0 .. LONG - 1 with L = g . h_t (g the unit vector of equal
    entries on the top hidden state), from the generated module, per spectral radius.

    Full BPTT runs the module from the stored state h_k over the last t - k steps and reads
    its h0 gradient. Under truncation a run back-propagates at most `truncate` steps, so the
    gradient is carried back one step at a time (a one-step run's h0 gradient is exact);
    this needs one layer. Returns {} when neither applies."""
    spec, sym = d.spec, d.sym
    m, truncate = spec.model, spec.bptt.truncate
    if truncate and m.layers > 1:
        return {}
    rng = np.random.default_rng(spec.example.seed)
    # a slope of 0 at the zero state (relu) would stop every gradient: small inputs instead
    scale = INPUT_SCALE if ACTIVATIONS[m.activation].slope.xreplace({v: 0}) != 0 else 0.1
    xs = scale * rng.standard_normal((LONG, 1, m.input_size))
    recurrent = [sym.names.python("recurrent_weight", l) for l in range(1, m.layers + 1)]
    H = m.hidden_sizes[-1]
    g = np.full((1, H), 1 / np.sqrt(H))
    out: dict[float, list[float]] = {}
    biases = [python_name(sym, q) for q in sym.params() if sym.info[q].role in BIASES]
    for radius in RADII:
        # zero biases (and zero inputs): every state stays at 0, where the slope is largest
        p = {k: (np.zeros_like(w) if k in biases else w) for k, w in params.items()}
        for name in recurrent:
            w = p[name]
            rho = max(abs(np.linalg.eigvals(w)))
            p[name] = w * (radius / rho) if rho else w
        # the states h_0 .. h_LONG of every layer, one module step at a time
        states = [[np.zeros((1, n)) for n in m.hidden_sizes]]
        for t in range(LONG):
            _, cache = module.forward(p, xs[t:t + 1], states[-1])
            states.append([np.asarray(h) for h in cache["h_final"]])
        norms = []
        if not truncate:
            for n in range(LONG):      # n = t - k
                k = LONG - n
                dhs = np.zeros((n, 1, H))
                if n:
                    dhs[-1] = g
                    _, cache = module.forward(p, xs[k:], states[k])
                    norms.append(_norm_of(module.backward(dhs, cache)["h0"]))
                else:
                    norms.append(float(np.linalg.norm(g)))
        else:
            upstream = g
            norms.append(float(np.linalg.norm(g)))
            for n in range(1, LONG):
                k = LONG - n          # carry dL/dh_{k+1} back over step k + 1
                _, cache = module.forward(p, xs[k:k + 1], states[k])
                upstream = np.asarray(module.backward(upstream.reshape(1, 1, H), cache)["h0"][0])
                norms.append(_norm_of(upstream))
        out[radius] = norms
    return out



#: A gated cell's experiment: the gate that keeps the state (an LSTM's forget gate f, a GRU's
#: update gate z in PyTorch's convention h_t = z ⊙ h_{t-1} + (1 - z) ⊙ n_t), the values it is
#: held at, and the state whose gradient is measured (its adjoint's role).
KEEP = {"lstm": "f", "gru": "z"}
GATE_VALUES = (0.5, 0.9, 0.99)
STATE_ADJOINT = {"lstm": ("cell", "cell_delta"), "gru": ("hidden", "hidden_delta")}


def gated_vanishing(d: Derivation, params: dict[sp.MatrixSymbol, np.ndarray]) -> dict[float, list[float]]:
    """||dL/dc_k|| (LSTM) or ||dL/dh_k|| (GRU) for t - k = 0 .. LONG - 1, with L = g . h_t (g the
    unit vector of equal entries on the top hidden state), per value of the keeping gate.

    Computed from the derivation's own generic step rule (`rule.layers[l].forward` and
    `.delta`), evaluated with NumPy step by step: forward over LONG steps from the zero
    state with zero inputs, then backward from step LONG. Every bias is 0 except the
    keeping gate's, set to logit(value) so that the gate's value is `value` at every step;
    the weights are the worked example's. The states then stay 0, and the gradient along
    the state's additive path is multiplied by the gate's value at every step."""
    from derive.symbols import t
    spec, sym, rule = d.spec, d.sym, d.rule
    m = spec.model
    sizes, backend = sym.sizes(), NumPyBackend()
    keep = KEEP[m.cell]
    _, adjoint = STATE_ADJOINT[m.cell]
    L = m.layers
    values: dict[tuple, np.ndarray] = {}

    def key(s: sp.MatrixSymbol, n: int) -> tuple:
        q = sym.info[s]
        return (q.role, q.layer, q.gate, n)

    def bind(exprs: list[sp.Expr], n: int, base: dict) -> dict:
        """Step n's values of every quantity the rule's expressions read (t -> n); what was
        never computed (the adjoints after the last step) is 0."""
        env = dict(base)
        for e in exprs:
            for s in e.atoms(sp.MatrixSymbol):
                q = sym.info.get(s)
                if q is not None and q.time is not None and s not in env:
                    step = int(q.time.xreplace({t: n}))
                    env[s] = values.get((q.role, q.layer, q.gate, step), np.zeros(_shape(s, sizes)))
        return env

    h_top = sym("hidden", L, t)
    g = np.full(_shape(h_top, sizes), 1 / np.sqrt(m.hidden_sizes[-1]))
    out: dict[float, list[float]] = {}
    for value in GATE_VALUES:
        base = {}
        for p in sym.params():
            q = sym.info[p]
            if q.role in BIASES:
                fill = np.log(value / (1 - value)) if (q.role, q.gate) == ("bias", keep) else 0.0
                base[p] = np.full(params[p].shape, fill)
            else:
                base[p] = params[p]
        values.clear()
        for n in range(1, LONG + 1):
            for layer in rule.layers:
                env = bind([a.rhs for a in layer.forward], n, base)
                for a in layer.forward:
                    env[a.lhs] = values[key(a.lhs, n)] = evaluate(a.rhs, env, backend, sizes)
        values[("hidden_grad", L, None, LONG)] = g
        for n in range(LONG, 0, -1):
            for layer in reversed(rule.layers):
                exprs = [a.rhs for a in layer.delta] + ([layer.down] if layer.layer > 1 else [])
                env = bind(exprs, n, base)
                for a in layer.delta:
                    env[a.lhs] = values[key(a.lhs, n)] = evaluate(a.rhs, env, backend, sizes)
                if layer.layer > 1:
                    values[("hidden_grad", layer.layer - 1, None, n)] = evaluate(layer.down, env, backend, sizes)
        out[value] = [float(np.linalg.norm(values[(adjoint, L, None, LONG - n)])) for n in range(LONG)]
    return out


def compute(d: Derivation, command: str) -> Numbers:
    """The numbers stage of `derive.build.render`: the worked example, then the measured
    gradient norms: for an Elman cell from the generated module (loop style) rendered in
    memory, for a gated cell from the derivation's step rule (`gated_vanishing`)."""
    from derive.formats import FORMATS, Job
    numbers = worked_example(d)
    if d.sym.cell.GATES:
        numbers.vanishing = gated_vanishing(d, numbers.values)
        return numbers
    name = d.spec.name
    source = FORMATS["py"].render(Job(d, None, command, "loop"))[f"{name}.py"].decode("utf-8")
    numbers.vanishing = vanishing(d, module_namespace(source, name), numbers.params)
    return numbers
