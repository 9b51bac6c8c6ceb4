"""View-models of the handout (LaTeX and Markdown): every equation is a pair of SymPy
objects printed by `HandoutLatexPrinter` in the spec's notation."""
from __future__ import annotations

import sympy as sp

from derive import bptt
from derive.emit.printers import HandoutLatexPrinter, Partial
from derive.rules import ACTIVATIONS, u, v
from derive.spec import Spec
from derive.unroll import elementwise

ROLE_WORDS = {
    "input": "input at step t", "input_weight": "input-to-hidden weight",
    "recurrent_weight": "hidden-to-hidden (recurrent) weight", "bias": "hidden bias",
    "output_weight": "hidden-to-output weight", "output_bias": "output bias",
    "hidden": "hidden state", "pre_activation": "pre-activation", "logits": "output logits",
    "output": "prediction", "delta": "delta: dL/d(pre-activation)",
    "output_delta": "output delta: dL/d(logits)",
}

#: What each source document wrote loosely, and the form this handout uses instead.
SLIPS = {
    "doc000": [
        "Document 000 writes the update as W_2 = -eta (dW_2^1 + dW_2^2 + dW_2^3); it means "
        "W_2 <- W_2 - eta (dW_2^1 + dW_2^2 + dW_2^3), as in the update rule below.",
        "Document 000 calls e^t the MSE; it is the derivative of the per-step loss "
        "1/2 ||h^t_2 - y^t||^2 with respect to the prediction, the residual h^t_2 - y^t.",
        "Document 000 writes V_2 x delta^(t+1)_2 and delta^t_2 x W_2; in its row layout the "
        "transposes are needed: delta^(t+1)_2 V_2^T and delta^t_2 W_2^T, as printed below.",
    ],
    "doc003": [
        "Document 003 writes some factors as dy/do_j; the chain always runs through o_3: "
        "dL/dw_h = sum_j dL/dy dy/do_3 do_3/do_j d+o_j/dw_h, as in the path sums above.",
    ],
    "d2l": [
        "Document 004 leaves the placement of the elementwise factor f'(a_t) ambiguous; it "
        "multiplies the whole sum: delta^h_t = (W_hy^T delta^y_t + W_hh^T delta^h_(t+1)) * f'(a_t).",
    ],
}


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
                 "#": r"\#", "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "-": "-{}"}


def tex_text(text: str) -> str:
    """Plain text (names, commands, notes) made safe to set in LaTeX."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in text)


def equation_labels(d: bptt.Derivation) -> dict[tuple[str, sp.MatrixSymbol], str]:
    """The handout's `\\label`s of the equations that define a forward quantity, a delta or
    a total, keyed by what they define; the unrolled module cites the same labels."""
    name, sym = d.spec.name, d.sym
    out = {}
    for time in d.unrolled.times:
        for i, a in enumerate(x for x in d.unrolled.forward if x.time == time):
            out["fwd", a.lhs] = f"eq:{name}:fwd:{int(time)}:{i}"
        for i, a in enumerate(x for x in d.deltas if x.time == time):
            out["delta", a.lhs] = f"eq:{name}:delta:{int(time)}:{i}"
    for p in d.uses:
        out["total", p] = f"eq:{name}:total:{sym.names.python(sym.info[p].role, sym.info[p].layer)}"
    return out


def views(spec: Spec, command: str) -> dict[str, dict]:
    view = _view(spec, command)
    tex = dict(view)
    for key in ("name", "title", "command", "source", "check", "slope_range"):  # plain text
        tex[key] = tex_text(view[key])
    tex["slips"] = [tex_text(s) for s in view["slips"]]
    # the header is a TeX comment: the validated name and command go there as they are
    tex["header"] = {"name": view["name"], "command": view["command"]}
    tex["table"] = [{**row, "python": tex_text(row["python"]), "role": tex_text(row["role"])} for row in view["table"]]
    return {"tex": tex, "md": view}


def _view(spec: Spec, command: str) -> dict:
    d = bptt.derive(spec)
    sym, m = d.sym, spec.model
    P = HandoutLatexPrinter(sym)
    L = m.layers
    eq = lambda lhs, rhs, label, op="=": {"lhs": P.doprint(lhs), "rhs": P.doprint(rhs),  # noqa: E731
                                          "op": op, "label": label}
    T = spec.bptt.steps
    t, k, j = sp.symbols("t k j", integer=True, positive=True)
    # notation table
    table = []
    sizes = sym.sizes()
    for p in sym.params():
        q = sym.info[p]
        shape = " x ".join(str(sp.sympify(x).xreplace(sizes)) for x in p.shape)
        role = ROLE_WORDS[q.role] + (f", layer {q.layer}" if L > 1 and q.layer <= L else "")
        table.append({"symbol": P.doprint(p), "role": role, "shape": shape,
                      "python": sym.names.python(q.role, q.layer)})
    for role, layer in [("input", None)] + [("hidden", l) for l in range(1, L + 1)] + \
            [("pre_activation", l) for l in range(1, L + 1)] + \
            ([("logits", None), ("output", None)] if m.output_size else []):
        s = sym(role, layer, t)
        shape = " x ".join(str(sp.sympify(x).xreplace(sizes)) for x in s.shape)
        table.append({"symbol": P.doprint(s), "role": ROLE_WORDS[role], "shape": shape, "python": "-"})
    labels = equation_labels(d)
    # forward, one block per step
    forward = []
    for time in d.unrolled.times:
        forward.append({"time": int(time), "equations": [
            eq(a.lhs, a.rhs, labels["fwd", a.lhs]) for a in d.unrolled.forward if a.time == time]})
    losses = [eq(a.lhs, a.rhs, f"eq:{spec.name}:loss:{int(a.time)}") for a in d.unrolled.losses]
    scale = bptt.loss_scale(spec)
    total_loss = sp.Sum(sp.Symbol("E_t"), (t, 1, T)) if spec.loss.at == "every_step" else sp.Symbol("E_T")
    act = ACTIVATIONS[m.activation]
    slope_eq = {"lhs": rf"{act.latex}'(u)", "op": "=",
                "rhs": P.doprint(act.slope.xreplace({v: act.value})) + r" = " + P.doprint(act.slope.xreplace({v: sp.Symbol("v")})),
                "label": f"eq:{spec.name}:slope"}
    # delta recursion, one block per step from T down to 1
    deltas = []
    for time in reversed(d.unrolled.times):
        rows = [eq(a.lhs, a.rhs, labels["delta", a.lhs]) for a in d.deltas if a.time == time]
        if rows:
            deltas.append({"time": int(time), "equations": rows})
    # per-step contributions and totals
    grads = []
    eta = sp.Symbol(r"\eta")
    for p, uses in d.uses.items():
        name = P.doprint(p)
        dname = rf"\frac{{\partial L}}{{\partial {name}}}"
        steps = [{"lhs": rf"{dname}\Big|_{{{int(time)}}}", "op": "=", "rhs": P.doprint(e),
                  "label": f"eq:{spec.name}:use:{sym.names.python(sym.info[p].role, sym.info[p].layer)}:{int(time)}"}
                 for time, e in uses]
        total = {"lhs": dname, "op": "=", "rhs": P.doprint(d.totals[p]), "label": labels["total", p]}
        update = {"lhs": name, "op": r"\leftarrow", "rhs": f"{name} - {P.doprint(eta)} {dname}",
                  "label": f"eq:{spec.name}:update:{sym.names.python(sym.info[p].role, sym.info[p].layer)}"}
        grads.append({"name": name, "steps": steps, "total": total, "rule": update,
                      "zero_first": bool(sym.info[p].role == "recurrent_weight")})
    # path sums: the general form, and the Jacobian of one step
    top = L
    h = lambda time: sym("hidden", top, time)  # noqa: E731
    weight = sym("recurrent_weight", top)
    theta = sym("input_weight", 1)
    last = spec.loss.at == "last_step"
    s = sp.Integer(T) if last else t      # the step of the loss term
    window_low = sp.Max(1, s - spec.bptt.truncate + 1) if spec.bptt.truncate else 1
    pred = d.unrolled.prediction(s)
    chain = [Partial(sym("loss", None, s), pred)]
    if m.output_size:
        chain.append(Partial(pred, h(s)))
    chain += [sp.Product(Partial(h(j), h(j - 1)), (j, k + 1, s)), Partial(h(k), theta, True)]
    inner = sp.Sum(sp.Mul(*chain), (k, window_low, s))
    outer = inner if last else sp.Sum(inner, (t, 1, T))
    path = {"lhs": P.doprint(Partial(sp.Symbol("L"), theta)), "op": "=", "rhs": P.doprint(outer),
            "label": f"eq:{spec.name}:pathsum"}
    col = (lambda e: e.T) if sym.row else (lambda e: e)
    body = act.slope.xreplace({v: u})
    # diag() of a row or a column vector is the same matrix: keep the course's vector
    diag = sp.Identity(col(h(j)).shape[0]) if body == 1 else \
        sp.matrices.expressions.diagonal.DiagMatrix(elementwise(body, h(j)))
    jac = {"lhs": P.doprint(Partial(h(j), h(j - 1))), "op": "=",
           "rhs": P.doprint(sp.MatMul(diag, col(weight))), "label": f"eq:{spec.name}:jacobian"}
    product = {"lhs": P.doprint(Partial(h(t), h(k))), "op": "=",
               "rhs": P.doprint(sp.Product(sp.MatMul(diag, col(weight)), (j, k + 1, t))),
               "label": f"eq:{spec.name}:jacobian-product"}
    view = {
        "name": spec.name, "title": spec.title or spec.name, "command": command,
        "source": sym.names.preset.source, "layout": spec.layout, "T": T, "layers": L,
        "table": table, "forward": forward, "losses": losses,
        "total_loss": {"lhs": "L", "op": "=", "rhs": P.doprint(scale * total_loss), "label": f"eq:{spec.name}:loss"},
        "slope": slope_eq, "activation": m.activation, "deltas": deltas, "grads": grads,
        "path": path, "jacobian": jac, "jacobian_product": product,
        "truncate": spec.bptt.truncate, "clip": spec.bptt.clip,
        "slips": SLIPS.get(spec.notation.preset, []),
        "check": f"derive check --preset {spec.name}" if command.startswith("derive build --all") or "--preset" in command
        else f"derive check {spec.name}.toml",
        "h0": P.doprint(sym("hidden", 1, sp.Integer(0))),
        "slope_range": act.slope_range,
        "stacked": L > 1,
        "state": P.doprint(sym("hidden", L, t)),
    }
    return view
