"""The generated NumPy module, `<name>.py`: its format class and its view-model. Every line
of math is printed by `LoopCodePrinter` from the step rule (loop style) or from the
unrolled recursion (unrolled style); the template only places the lines.

Arrays are time-major. Hidden states live in `h_l` of shape (T + 1, B, H_l) with h_l[0] = h0
(so step t of the handout is index t), and the input projection of all steps is written
into h_l[1:] before the loop overwrites it step by step. Deltas live in `delta_h_l` of
shape (T, B, H_l), which first holds the slope f'(a_t) of every step; the last step's rule is
peeled off the loop. With truncation they are (T + 1, k, B, H_l): one row per age, and a
zero row for delta_{T+1}.

The loss allocates little (issue 15): the logits are written into one (T, B, classes)
buffer that becomes the softmax and then dE/dz in place, class targets are read at their
index (the loss table's `gathered` form: no one-hot rows), and that buffer is released
before the recursion runs.

The opt-in workspace (issue 15) is buffer management only: every large scratch array is
allocated by `_empty(ws, key, shape, dtype)` (`templates/helpers/_workspace.py.j2`), which
is `np.empty` without a workspace and the workspace's buffer `key` with one. A key is
always a name the `Namer` hands out (the local's own name, or a template name), so two
buffers that can be alive at once never share one; the one deliberate sharing is the top
layer's deltas taking the key "logits", whose buffer is dead once the recursion starts.
Every buffer is written whole before it is read, and nothing returned is allocated there
(gradients, the loss, `grads["xs"]` and `h_final` are new arrays; `forward`'s cache never
lives there).
"""
from __future__ import annotations

import builtins
import keyword
import pprint
import re
from typing import TYPE_CHECKING, ClassVar

import sympy as sp

from derive.document import equation_labels
from derive.emit import render
from derive.emit.printers import LoopCodePrinter
from derive.formats.base import Format, Job
from derive.emit.gated import layers_view as gated_layers
from derive.spec import SpecError
from derive.matrices import LogSumExp, elementwise
from derive.rules import ACTIVATIONS, LOSSES
from derive.rules.losses import Pick
from derive.symbols import t

if TYPE_CHECKING:   # the derivation is this stage's input, never called here
    from derive.bptt import Derivation

#: The names the module templates bind in the functions that also bind the user's symbols
#: (their locals, the module's globals and helpers). A local printed from the user's
#: symbols never takes one of them: `Namer` renames it.
TEMPLATE_NAMES = frozenset({
    "np", "xs", "hs", "h0", "params", "cache", "grads", "targets", "dhs", "loss", "t", "T",
    "B", "p", "g", "gv", "y", "tmp", "slope", "dtype", "probs", "logits", "dlogits", "dtop",
    "check_finite", "name",
    "PARAMS", "LAYOUT", "SPEC", "forward", "backward", "predict", "init_params", "loss_and_grads",
    "_HIDDEN", "_TRUNCATE", "_CLIP", "_forward", "_backward", "_finish", "_as_array", "_check_array",
    "_check_finite", "_check_xs", "_check_h0", "_check_targets", "_check_cache",
    # training loops (issue 13)
    "step", "to_torch", "from_torch", "tokens", "clip", "clip_norm", "return_state",
    "_CLIP_NORM", "_TORCH", "_predict", "_check_clip",
    # fused loss (issue 15)
    "lse", "picked", "older",
    # the opt-in workspace (issue 15): its locals, and the keys of its buffers that are not
    # a symbol's local (a key is always a name the Namer hands out, so keys never clash)
    "workspace", "ws", "private", "states", "dtop_all", "Workspace", "_check_workspace", "_empty",
    "_state_copy",
    # gated cells (issue 14)
    "nxt",
})
#: Helpers a module defines only when its code calls them (templates/helpers/<name>.py.j2).
HELPERS = ("_matmul_steps", "_contract_steps", "_scatter_steps", "_older", "_softmax", "_softmax_lse", "_logsumexp",
           "_add_at", "_one_hot", "_transposed")


class Namer:
    """Local names for the user's symbols that clash with nothing the module binds (as
    Tangent's naming.py): a clash gets a trailing underscore."""

    def __init__(self) -> None:
        self.taken = set(TEMPLATE_NAMES) | set(HELPERS) | set(dir(builtins))
        self.chosen: dict[str, str] = {}

    def __call__(self, base: str) -> str:
        if base not in self.chosen:
            name = base
            while name in self.taken or keyword.iskeyword(name) or keyword.issoftkeyword(name):
                name += "_"
            self.taken.add(name)
            self.chosen[base] = name
        return self.chosen[base]


def used_helpers(view: dict) -> list[str]:
    """The optional helpers that the view's printed lines call, in `HELPERS` order (the
    templates themselves call none of them)."""
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for value in x.values():
                yield from strings(value)
        elif isinstance(x, (list, tuple)):
            for value in x:
                yield from strings(value)

    text = "\n".join(strings(view))
    return [h for h in HELPERS if re.search(rf"\b{h}\(", text)]


def _param_view(sym, local: Namer) -> list[dict]:
    out = []
    sizes = sym.sizes()
    for p in sym.params():
        q = sym.info[p]
        shape = tuple(int(sp.sympify(d).xreplace(sizes)) for d in p.shape)
        if q.role in ("bias", "output_bias", "recurrent_bias"):
            shape = (max(shape),)
        name = sym.names.python(q.role, q.layer, q.gate)
        out.append({"name": name, "local": local(name), "role": q.role, "layer": q.layer,
                    "shape": repr(shape), "gate": repr(q.gate), "gate_letter": q.gate})
    return out


def _elman_layers(rule, spec, local: Namer, refs: dict, params: list[dict], h: dict, delta: dict) -> list[dict]:
    """The per-layer view of `module_loop.py.j2` for an Elman cell: forward and backward
    lines printed from the step rule's projection, recurrence, activation and delta."""
    sym, m = rule.sym, spec.model
    names = sym.names
    chunk = spec.bptt.truncate_style == "chunk"
    k = 0 if chunk else spec.bptt.truncate     # window truncation: the age axis

    def printer(extra: dict, steps: bool = False) -> LoopCodePrinter:
        return LoopCodePrinter(sym, {**refs, **extra}, steps)

    layers = []
    for lr in rule.layers:
        l = lr.layer
        H = m.hidden_sizes[l - 1]
        hv, dv = local(f"{h[l]}v"), local(f"{delta[l]}v")   # lists of per-step views: cheap to index
        below_step = sym("input", None, t) if l == 1 else sym("hidden", l - 1, t)
        below_all = "xs" if l == 1 else f"{h[l - 1]}[1:]"
        # forward: the projection of all steps is one matrix product written into h[1:];
        # per step the recurrent term is added and the activation applied, in place
        forward_all = printer({below_step: below_all}, steps=True).accumulate(f"{h[l]}[1:]", lr.projection)
        forward_tokens = []
        if l == 1:   # token inputs: the input weight's rows that the tokens pick
            gather = printer({below_step: "xs"}, steps=True)
            gather.tokens = {below_step: m.input_size}
            forward_tokens = [*_transposed_copies(gather, lr.projection, local),
                              *gather.accumulate(f"{h[l]}[1:]", lr.projection)]
        step = printer({sym("hidden", l, t - 1): f"{hv}[t]"})
        forward_copies = _transposed_copies(step, lr.recurrence, local)
        forward_step = [*step.accumulate("tmp", lr.recurrence), f"{hv}[t + 1] += tmp",
                        *step.activate(f"{hv}[t + 1]", lr.activation.function)]
        # backward: delta_t = (upstream + recurrent term) * slope; the slope of all steps
        # comes at once from the stored h (tanh' = 1 - h^2)
        delta_rule = lr.delta[0].rhs
        # with a workspace, the top layer's deltas take the logits' bytes: loss_and_grads has
        # released the logits before the recursion runs (the workspace holds one buffer less)
        delta_key = "logits" if l == m.layers and m.output_size else None
        total_part, slope_part = (delta_rule.args if isinstance(delta_rule, sp.HadamardProduct)
                                  else (delta_rule, None))
        slope_printer = printer({}, steps=True)

        def slope_into(target: str) -> list[str]:
            """f'(a_t) of every step at once, from the stored h, written into `target`."""
            return slope_printer.apply_into(target, slope_part.function, f"{h[l]}[1:]")

        if k:
            # each delta carries an age axis; delta_{t+1} is read one step older
            # the older deltas are shifted into one buffer allocated once per layer
            step_refs = {sym("hidden_grad", l, t): "g[t]", sym("delta", l, t + 1): f"_older({delta[l]}[t + 1], older)"}
            back = printer(step_refs)
            setup = _transposed_copies(back, total_part, local)
            if slope_part is not None:
                setup += [_empty("slope", f"(T, B, {H})"), *slope_into("slope")]
            setup += [_empty(delta[l], f"(T + 1, _TRUNCATE, B, {H})", delta_key), f"{delta[l]}[...] = 0"]
            setup.append(_empty("older", f"(_TRUNCATE, B, {H})"))
            backward_step = back.accumulate(f"{delta[l]}[t]", total_part)
            backward_step += [f"{delta[l]}[t] *= slope[t]"] if slope_part is not None else []
            total_line = None   # the ages summed, below
        else:
            # the last step has no delta_{T+1}: its rule (the step rule with delta_{t+1} = 0)
            # is peeled off the loop, so the delta buffer needs no zero row
            step_refs = {sym("hidden_grad", l, t): "gv[t]", sym("delta", l, t + 1): f"{dv}[t + 1]"}
            back = printer(step_refs)
            last = printer({sym("hidden_grad", l, t): "gv[T - 1]"})
            boundary = total_part.xreplace({sym("delta", l, t + 1): sp.ZeroMatrix(*total_part.shape)}).doit()
            setup = [*_transposed_copies(back, total_part, local), _empty(delta[l], f"(T, B, {H})", delta_key)]
            if slope_part is not None:
                # the slope is written into the delta buffer, which then becomes the delta
                setup += [*slope_into(delta[l]), f"{dv}, gv = list({delta[l]}), list(g)",
                          f"{dv}[T - 1] *= {last.vector(boundary)}"]
                backward_step = [*back.accumulate("tmp", total_part), f"{dv}[t] *= tmp"]
            else:
                setup += [f"{dv}, gv = list({delta[l]}), list(g)",
                          *last.accumulate(f"{dv}[T - 1]", boundary)]
                backward_step = back.accumulate(f"{dv}[t]", total_part)
            total_line = delta[l]
        # chunked truncation: a step that ends a chunk gets no delta from the next chunk,
        # so it takes the last step's rule (the step rule with delta_{t+1} = 0)
        chunk_step = []
        if chunk and spec.bptt.truncate:
            border = printer({sym("hidden_grad", l, t): "gv[t]"})
            chunk_step = ([f"{dv}[t] *= {border.vector(boundary)}"] if slope_part is not None
                          else border.accumulate(f"{dv}[t]", boundary))
        total = local(f"{delta[l]}_sum")
        if k:
            total_line = f'np.sum({delta[l]}[:-1], axis=1, out=_empty(ws, "{total}", (T, B, {H}), dtype))'
        total_refs = {sym("delta", l, t): total, below_step: below_all,
                      sym("hidden", l, t - 1): f"{h[l]}[:-1]"}
        key = {p: names.python(sym.info[p].role, sym.info[p].layer) for p in sym.params()}
        scatter = printer(total_refs, steps=True)
        scatter.tokens = {below_step: m.input_size} if l == 1 else {}
        grads = [{"name": key[p], "expr": printer(total_refs, steps=True).total(e),
                  "tokens_expr": scatter.total(e) if below_step in e.free_symbols and l == 1 else ""}
                 for p, e in lr.uses.items()]
        grads.sort(key=lambda g: [x["name"] for x in params].index(g["name"]))
        # the gradient sent below: per age for a lower layer, summed for xs
        # a lower layer's upstream is a scratch buffer (xs's gradient is returned: a new array)
        down_printer = printer({sym("delta", l, t): f"{delta[l]}[:-1]" if k else delta[l]}, steps=True)
        down_into = []
        if l > 1:
            shape = f"(T, _TRUNCATE, B, {m.hidden_sizes[l - 2]})" if k else f"(T, B, {m.hidden_sizes[l - 2]})"
            down_into = [_empty("g", shape, local(f"{delta[l]}_down")), *down_printer.accumulate("g", lr.down)]
        down_sum = printer({sym("delta", l, t): total}, steps=True).vector(lr.down)
        h0 = printer({sym("delta", l, sp.Integer(1)): f"{total}[0]"}).vector(rule.initial[l])
        layers.append({
            "layer": l, "h": h[l], "hv": hv, "delta": delta[l], "size": H,
            "forward_all": forward_all, "forward_tokens": forward_tokens,
            "forward_copies": forward_copies, "forward_step": forward_step, "chunk_step": chunk_step,
            "backward_setup": setup, "backward_step": backward_step, "total_line": total_line,
            "first_step": "T - 1" if k else "T - 2",
            "grads": grads, "total": total, "down": down_sum, "down_into": down_into,
            "down_is_xs": l == 1, "h0": h0,
            "param_locals": [x for x in params if x["layer"] == l],
            "step_state": f'cache["{h[l]}"][1]',
        })
    return layers


def module_view(derivation: "Derivation", command: str, template: str, local: Namer | None = None) -> dict:
    rule, spec = derivation.rule, derivation.spec
    sym, m = rule.sym, spec.model
    names = sym.names
    L = m.layers
    chunk = spec.bptt.truncate_style == "chunk"
    k = 0 if chunk else spec.bptt.truncate     # window truncation: the age axis
    local = local or Namer()
    params = _param_view(sym, local)
    h = {l: local(names.python("hidden", l)) for l in range(1, L + 1)}
    delta = {l: local("delta_" + h[l]) for l in range(1, L + 1)}
    refs: dict = {p: local(names.python(sym.info[p].role, sym.info[p].layer, sym.info[p].gate)) for p in sym.params()}

    def printer(extra: dict, steps: bool = False) -> LoopCodePrinter:
        return LoopCodePrinter(sym, {**refs, **extra}, steps)

    # the layers: an Elman cell's from `_elman_layers`, a gated cell's from derive/emit/gated.py
    if sym.cell.GATES:
        layers = gated_layers(rule, spec, local, refs, params)
    else:
        layers = _elman_layers(rule, spec, local, refs, params, h, delta)
    output = None
    loss = LOSSES[spec.loss.kind]
    top = sym("hidden", L, t)
    if m.output_size:
        o_refs = {top: "hs", sym("logits", None, t): "logits", sym("output", None, t): "probs",
                  sym("target", None, t): "y", sym("upstream", None, t): "targets"}
        pr = printer(o_refs, steps=True)
        logits_expr = next(a.rhs for a in rule.output if sym.info[a.lhs].role == "logits")
        pred = [a.rhs for a in rule.output if sym.info[a.lhs].role == "output"]
        d_refs = {**o_refs, sym("output_delta", None, t): "dlogits"}
        loss_refs = {**o_refs, sym("upstream", None, t): "y"}
        key = {p: names.python(sym.info[p].role, sym.info[p].layer, sym.info[p].gate) for p in sym.params()}
        target = sym("target", None, t)
        at = derivation.unrolled.at(t)
        # the loss value: with class targets, y . z is read at the class index (no one-hot)
        fused = loss.target == "class" and loss.gathered is not None
        fused_pr = FusedPrinter(sym, {**refs, **loss_refs}, steps=True)
        loss_expr = loss.gathered(at) if fused else loss.stable(at)
        picks = []
        if fused:
            # the logits at the class index are read before the softmax overwrites them
            for pick in sorted(loss_expr.atoms(Pick), key=str):
                picks.append(f"picked = {fused_pr._print(pick)}")
                fused_pr.fused[pick] = "picked"
            fused_pr.fused[LogSumExp(sym("logits", None, t))] = "lse"
        output = {
            "logits": pr.vector(logits_expr),
            "logits_into": pr.accumulate("logits", logits_expr),
            "prediction": pr.vector(pred[0]) if pred else "logits",
            "dlogits": _fused_rule(printer(d_refs, steps=True), rule.output_delta.rhs, target,
                                   "probs" if fused else None, fused),
            "dtop_into": [_empty("dtop", f"hs.shape[:2] + ({m.hidden_sizes[-1]},)"),
                          *printer(d_refs, steps=True).accumulate("dtop", rule.top_upstream)],
            "grads": [{"name": key[p], "expr": printer(d_refs, steps=True).total(e)} for p, e in rule.output_uses.items()],
            "locals": [x for x in params if x["layer"] == L + 1],
            "target": "targets[..., None]" if loss.target == "class" else "targets",
            "loss": fused_pr.grand_total(loss_expr),
            "picks": picks,
        }
        probs = ("_softmax(logits)" if m.output_activation == "softmax" or spec.loss.kind == "cross_entropy"
                 else output["prediction"])
        if spec.loss.kind == "bce":
            probs = printer({sym("logits", None, t): "logits"}, steps=True).vector(
                elementwise(ACTIVATIONS["sigmoid"].value, sym("logits", None, t)))
        # softmax and log-sum-exp from one exp, in place in the logits' buffer
        output["probs"] = "_softmax_lse(logits)" if fused else probs
        output["probs_names"] = "probs, lse" if fused else "probs"
        dtop = loss_line = dtop_scale = None
    else:  # no output layer: the loss (or the upstream gradient) acts on the top hidden states
        d_refs = {top: "hs", sym("target", None, t): "targets", sym("upstream", None, t): "targets"}
        # the residual is computed once: the loss reads it (as dtop) before it is scaled
        dtop, loss_line, dtop_scale = _fused_top(FusedPrinter(sym, {**refs, **d_refs}, steps=True), rule.top_upstream,
                                                 sym("target", None, t), loss.stable(derivation.unrolled.at(t)))
    return {
        "name": spec.name, "title": spec.title or spec.name, "command": command, "template": template,
        "params": params, "layout": spec.layout, "spec_repr": pprint.pformat(spec.to_dict(), sort_dicts=False, width=88),
        "layers": layers, "top": h[L], "top_size": m.hidden_sizes[-1], "num_layers": L,
        "input_size": m.input_size, "output_size": m.output_size, "output": output, "dtop": dtop, "dtop_scale": dtop_scale,
        "loss": loss_line, "class_targets": loss.target == "class",
        "probability_targets": loss.target == "probability", "loss_kind": spec.loss.kind, "last_step": spec.loss.at == "last_step",
        "mean": spec.loss.reduction == "mean", "truncate": k, "chunk": spec.bptt.truncate if chunk else 0,
        "truncate_value": spec.bptt.truncate, "clip": repr(float(spec.bptt.clip)),
        "clip_norm": repr(float(spec.bptt.clip_norm)), "torch": _torch_view(params, spec, sym.cell.GATES), "pad_steps": 0,
        "torch_out": '"out.weight" and "out.bias"' if m.bias else '"out.weight"',
        "hidden_sizes": repr(list(m.hidden_sizes)), "reversed_layers": list(reversed(layers)),
        "output_activation": m.output_activation,
        "state_pairs": len(sym.cell.STATE) > 1,
        "torch_module": {"elman": "RNN", "lstm": "LSTM", "gru": "GRU"}[m.cell],
        "torch_gates": ", ".join(sym.cell.GATES) if sym.cell.GATES else "(one block: no gates)",
        "torch_hh_note": (" (the n gate's bias_hh block is its recurrent_bias)"
                          if m.cell == "gru" and m.gru_reset == "after" and m.bias else ""),
        "cache_size": (str(3 + sum(len(x["cache_entries"].split(":")) - 1 for x in layers)) if sym.cell.GATES
                       else "len(_HIDDEN) + 3"),
        "style_note": "loop style", "math_note": "'s generic step rule",
    }


class FusedPrinter(LoopCodePrinter):
    """The loop printer, plus the forms the module computes fused: `fused` maps an
    expression to the name of the buffer that already holds it (log-sum-exp beside the
    softmax), and `Pick` prints as a gather at the class index."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused: dict[sp.Expr, str] = {}

    def _print(self, expr, **kwargs) -> str:
        if isinstance(expr, sp.Basic) and expr in self.fused:
            return self.fused[expr]
        return super()._print(expr, **kwargs)

    def _paren(self, expr: sp.Expr) -> str:
        return self.fused[expr] if expr in self.fused else super()._paren(expr)

    def _print_Pick(self, expr: Pick) -> str:
        return f"np.take_along_axis({self.vector(expr.arg)}, {self.refs[expr.target]}, axis=-1)"


def _split_target(expr: sp.MatrixExpr, target: sp.MatrixSymbol) -> tuple[sp.Expr, sp.MatrixExpr, sp.Expr] | None:
    """expr = scale * (rest + sign * target), or None when it has no such form."""
    scale, body = expr.as_coeff_mmul() if isinstance(expr, sp.MatMul) else (sp.Integer(1), expr)
    if isinstance(body, sp.MatMul) and len(body.args) == 1:
        body = body.args[0]
    if not isinstance(body, sp.MatAdd):
        return None
    rest, sign = [], None
    for term in body.args:
        coeff, core = term.as_coeff_mmul() if isinstance(term, sp.MatMul) else (sp.Integer(1), term)
        core = core.args[0] if isinstance(core, sp.MatMul) and len(core.args) == 1 else core
        if core == target and sign is None and coeff in (1, -1):
            sign = coeff
        elif target in term.free_symbols:
            return None
        else:
            rest.append(term)
    if sign is None or not rest:
        return None
    return scale, sp.MatAdd(*rest) if len(rest) > 1 else rest[0], sign


def _fused_rule(pr: LoopCodePrinter, expr: sp.MatrixExpr, target: sp.MatrixSymbol, buffer: str | None,
                class_target: bool) -> list[str]:
    """dE/dz written into `dlogits` in place: the part without the target (in the buffer
    that already holds it, when `buffer` names one), then the target added at its class
    index (class targets) or subtracted whole, then the reduction's scale."""
    split = _split_target(expr, target)
    if split is None:
        return [f"dlogits = {pr.vector(expr)}"]
    scale, rest, sign = split
    lines = [f"dlogits = {buffer}" if buffer else f"dlogits = {pr.vector(rest)}"]
    if class_target:
        lines.append(f"_add_at(dlogits, {pr.refs[target]}, {int(sign)})")
    else:
        lines.append(f"dlogits {'+' if sign > 0 else '-'}= {pr.vector(target)}")
    if scale != 1:
        lines.append(f"dlogits *= {pr._print(scale)}")
    return lines


def _fused_top(pr: LoopCodePrinter, expr: sp.MatrixExpr, target: sp.MatrixSymbol,
               loss: sp.MatrixExpr) -> tuple[list[str], str, list[str]]:
    """Without an output layer: dtop = scale * residual in place, the loss reading the
    residual from dtop before it is scaled (when the loss is 1/2 residual . residual)."""
    split = _split_target(expr, target)
    if split is None:
        return [f"dtop = {pr.vector(expr)}"], pr.grand_total(loss), []
    scale, rest, sign = split
    residual = rest + sign * target
    lines = [_empty("dtop", "hs.shape"), *pr.accumulate("dtop", residual)]
    reader = FusedPrinter(pr.sym, pr.refs, steps=True)
    reader.fused.update({residual: "dtop", residual.T: "dtop"})
    text = reader.grand_total(loss)
    return lines, text, [f"dtop *= {pr._print(scale)}"] if scale != 1 else []


def _torch_view(params: list[dict], spec, gates: tuple[str, ...]) -> list[dict]:
    """Each parameter's key in the state_dict of torch.nn.RNN / LSTM / GRU (+ nn.Linear `out`),
    its block there (torch stacks the gates' rows in its gate order, which is the cells'),
    whether it is stored transposed (torch keeps every weight as (out_features,
    in_features), as the column layout does), and the key of the second torch bias that
    from_torch adds into it (none for the GRU's n gate with reset after: torch's bias_hh
    block of n is that gate's recurrent_bias)."""
    rows = []
    gru_after = spec.model.cell == "gru" and spec.model.gru_reset == "after" and spec.model.bias
    for x in params:
        k = x["layer"] - 1
        key = {"input_weight": f"weight_ih_l{k}", "recurrent_weight": f"weight_hh_l{k}", "bias": f"bias_ih_l{k}",
               "recurrent_bias": f"bias_hh_l{k}", "output_weight": "out.weight", "output_bias": "out.bias"}[x["role"]]
        gate = x["gate_letter"]
        added = x["role"] == "bias" and not (gru_after and gate == "n")
        rows.append({"name": x["name"], "key": key, "hh_key": f"bias_hh_l{k}" if added else "",
                     "block": gates.index(gate) if gate else 0, "blocks": len(gates) if gate else 1,
                     "transpose": spec.layout == "row" and "weight" in x["role"]})
    return rows


def _transposed_copies(printer: LoopCodePrinter, expr: sp.MatrixExpr, local: Namer) -> list[str]:
    """Contiguous copies of the weights a loop uses transposed; the printer then uses them."""
    lines = []
    for weight in printer.transposes(expr):
        name = local(printer.refs[weight] + "T")
        printer.transposed[weight] = name
        lines.append(f'{name} = _transposed(ws, "{name}", {printer.refs[weight]})')
    return lines


def _empty(name: str, shape: str, key: str | None = None) -> str:
    """`name = _empty(ws, key, shape, dtype)`: a new array, or the workspace's buffer `key`
    (by default the local's own name: every key is a name the Namer hands out, so two
    buffers that can be alive together never share one)."""
    line = f'{name} = _empty(ws, "{key or name}", {shape}, dtype)'
    return line + "   # the logits' bytes: loss_and_grads is done with them" if key == "logits" else line


def unrolled_view(derivation: "Derivation", labels: dict, command: str, template: str) -> dict:
    """Straight-line code for the spec's T: the handout's equations one by one, labelled
    with the handout's `labels`.

    The recurrent part is unrolled; the output layer and the loss are shared with the loop
    style (they have no recurrence). The deltas are seeded by the gradient `dtop` arriving
    at the top hidden states, so `backward(dhs)` and `loss_and_grads` share them.
    """
    local = Namer()
    view = module_view(derivation, command, template, local)
    spec, unrolled = derivation.spec, derivation.unrolled
    sym, m = unrolled.sym, spec.model
    L, T = m.layers, spec.bptt.steps
    h = {l["layer"]: l["h"] for l in view["layers"]}
    refs: dict = {p: x["local"] for p, x in zip(sym.params(), view["params"])}
    for time in range(0, T + 1):
        for l in range(1, L + 1):
            refs[sym("hidden", l, sp.Integer(time))] = f"{h[l]}[{time}]"
        if time:
            refs[sym("input", None, sp.Integer(time))] = f"xs[{time - 1}]"
            refs[sym("hidden_grad", L, sp.Integer(time))] = f"dtop[{time - 1}]"
    pr = LoopCodePrinter(sym, refs)
    recurrent = [a for a in unrolled.forward if a.layer is not None and a.layer <= L]
    forward_steps = []
    pre = {}
    for a in recurrent:
        q = sym.info[a.lhs]
        if q.role == "pre_activation":
            pre[a.lhs] = a.rhs
            continue
        rhs = a.rhs.func(a.rhs.function, pre[a.rhs.expr])
        forward_steps.append({"lhs": refs[a.lhs], "rhs": pr.vector(rhs),
                              "label": f"{labels['fwd', a.rhs.expr]}, {labels['fwd', a.lhs]}",
                              "time": int(q.time), "layer": q.layer})
    back = derivation.upstream
    deltas = []
    for d in back.deltas:
        q = sym.info[d.lhs]
        name = local(f"delta_{h[q.layer]}_{int(q.time)}" + (f"_{q.age}" if q.age is not None else ""))
        refs[d.lhs] = name
        deltas.append({"lhs": name, "rhs": pr.vector(d.rhs),
                       "label": labels.get(("delta", d.lhs), "")})
    grads = []
    for p in sym.params():
        uses = back.uses.get(p)
        q = sym.info[p]
        if q.layer > L:
            continue
        total = sp.MatAdd(*[e for _, e in uses]) if len(uses) > 1 else uses[0][1]
        text = f"({pr.vector(total)}).sum(axis=0)" if q.role == "bias" else pr._print(total)
        grads.append({"name": sym.names.python(q.role, q.layer), "expr": text, "label": labels["total", p]})
    leaves = {leaf: sp.MatAdd(*e) if len(e) > 1 else e[0] for leaf, e in back.leaves.items()}
    xs_grads = [{"index": time - 1, "expr": pr.vector(leaves[sym("input", None, sp.Integer(time))])}
                for time in range(1, T + 1)]
    h0_grads = [{"index": l - 1, "expr": pr.vector(leaves[sym("hidden", l, sp.Integer(0))])}
                for l in range(1, L + 1)]
    view.update({"style_note": f"unrolled for T = {T}", "math_note": ", labelled with its handout equation",
                 "pad_steps": T - 1,
                 # token indices read as one-hot rows (the straight-line form has no gather)
                 "tokens_forward": f"_one_hot(tokens, {m.input_size}, dtype)",
                 "tokens_backward": f'_one_hot(xs, {m.input_size}, cache["h_final"][0].dtype)',
                 "steps": T, "forward_steps": forward_steps, "deltas": deltas,
                 "unrolled_grads": grads, "xs_grads": xs_grads, "h0_grads": h0_grads})
    return view


#: code style -> template
STYLES = {"loop": "module_loop.py.j2", "unrolled": "module_unrolled.py.j2"}


class ModuleFormat(Format):
    name: ClassVar[str] = "py"

    def files(self, name: str) -> list[str]:
        return [f"{name}.py"]

    def render(self, job: Job) -> dict[str, bytes]:
        template = STYLES[job.style]
        if job.derivation.sym.cell.GATES:
            if job.style != "loop":
                raise SpecError([f"style: {job.style!r} is not built for {job.derivation.spec.model.cell} cells yet; use 'loop'"])
            template = "module_gated.py.j2"
        if job.style == "loop":
            view = module_view(job.derivation, job.command, template)
        else:
            view = unrolled_view(job.derivation, equation_labels(job.derivation), job.command, template)
        # a module defines only the helpers its printed lines call
        code = render.render(template, {**view, "helpers": used_helpers(view)})
        return {f"{job.name}.py": code.encode("utf-8")}
