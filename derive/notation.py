"""Naming lives here: the notation presets, role -> symbol, and the Python / LaTeX forms.

A symbol name is a letter, then letters and digits, then optionally `_` and letters and
digits (CONTRACT §2). Nothing else ever reaches a template: LaTeX and Python forms are
built from the two validated parts.
"""
from __future__ import annotations

import builtins
import dataclasses
import keyword
import re
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)?")

#: Roles a spec may rename in [notation.names]; a gated cell's per-gate symbols are
#: renamed as "<role>.<gate>" (GATED_ROLES), its gate values as "gate.<gate>".
ROLES = ("input_weight", "recurrent_weight", "bias", "output_weight", "output_bias",
         "hidden", "pre_activation", "output", "recurrent_bias", "gate", "cell")
PARAM_ROLES = ("input_weight", "recurrent_weight", "bias", "output_weight", "output_bias", "recurrent_bias")
GATED_ROLES = ("input_weight", "recurrent_weight", "bias", "recurrent_bias", "pre_activation", "gate")
LAYER_ROLES = ("input_weight", "recurrent_weight", "bias", "hidden", "pre_activation", "delta",
               "recurrent_bias", "gate", "cell", "cell_delta", "hidden_delta")

#: The generated module's public API (CONTRACT §3). A symbol may not take one of these
#: names, nor a Python keyword or builtin; every other name is free, because the code
#: emitter picks its own local names around the user's (`formats.module.Namer`).
API = frozenset({"PARAMS", "LAYOUT", "SPEC", "init_params", "forward", "backward", "predict",
                 "loss_and_grads", "step", "to_torch", "from_torch"})


def is_reserved(name: str) -> bool:
    return keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in API \
        or hasattr(builtins, name)


@dataclass(frozen=True)
class Preset:
    """One course's notation: its symbols, its layout, and where the time index goes."""

    name: str
    layout: str           # "row": x W ; "column": W x
    time: str             # "sub": h_t ; "sup": h^t (document 000)
    symbols: dict[str, str]
    source: str
    #: symbols whose LaTeX is not their name's (Γ_f, C̃): key -> (head, subscript)
    latex: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


def _preset(name: str, layout: str, time: str, source: str, gated: dict[str, str] | None = None,
            latex: dict[str, tuple[str, str]] | None = None, **symbols: str) -> Preset:
    base = {"input": "x", "loss": "L", "delta": "delta", "output_delta": "delta", "cell_delta": "delta",
            "hidden_delta": "delta",
            **_PYTORCH_GATED, **(gated or {})}
    return Preset(name, layout, time, {**base, **symbols}, source, latex or {})


def _gated(weights: str, biases: str, values: dict[str, str], **extra: str) -> dict[str, str]:
    """Per-gate symbols from patterns: "W_i{k}" -> W_ii, W_if, ... for every gate k of
    both gated cells (LSTM i f g o, GRU r z n); `values` renames a gate's letter in
    the patterns and its value's symbol."""
    out = {}
    for k in ("i", "f", "g", "o", "r", "z", "n"):
        letter = values.get(k, k)
        for role, pattern in (("input_weight", weights.split()[0]), ("recurrent_weight", weights.split()[1]),
                              ("bias", biases)):
            out[f"{role}.{k}"] = pattern.format(k=letter)
        out[f"gate.{k}"] = letter
    return {**out, **extra}


#: PyTorch's documentation (nn.LSTM, nn.GRU): W_ii, W_hi, b_i, ..., and c_t; every preset
#: without its own gated symbols uses these.
_PYTORCH_GATED = _gated("W_i{k} W_h{k}", "b_{k}", {}, **{"recurrent_bias.n": "b_hn", "cell": "c"})


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("doc000", "row", "sup", "document 000 (Russian): W, V, b, h, z",
            input_weight="W", recurrent_weight="V", bias="b", output_weight="W_y",
            output_bias="b_y", hidden="h", pre_activation="z", output="y", logits="s"),
    _preset("doc001", "column", "sub", "document 001 (Russian): U, W, V, s",
            input_weight="U", recurrent_weight="W", bias="b", output_weight="V",
            output_bias="c", hidden="s", pre_activation="z", output="y", logits="o"),
    _preset("d2l", "column", "sub", "documents 002 and 004 (Bengali): W_xh, W_hh, W_hy",
            # d2l.ai 10.1 and 10.2: I, F, O, C̃, C; R, Z, H̃ (the candidate's weights W_xc / W_xh)
            gated=_gated("W_x{k} W_h{k}", "b_{k}", {"i": "i", "f": "f", "g": "c", "o": "o", "n": "h"},
                         **{"recurrent_bias.n": "b_hn", "cell": "C",
                            **{f"gate.{k}": k.upper() for k in ("i", "f", "g", "o", "r", "z", "n")}}),
            latex={"gate.g": (r"\tilde{C}", ""), "gate.n": (r"\tilde{H}", "")},
            input_weight="W_xh", recurrent_weight="W_hh", bias="b_h", output_weight="W_hy",
            output_bias="b_y", hidden="h", pre_activation="a", output="y", logits="o"),
    _preset("doc003", "row", "sub", "document 003 (English): w_i, w_h, w_o, o",
            input_weight="w_i", recurrent_weight="w_h", bias="b", output_weight="w_o",
            output_bias="b_o", hidden="o", pre_activation="a", output="y", logits="z"),
    _preset("cs231n", "row", "sub", "CS231n rnn_step_forward: Wx, Wh, b",
            gated=_gated("Wx_{k} Wh_{k}", "b_{k}", {}, **{"recurrent_bias.n": "bh_n", "cell": "c"}),
            input_weight="Wx", recurrent_weight="Wh", bias="b", output_weight="Wy",
            output_bias="by", hidden="h", pre_activation="a", output="y", logits="s"),
    _preset("dlai", "column", "sub", "deeplearning.ai: Wax, Waa, ba, Wya, by",
            # the LSTM's W_f [a_{t-1}; x_t] split into W_fa a_{t-1} + W_fx x_t; Γ_u is the input gate
            gated=_gated("W{k}x W{k}a", "b{k}", {"i": "u", "g": "c"}, **{"recurrent_bias.n": "bna", "cell": "c"}),
            latex={"gate.f": (r"\Gamma", "f"), "gate.i": (r"\Gamma", "u"), "gate.o": (r"\Gamma", "o"),
                   "gate.g": (r"\tilde{c}", ""), "gate.r": (r"\Gamma", "r"), "gate.z": (r"\Gamma", "u"),
                   "gate.n": (r"\tilde{c}", "")},
            input_weight="Wax", recurrent_weight="Waa", bias="ba", output_weight="Wya",
            output_bias="by", hidden="a", pre_activation="z", output="y", logits="o"),
    _preset("pytorch", "column", "sub", "PyTorch nn.LSTM / nn.GRU: W_ii, W_hi, b_i, ...",
            input_weight="W_ih", recurrent_weight="W_hh", bias="b_h", output_weight="W_hy",
            output_bias="b_y", hidden="h", pre_activation="a", output="y", logits="s"),   # s: o_t is the LSTM output gate
)}


def toml_key(key: str) -> str:
    """A key as TOML would need it written: bare when it can be, quoted otherwise, so an
    error message that names it always stays on one line."""
    bare = bool(key) and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else repr(key)


def latex_name(name: str) -> str:
    """`W_xh` -> `W_{xh}`; a multi-letter head is set upright-italic as one word."""
    head, _, sub = name.partition("_")
    head = head if len(head) == 1 else rf"\mathit{{{head}}}"
    return f"{head}_{{{sub}}}" if sub else head


def check(preset: str, layout: str, names: tuple[tuple[str, str], ...], *,
          layers: int, output: bool, bias: bool, cell=None, reset: str = "after") -> list[str]:
    """Problems with a notation: unknown preset, role or layout, bad or clashing names."""
    problems: list[str] = []
    if preset not in PRESETS:
        return [f"notation.preset: {preset!r} is not one of {', '.join(PRESETS)}"]
    if layout not in ("", "row", "column"):
        problems.append(f"notation.layout: {layout!r} is not one of row, column")
    gates = tuple(cell.GATES) if cell is not None else ()
    for key, symbol in names:
        role, dot, gate = key.partition(".")
        if role not in ROLES or (dot and role not in GATED_ROLES):
            problems.append(f"notation.names.{toml_key(key)}: unknown role; allowed: {', '.join(ROLES)}"
                            + (f", and \"<role>.<gate>\" for {', '.join(GATED_ROLES)}" if gates else ""))
        elif dot and gate not in gates:
            problems.append(f"notation.names.{toml_key(key)}: unknown gate {gate!r}; "
                            + (f"this cell's gates are {', '.join(gates)}" if gates else "an Elman cell has no gates"))
        elif not NAME.fullmatch(symbol):
            problems.append(f"notation.names.{toml_key(key)}: {symbol!r} is not a symbol name "
                            "(a letter, then letters or digits, then optionally _ and letters or digits)")
    if problems:
        return problems
    table = Names(PRESETS[preset], dict(names), layers)
    used: dict[str, str] = {}
    for key, python in table.python_names(output=output, bias=bias, cell=cell, reset=reset):
        if is_reserved(python):
            problems.append(f"{key}: {python!r} is reserved (a Python keyword or builtin, or a name of the module's API)")
        elif python in used:
            problems.append(f"{key}: {python!r} is already used for {used[python]}")
        else:
            used[python] = key
    return problems


class Names:
    """Role -> symbol for one spec: Python and LaTeX forms, with the layer number when stacked."""

    def __init__(self, preset: Preset, overrides: dict[str, str], layers: int):
        self.preset = preset
        self.layers = layers
        self.base = {**preset.symbols, **overrides}

    def symbol(self, role: str, gate: str | None = None) -> str:
        """The symbol of a role (of one gate): the spec's override, else the preset's; a
        gate's pre-activation is the pre-activation's symbol with the gate's letter."""
        if gate is None:
            return self.base[role]
        key = f"{role}.{gate}"
        if key in self.base:
            return self.base[key]
        head = self.base[role]
        letter = self.base[f"gate.{gate}"].lower()
        return f"{head}{letter}" if "_" in head else f"{head}_{letter}"

    def python(self, role: str, layer: int | None = None, gate: str | None = None) -> str:
        """`W` in layer 1 of 2 -> `W_1`; `W_xh` -> `W_xh1` (one `_` at most, CONTRACT §2)."""
        base = self.symbol(role, gate)
        if layer is None or self.layers == 1 or role not in LAYER_ROLES:
            return base
        return f"{base}{layer}" if "_" in base else f"{base}_{layer}"

    def latex(self, role: str, layer: int | None = None, time: str | None = None, gate: str | None = None) -> str:
        """LaTeX of a symbol with its layer and time indices, in the preset's placement."""
        base = self.symbol(role, gate)
        key = f"{role}.{gate}" if gate else role
        if key in self.preset.latex and self.preset.symbols.get(key) == base:   # Γ_f, C̃ (not overridden)
            head, sub = self.preset.latex[key]
        else:
            head, _, sub = base.partition("_")
            head = latex_name(head)
        if role == "output":
            head = rf"\hat{{{head}}}"
        subs = [sub] if sub else []
        sups: list[str] = []
        stacked = layer is not None and self.layers > 1 and role in LAYER_ROLES
        if role in ("delta", "output_delta", "cell_delta", "hidden_delta"):
            head, subs = r"\delta", []
            of = {"output_delta": "y", "cell_delta": self.latex_head("cell"),
                  "hidden_delta": self.latex_head("hidden")}.get(role)
            if role == "delta":   # a gate's delta is named by the gate, an Elman delta by h
                of = self.latex_head("gate", gate) if gate else self.latex_head("hidden")
            if self.preset.time == "sub" or role in ("cell_delta", "hidden_delta") or gate:
                sups.append(of)
            elif role == "output_delta":
                subs.append("y")
        if self.preset.time == "sup":
            if stacked:
                subs.append(str(layer))
            if time is not None:
                sups.append(time)
        else:
            if stacked:
                sups.append(f"({layer})")
            if time is not None:
                subs.append(time)
        text = head
        if subs:
            text += "_{" + ",".join(subs) + "}"
        if sups:
            text += "^{" + ",".join(sups) + "}"
        return text

    def latex_head(self, role: str, gate: str | None = None) -> str:
        """The head of a symbol's LaTeX (its letter, without indices): h, C, Γ_f, C̃."""
        key = f"{role}.{gate}" if gate else role
        base = self.symbol(role, gate)
        if key in self.preset.latex and self.preset.symbols.get(key) == base:
            head, sub = self.preset.latex[key]
            return f"{head}_{{{sub}}}" if sub else head
        return latex_name(base.partition("_")[0]) if not gate else latex_name(base)

    def python_names(self, *, output: bool, bias: bool, cell=None, reset: str = "after") -> list[tuple[str, str]]:
        """(spec key, Python name) of every symbol the generated code names: the parameters
        (the keys of PARAMS and grads) and the hidden states. The names the code derives
        from them (delta arrays, transposed copies) are the emitter's to choose."""
        out = []
        layers = range(1, self.layers + 1)
        if cell is not None and cell.GATES:
            from derive.spec import Model   # the cell's own declaration says which exist
            model = Model(input_size=1, hidden_sizes=(1,), bias=bias, gru_reset=reset)
            out += [(f"notation.names.{toml_key(p.role + '.' + p.gate)}", self.python(p.role, layer, p.gate))
                    for layer in layers for p in cell.PARAMS if p.present(model)]
            roles = [r for r in ("output_weight", "output_bias", "hidden")
                     if (output or not r.startswith("output")) and (bias or r != "output_bias")]
        else:
            roles = [r for r in PARAM_ROLES[:5] + ("hidden",) if (output or not r.startswith("output")) and
                     (bias or r not in ("bias", "output_bias"))]
        return out + [(f"notation.names.{role}", self.python(role, layer)) for role in roles
                      for layer in (layers if role in LAYER_ROLES else [None])]
