"""The generated module's layers for gated cells (LSTM, GRU): the view-model of
`module_gated.py.j2`. Every line is printed by `LoopCodePrinter` from the step rule.

Per layer the gates live side by side in one buffer (T, B, n_gates * H), in PyTorch's gate
order: the input projections of all gates and all steps are one matrix product with the
gates' input weights stacked, then step by step the recurrent products of all gates that
read the same vector are one product with the stacked recurrent weights. The pre-
activations become the gate values in place. Subexpressions that the backward pass reads
again (tanh(c_t) of the LSTM, U_n h_{t-1} + c_n of the GRU with reset after) are stored in
the forward pass; a slope written through such an argument (1 - tanh(c_t)^2) is rewritten
through the stored value (1 - s^2), with the activation table's slope.

Backward, each named adjoint (the gates' deltas, side by side like the gates, δ^h, δ^c)
has a buffer of T + 1 steps whose last row stays zero: step t reads step t + 1's adjoints
from it, so the last step needs no rule of its own. A chunk border reads that zero row.
Window truncation gives every adjoint an age axis, as for Elman cells.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from derive.emit.printers import LoopCodePrinter
from derive.matrices import elementwise
from derive.rules import ACTIVATIONS, u, v
from derive.symbols import Quantity, t

if TYPE_CHECKING:
    from derive.bptt import StepRule


class _Stacks:
    """Stacked parameters of one layer: the gates' weights (or biases) of one role side by
    side, as one matrix symbol whose ref is a local built by np.concatenate."""

    def __init__(self, rule: "StepRule", layer: int, local, refs: dict):
        self.sym, self.layer, self.local, self.refs = rule.sym, layer, local, refs
        self.gates = rule.sym.cell.GATES
        self.lines: list[str] = []
        self.made: dict[tuple, sp.MatrixSymbol] = {}
        self.printers: list[LoopCodePrinter] = []   # printers that read the stacked weights

    def of(self, role: str, gates: tuple[str, ...]) -> sp.MatrixSymbol:
        key = (role, gates)
        if key not in self.made:
            sym = self.sym
            parts = [sym(role, self.layer, gate=k) for k in gates]
            n = len(gates)
            rows, cols = parts[0].shape
            # side by side along the hidden axis: rows in column layout, columns in row layout
            shape = (rows, n * cols) if sym.row else (n * rows, cols)
            stacked = sp.MatrixSymbol(f"{role}[{self.layer}]@stack:{''.join(gates)}", *shape)
            sym.info[stacked] = Quantity(role, self.layer, None, None, "".join(gates))
            name = self.local(f"{self.refs[parts[0]]}_{''.join(gates)}" if len(gates) < len(self.gates)
                              else f"{role.split('_')[0]}_{self.layer}_stacked")
            axis = 1 if sym.row and not role.endswith("bias") else 0   # biases are 1-D arrays
            sizes = sym.sizes()
            whole = tuple(int(sp.sympify(d).xreplace(sizes)) for d in shape)
            whole = (max(whole),) if role.endswith("bias") else whole
            self.lines.append(f"{name} = np.concatenate([{', '.join(self.refs[p] for p in parts)}]"
                              + (f", axis={axis}" if axis else "") + f', out=_empty(ws, "{name}", {whole}, dtype))')
            self.refs[stacked] = name
            self.made[key] = stacked
        return self.made[key]


def _gate_product(sym, expr: sp.Expr, transposed: bool = False) -> tuple[sp.MatrixSymbol, sp.Expr] | None:
    """A gate weight times a vector, W_k v (v W_k in row layout), or with `transposed` its
    transpose times one, W_k^T y (y W_k^T): (W_k, the vector)."""
    if not isinstance(expr, sp.MatMul):
        return None
    coeff, factors = expr.as_coeff_matrices()
    if coeff != 1 or len(factors) != 2:
        return None
    w, vec = (factors[1], factors[0]) if sym.row else factors
    if transposed != isinstance(w, sp.Transpose):
        return None
    w = w.arg if transposed else w
    if isinstance(w, sp.MatrixSymbol) and sym.info[w].gate and sym.info[w].role.endswith("weight"):
        return w, vec
    return None


def _placeholder(sym, name: str, like: sp.MatrixExpr, layer: int) -> sp.MatrixSymbol:
    """A vector symbol that the printer reads from a buffer (a stored or stacked value)."""
    holder = sp.MatrixSymbol(name, *like.shape)
    sym.info[holder] = Quantity("saved", layer, None, None, name)
    return holder


def _stack_transposed(sym, stacks: _Stacks, expr: sp.Expr, holder_ref) -> tuple[sp.Expr, list[str]]:
    """Σ_k W_k^T y_k over gates of one role, as [y_i, y_f, ...] [W_i; W_f; ...]: one product.
    `holder_ref(members)` gives the buffer holding the y_k side by side (and lines that fill it)."""
    lines: list[str] = []

    def visit(e):
        if isinstance(e, sp.MatAdd):
            args = [visit(a) for a in e.args]
            groups: dict = {}
            rest = []
            for a in args:
                found = _gate_product(sym, a, transposed=True)
                if found is None:
                    rest.append(a)
                else:
                    groups.setdefault(sym.info[found[0]].role, []).append((sym.info[found[0]].gate, found[1], a))
            for role, members in groups.items():
                if len(members) < 2:
                    rest += [m[2] for m in members]
                    continue
                members.sort(key=lambda m: stacks.gates.index(m[0]))
                gates = tuple(m[0] for m in members)
                got = holder_ref([(m[0], m[1]) for m in members])
                if got is None:   # nothing holds the y_k side by side here: one product per gate
                    rest += [m[2] for m in members]
                    continue
                ref, fill = got
                W = stacks.of(role, gates)
                for printer in stacks.printers:
                    printer.refs.update(stacks.refs)
                lines.extend(fill)
                like = sp.MatrixSymbol("_", *((1, W.shape[1]) if sym.row else (W.shape[0], 1)))
                holder = _placeholder(sym, f"stack:{ref}", like, stacks.layer)
                stacks.refs[holder] = ref
                for printer in stacks.printers:
                    printer.refs.update(stacks.refs)
                rest.append(sp.MatMul(holder, W.T) if sym.row else sp.MatMul(W.T, holder))
            return sp.MatAdd(*rest) if len(rest) > 1 else rest[0]
        if isinstance(e, (sp.HadamardProduct, sp.MatMul, sp.Transpose)):
            new = [visit(a) if isinstance(a, sp.MatrixExpr) else a for a in e.args]
            return e.func(*new) if new != list(e.args) else e
        return e

    return visit(expr), lines


def _stored_slopes(expr: sp.Expr, stored: dict) -> sp.Expr:
    """A slope written through an argument whose value is stored (1 - tanh(c)^2 with tanh(c)
    stored as s) rewritten through the stored value (1 - s^2), by the activation table."""
    def rewrite(e):
        if isinstance(e, ElementwiseApplyFunction):
            for act in ACTIVATIONS.values():
                through_argument = sp.Lambda(u, act.slope.xreplace({v: act.value}))
                key = elementwise(act.value, e.expr)
                if e.function == through_argument and key in stored:
                    return elementwise(act.slope.xreplace({v: u}), stored[key])
            if e in stored:
                return stored[e]
            return e
        if e in stored:
            return stored[e]
        if isinstance(e, sp.MatrixExpr) and e.args:
            new = [rewrite(a) if isinstance(a, sp.MatrixExpr) else a for a in e.args]
            return e.func(*new) if new != list(e.args) else e
        return e
    return rewrite(expr)


def layers_view(rule: "StepRule", spec, local, refs: dict, params: list[dict]) -> list[dict]:
    """The per-layer view of a gated module: forward and backward lines, printed from the step rule."""
    sym, m = rule.sym, spec.model
    names = sym.names
    gates = sym.cell.GATES
    n = len(gates)
    out = []
    for lr in rule.layers:
        l = lr.layer
        H = m.hidden_sizes[l - 1]
        stacks = _Stacks(rule, l, local, refs)
        h = local(names.python("hidden", l))
        hv = local(f"{h}v")
        A = local(f"gates_{l}")
        span = {k: (i * H, (i + 1) * H) for i, k in enumerate(gates)}
        gview = {k: local(names.python("gate", l, k)) for k in gates}
        below_step = sym("input", None, t) if l == 1 else sym("hidden", l - 1, t)
        below_all = "xs" if l == 1 else f"{out[-1]['h']}[1:]"
        states = {"hidden": h}
        if "cell" in sym.cell.STATE:
            states["cell"] = local(names.python("cell", l))
        sv = {role: local(f"{name}v") for role, name in states.items()}
        step_refs = {sym(role, l, t - 1): f"{sv[role]}[t]" for role in states}
        step_refs.update({sym(role, l, t): f"{sv[role]}[t + 1]" for role in states})
        pres = {sym.info[a.lhs].gate: a for a in lr.forward if sym.info[a.lhs].role == "pre_activation"}
        # the input projections of all gates and steps: one product with the stacked weights
        hoisted, recurrent = {}, {}
        state_symbols = {sym(role, l, t - 1) for role in states} | {sym("gate", l, t, gate=k) for k in gates}
        for k, a in pres.items():
            terms = a.rhs.args if isinstance(a.rhs, sp.MatAdd) else (a.rhs,)
            hoisted[k] = [e for e in terms if not (e.free_symbols & state_symbols)]
            recurrent[k] = [e for e in terms if e.free_symbols & state_symbols]
        for k in gates:   # the stacked product below is exact only for this form
            want = {sym.product(sym("input_weight", l, gate=k), below_step)} | (
                {sym("bias", l, gate=k)} if m.bias else set())
            if set(hoisted[k]) != want:
                raise NotImplementedError(f"gate {k}: the part without the state is not W_k x + b_k")
        stacked = [sym.product(stacks.of("input_weight", gates), below_step)]
        if m.bias:
            stacked.append(stacks.of("bias", gates))
        proj = sp.MatAdd(*stacked) if len(stacked) > 1 else stacked[0]
        pr_all = LoopCodePrinter(sym, {**refs, below_step: below_all}, steps=True)
        forward_all = pr_all.accumulate(f"{A}[:-1]", proj)
        forward_tokens = []
        if l == 1:
            gather = LoopCodePrinter(sym, {**refs, below_step: "xs"}, steps=True)
            gather.tokens = {below_step: m.input_size}
            forward_tokens = gather.accumulate(f"{A}[:-1]", proj)
        # step by step: the recurrent products of all gates that read one vector, at once
        products: dict = {}
        for k in gates:
            for e in recurrent[k]:
                for node in sp.preorder_traversal(e):
                    found = _gate_product(sym, node) if isinstance(node, sp.MatMul) else None
                    if found is not None:
                        products.setdefault(found[1], []).append((k, node))
        step_pr = LoopCodePrinter(sym, {**refs, **step_refs, **{sym("gate", l, t, gate=k): f"{gview[k]}[t]" for k in gates},
                                        **{sym("pre_activation", l, t, gate=k): f"{gview[k]}[t]" for k in gates}})
        replace, rec_lines, setup, slot = {}, [], [], {}
        for j, (vec, members) in enumerate(products.items()):
            members.sort(key=lambda m_: gates.index(m_[0]))
            order = tuple(k for k, _ in members)
            W = stacks.of("recurrent_weight", order)
            step_pr.refs.update(stacks.refs)
            buf = local(f"rec_{l}" + (f"_{j}" if j else ""))
            setup.append(f'{buf} = _empty(ws, "{buf}", (B, {len(order) * H}), dtype)')
            first_use = min(gates.index(k) for k in order)
            lines = [f"np.dot({step_pr._paren(vec.T if not sym.row else vec)}, "
                     f"{_transposed_ref(step_pr, W, local, setup)}, out={buf})"]
            rec_lines.append((first_use, vec, lines))
            for i, (k, node) in enumerate(members):
                holder = _placeholder(sym, f"rec:{buf}:{i}", node, l)
                step_pr.refs[holder] = f"{buf}[:, {i * H}:{(i + 1) * H}]"
                replace[node] = holder
                slot[holder] = (lines[-1], buf, i, len(members))
        # stored subexpressions: what the backward pass reads again
        stored: dict = {}
        store_lines: dict = {}
        for a in lr.forward:
            for node in sp.preorder_traversal(a.rhs):
                if node is a.rhs or not isinstance(node, sp.MatrixExpr):
                    continue
                nested = isinstance(node, ElementwiseApplyFunction) or (
                    isinstance(node, sp.MatAdd) and any(isinstance(p, sp.HadamardProduct) and node in p.args
                                                       for p in sp.preorder_traversal(a.rhs)))
                if nested and node not in stored and not node.has(sp.OneMatrix) and _needed(node, lr.delta):
                    name = local(f"saved_{l}_{len(stored)}")
                    holder = _placeholder(sym, f"store:{name}", node, l)
                    stored[node] = holder
                    store_lines[node] = name
        # the step as operations; the adds and activations of neighbouring gates are then
        # merged into one statement over their columns (one ufunc call for i and f, ...)
        ops: list[tuple] = []
        added: set = set()
        done_rec = set()
        for a in lr.forward:
            q = sym.info[a.lhs]
            for first_use, vec, lines in rec_lines:
                if id(lines) not in done_rec and (q.role == "pre_activation" and gates.index(q.gate) >= first_use):
                    ops.append(("lines", lines))
                    done_rec.add(id(lines))
                    for k in gates:   # a gate whose recurrent part is just its slice of this product
                        terms = [e.xreplace(replace) for e in recurrent[k]]
                        if len(terms) == 1 and terms[0] in slot and slot[terms[0]][0] == lines[-1]:
                            ops.append(("add", k, slot[terms[0]]))
                            added.add(k)
            rhs = a.rhs.xreplace(replace)
            for node, holder in stored.items():
                if node.xreplace(replace) in set(sp.preorder_traversal(rhs)) and node not in step_pr.refs:
                    target = f"{store_lines[node]}v[t]"
                    step_pr.refs[holder] = target
                    inner = node.xreplace(replace)
                    if isinstance(inner, ElementwiseApplyFunction):
                        ops.append(("lines", step_pr.apply_into(target, inner.function, step_pr.vector(inner.expr))))
                    else:
                        ops.append(("lines", step_pr.accumulate(target, inner)))
                    rhs = rhs.xreplace({inner: holder})
            if q.role == "pre_activation" and q.gate not in added:
                terms = [e.xreplace(replace) for e in recurrent[q.gate]]
                for node, holder in stored.items():
                    terms = [e.xreplace({node.xreplace(replace): holder}) for e in terms]
                target = f"{gview[q.gate]}[t]"
                lines = []
                for e in terms:
                    text = step_pr.vector(e)
                    lines.append(f"{target} -= {text[1:]}" if text.startswith("-") else f"{target} += {text}")
                ops.append(("lines", lines))
            elif q.role == "gate":
                ops.append(("act", q.gate, a.rhs.function))
            elif q.role != "pre_activation":
                ops.append(("lines", [f"{step_pr.refs[a.lhs]}[...] = {step_pr.vector(rhs)}"]))
        forward_step = _merged(ops, gates, span, A, H, step_pr)
        back = _backward(rule, lr, spec, local, refs, stacks, gview, span, states, sv, stored, store_lines, A, below_step,
                         below_all)
        cached = [A, *states.values(), *store_lines.values()]
        back["cache_names"] = ", ".join(cached)
        back["cache_reads"] = ", ".join(f'cache["{c}"]' for c in cached)
        out.append({**back, "layer": l,
                    "state_names": ", ".join(f"{name}[0]" for name in states.values()),
                    "views": ", ".join([*sv.values(), *(f"{x}v" for x in store_lines.values())]),
                    "view_lists": ", ".join([*(f"list({x})" for x in states.values()),
                                             *(f"list({x})" for x in store_lines.values())]),
                    "cache_entries": "{" + ", ".join(f'"{c}": {c}' for c in cached) + "}",
                    "step_state": " ".join([f'cache["{x}"][1]' for x in states.values()]) if len(states) == 1
                    else "(" + ", ".join(f'cache["{x}"][1]' for x in states.values()) + ")",
                    "final": f"{h}[-1]" if len(states) == 1 else "(" + ", ".join(f"{x}[-1]" for x in states.values()) + ")", "size": H, "width": n * H, "A": A, "h": h, "hv": hv,
                    "states": [{"role": r, "name": states[r], "v": sv[r]} for r in states],
                    "gate_views": [{"name": gview[k], "start": span[k][0], "stop": span[k][1]} for k in gates],
                    "stores": [{"name": name, "v": f"{name}v"} for name in store_lines.values()],
                    "stack_lines": stacks.lines, "forward_all": forward_all, "forward_tokens": forward_tokens,
                    "forward_setup": setup, "forward_step": forward_step,
                    "param_locals": [x for x in params if x["layer"] == l], "down_is_xs": l == 1})
    return out


def _backward(rule, lr, spec, local, refs, stacks, gview, span, states, sv, stored, store_lines, A, below_step,
              below_all) -> dict:
    """The backward lines of one gated layer: the named adjoints step by step, then the
    parameters' sums over steps, the gradient sent below and the gradients of h_0 (c_0).

    With window truncation every adjoint buffer has an age axis after the step axis, and
    step t reads step t + 1's adjoints one step older (`_older`), as for Elman cells."""
    sym, m = rule.sym, spec.model
    l, gates = lr.layer, sym.cell.GATES
    H, width = m.hidden_sizes[l - 1], len(gates) * m.hidden_sizes[l - 1]
    chunk = bool(spec.bptt.truncate) and spec.bptt.truncate_style == "chunk"
    ages = 0 if chunk else spec.bptt.truncate
    named = sym.cell.NAMED
    # adjoint buffers: the gates' deltas side by side, then one per other named role
    D = local(f"delta_gates_{l}")
    other = {role: local(f"{name}_{l}") for role, name in named.items() if role != "pre_activation"}
    buffers = {D: width, **{name: H for name in other.values()}}
    age_axis = "_TRUNCATE, " if ages else ""
    setup = [line for name, size in buffers.items() for line in (
        f'{name} = _empty(ws, "{name}", (T + 1, {age_axis}B, {size}), dtype)', f"{name}[...] = 0")]
    # where step t reads step t + 1's adjoints: the next row, the zero row at a chunk border,
    # or (window truncation) the next row one step older
    older = {name: local(f"older_{name}") for name in buffers} if ages else {}
    setup += [f'{older[name]} = _empty(ws, "{older[name]}", (_TRUNCATE, B, {size}), dtype)'
              for name, size in buffers.items() if ages]
    nxt = "nxt" if chunk else "t + 1"
    now_of = {name: f"{name}[t]" for name in buffers}
    next_of = {name: older[name] if ages else f"{name}[{nxt}]" for name in buffers}

    def gate_part(text: str, k: str) -> str:
        return f"{text}[..., {span[k][0]}:{span[k][1]}]"

    # each gate's delta is a view of the gates' delta buffer (and of its older copy)
    dview = {k: local(f"delta_{gview[k]}") for k in gates}
    setup += [f"{dview[k]} = {gate_part(D, k)}" for k in gates]
    if ages:
        oview = {k: local(f"older_delta_{gview[k]}") for k in gates}
        setup += [f"{oview[k]} = {gate_part(older[D], k)}" for k in gates]
    refs_t = {**refs, sym("hidden_grad", l, t): "g[t]"}
    for k in gates:
        refs_t[sym("gate", l, t, gate=k)] = f"{gview[k]}[t]"
        refs_t[sym("gate", l, t + 1, gate=k)] = f"{gview[k]}[t + 1]"
        refs_t[sym("delta", l, t, gate=k)] = f"{dview[k]}[t]"
        refs_t[sym("delta", l, t + 1, gate=k)] = oview[k] if ages else f"{dview[k]}[{nxt}]"
    for role, name in other.items():
        refs_t[sym(named[role], l, t)] = now_of[name]
        refs_t[sym(named[role], l, t + 1)] = next_of[name]
    for role in states:
        refs_t[sym(role, l, t - 1)] = f"{states[role]}[t]"
        refs_t[sym(role, l, t)] = f"{states[role]}[t + 1]"
    saved_at = {}
    for node, holder in stored.items():
        refs_t[holder] = f"{store_lines[node]}[t]"
        holder_next = _placeholder(sym, f"store+1:{store_lines[node]}", node, l)
        refs_t[holder_next] = f"{store_lines[node]}[t + 1]"
        saved_at[_shift(sym, node)] = holder_next
    pr = LoopCodePrinter(sym, refs_t)
    stacks.printers.append(pr)
    stk = local(f"stack_{l}")

    def side_by_side(members, time, text: str):
        """The buffer that holds the y_k of Σ_k W_k^T y_k side by side: the gates' deltas
        themselves when the y_k are exactly those, else a scratch buffer filled per step."""
        ks = [k for k, _ in members]
        contiguous = ks == list(gates[gates.index(ks[0]):gates.index(ks[0]) + len(ks)])
        if [y for _, y in members] == [sym("delta", l, time, gate=k) for k in ks] and contiguous:
            a, b = span[ks[0]][0], span[ks[-1]][1]
            return (text if (a, b) == (0, width) else f"{text}[..., {a}:{b}]"), []
        if time != t + 1:
            return None   # outside the loop: one product per gate
        first = span[ks[0]][0]
        setup.append(f'{stk} = _empty(ws, "{stk}", ({age_axis}B, {len(ks) * H}), dtype)')
        return stk, [f"{stk}[..., {span[k][0] - first}:{span[k][1] - first}] = {pr.vector(y)}" for k, y in members]

    step = [f"_older({name}[t + 1], {older[name]})" for name in buffers if ages and any(
        sym(named[r], l, t + 1, None, k) in lr.carried for r in named for k in ((None,) + gates)
        if (r == "pre_activation") == (name == D) and (name == D or other.get(r) == name))]
    for d in lr.delta:
        expr = _stored_slopes(d.rhs, {**stored, **saved_at})
        expr, fill = _stack_transposed(sym, stacks, expr, lambda members: side_by_side(members, t + 1, next_of[D]))
        step += fill
        step.append(f"{pr.refs[d.lhs]}[...] = {pr.vector(expr)}")
    # over all steps: the parameters' sums (ages added first), the gradient sent below
    finish = []
    total = {name: f"{name}[:-1]" for name in buffers}
    if ages:
        for name in buffers:
            total[name] = local(f"{name}_sum")
            finish.append(f'{total[name]} = np.sum({name}[:-1], axis=1, out=_empty(ws, "{total[name]}", '
                          f'(T, B, {buffers[name]}), dtype))')
    all_refs = {**refs, below_step: below_all}
    for k in gates:
        all_refs[sym("delta", l, t, gate=k)] = gate_part(total[D], k) if ages else f"{dview[k]}[:-1]"
        all_refs[sym("gate", l, t, gate=k)] = f"{gview[k]}[:-1]"
    for role, name in other.items():
        all_refs[sym(named[role], l, t)] = total[name]
    for role in states:
        all_refs[sym(role, l, t - 1)] = f"{states[role]}[:-1]"
        all_refs[sym(role, l, t)] = f"{states[role]}[1:]"
    for node, h_ in stored.items():
        all_refs[h_] = f"{store_lines[node]}[:-1]"
    tot = LoopCodePrinter(sym, all_refs, steps=True)
    scatter = LoopCodePrinter(sym, all_refs, steps=True)
    scatter.tokens = {below_step: m.input_size} if l == 1 else {}
    order = list(sym.params())
    grads = []
    for p, e in sorted(lr.uses.items(), key=lambda pe: order.index(pe[0])):
        e = _stored_slopes(e, stored)
        grads.append({"name": sym.names.python(sym.info[p].role, l, sym.info[p].gate), "expr": tot.total(e),
                      "tokens_expr": scatter.total(e) if l == 1 and below_step in e.free_symbols else ""})
    # the gradient sent below: per age to a lower layer, summed over ages for xs
    down = {}
    for key, text in (("ages", f"{D}[:-1]"), ("sum", total[D])):
        e, _ = _stack_transposed(sym, stacks, lr.down, lambda members: side_by_side(members, t, text))
        down[key] = LoopCodePrinter(sym, {**all_refs, **stacks.refs}, steps=True).vector(e)
    # h_0 (and c_0): the rule of step 1, its adjoints summed over ages
    first = {**refs}
    at_one = {name: f"{total[name]}[0]" for name in buffers}
    for k in gates:
        first[sym("delta", l, sp.Integer(1), gate=k)] = gate_part(at_one[D], k)
        first[sym("gate", l, sp.Integer(1), gate=k)] = f"{gview[k]}[0]"
    for role, name in other.items():
        first[sym(named[role], l, sp.Integer(1))] = at_one[name]
    h0 = []
    for role in states:
        e, _ = _stack_transposed(sym, stacks, lr.initial[role],
                                 lambda members: side_by_side(members, sp.Integer(1), at_one[D]))
        h0.append(LoopCodePrinter(sym, {**first, **stacks.refs}).vector(e))
    return {"backward_setup": setup, "backward_step": step, "backward_finish": finish, "grads": grads,
            "down": down["sum"] if l == 1 else down["ages" if ages else "sum"],
            "h0": h0[0] if len(h0) == 1 else f"({', '.join(h0)})", "delta": D, "chunk": chunk}


def _shift(sym, expr: sp.Expr) -> sp.Expr:
    """The same expression one step later (every symbol at step t moved to t + 1)."""
    moves = {}
    for s in expr.atoms(sp.MatrixSymbol):
        q = sym.info.get(s)
        if q is not None and q.time is not None and q.time.has(t):
            moves[s] = sym(q.role, q.layer, q.time + 1, q.age, q.gate)
    return expr.xreplace(moves)


def _merged(ops: list[tuple], gates, span, A: str, H: int, pr: LoopCodePrinter) -> list[str]:
    """The step's lines, with the adds and activations of neighbouring gates merged."""
    out: list[str] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        if op[0] == "lines":
            out += op[1]
            i += 1
            continue
        j = i + 1   # extend over the next gates with the same operation
        while j < len(ops) and ops[j][0] == op[0] and gates.index(ops[j][1]) == gates.index(ops[j - 1][1]) + 1 and (
                ops[j][2] == op[2] if op[0] == "act" else
                ops[j][2][1] == op[2][1] and ops[j][2][2] == ops[j - 1][2][2] + 1):
            j += 1
        first, last = ops[i][1], ops[j - 1][1]
        a, b = span[first][0], span[last][1]
        columns = f"{A}[t]" if (a, b) == (0, len(gates) * H) else f"{A}[t, :, {a}:{b}]"
        if op[0] == "act":
            out += pr.activate(columns, op[2])
        else:
            _, buf, k0, n = op[2]
            k1 = ops[j - 1][2][2] + 1
            part = buf if (k0, k1) == (0, n) else f"{buf}[:, {k0 * H}:{k1 * H}]"
            out.append(f"{columns} += {part}")
        i = j
    return out


def _needed(node: sp.Expr, deltas) -> bool:
    """Whether the backward pass reads this forward subexpression (or a slope through it)."""
    for d in deltas:
        for e in sp.preorder_traversal(d.rhs):
            if e == node:
                return True
            if isinstance(e, ElementwiseApplyFunction) and isinstance(node, ElementwiseApplyFunction) \
                    and e.expr == node.expr:
                return True
    return False


def _transposed_ref(pr: LoopCodePrinter, W: sp.MatrixSymbol, local, setup: list[str]) -> str:
    """The stacked weight as the code multiplies rows by it: W^T (column layout), contiguous."""
    if pr.sym.row:
        return pr.refs[W]
    name = local(pr.refs[W] + "T")
    setup.append(f'{name} = _transposed(ws, "{name}", {pr.refs[W]})')
    return name


