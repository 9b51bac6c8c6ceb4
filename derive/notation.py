"""Naming lives here: the notation presets, role -> symbol, and the Python / LaTeX forms.

A symbol name is a letter, then letters and digits, then optionally `_` and letters and
digits (CONTRACT §2). Nothing else ever reaches a template: LaTeX and Python forms are
built from the two validated parts.
"""
from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)?")

#: Roles a spec may rename in [notation.names].
ROLES = ("input_weight", "recurrent_weight", "bias", "output_weight", "output_bias",
         "hidden", "pre_activation", "output")
PARAM_ROLES = ROLES[:5]
LAYER_ROLES = ("input_weight", "recurrent_weight", "bias", "hidden", "pre_activation", "delta")

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


def _preset(name: str, layout: str, time: str, source: str, **symbols: str) -> Preset:
    base = {"input": "x", "loss": "L", "delta": "delta", "output_delta": "delta"}
    return Preset(name, layout, time, {**base, **symbols}, source)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("doc000", "row", "sup", "document 000 (Russian): W, V, b, h, z",
            input_weight="W", recurrent_weight="V", bias="b", output_weight="W_y",
            output_bias="b_y", hidden="h", pre_activation="z", output="y", logits="s"),
    _preset("doc001", "column", "sub", "document 001 (Russian): U, W, V, s",
            input_weight="U", recurrent_weight="W", bias="b", output_weight="V",
            output_bias="c", hidden="s", pre_activation="z", output="y", logits="o"),
    _preset("d2l", "column", "sub", "documents 002 and 004 (Bengali): W_xh, W_hh, W_hy",
            input_weight="W_xh", recurrent_weight="W_hh", bias="b_h", output_weight="W_hy",
            output_bias="b_y", hidden="h", pre_activation="a", output="y", logits="o"),
    _preset("doc003", "row", "sub", "document 003 (English): w_i, w_h, w_o, o",
            input_weight="w_i", recurrent_weight="w_h", bias="b", output_weight="w_o",
            output_bias="b_o", hidden="o", pre_activation="a", output="y", logits="z"),
    _preset("cs231n", "row", "sub", "CS231n rnn_step_forward: Wx, Wh, b",
            input_weight="Wx", recurrent_weight="Wh", bias="b", output_weight="Wy",
            output_bias="by", hidden="h", pre_activation="a", output="y", logits="s"),
    _preset("dlai", "column", "sub", "deeplearning.ai: Wax, Waa, ba, Wya, by",
            input_weight="Wax", recurrent_weight="Waa", bias="ba", output_weight="Wya",
            output_bias="by", hidden="a", pre_activation="z", output="y", logits="o"),
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
          layers: int, output: bool, bias: bool) -> list[str]:
    """Problems with a notation: unknown preset, role or layout, bad or clashing names."""
    problems: list[str] = []
    if preset not in PRESETS:
        return [f"notation.preset: {preset!r} is not one of {', '.join(PRESETS)}"]
    if layout not in ("", "row", "column"):
        problems.append(f"notation.layout: {layout!r} is not one of row, column")
    for role, symbol in names:
        if role not in ROLES:
            problems.append(f"notation.names.{toml_key(role)}: unknown role; allowed: {', '.join(ROLES)}")
        elif not NAME.fullmatch(symbol):
            problems.append(f"notation.names.{role}: {symbol!r} is not a symbol name "
                            "(a letter, then letters or digits, then optionally _ and letters or digits)")
    if problems:
        return problems
    table = Names(PRESETS[preset], dict(names), layers)
    used: dict[str, str] = {}
    for key, python in table.python_names(output=output, bias=bias):
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

    def python(self, role: str, layer: int | None = None) -> str:
        """`W` in layer 1 of 2 -> `W_1`; `W_xh` -> `W_xh1` (one `_` at most, CONTRACT §2)."""
        base = self.base[role]
        if layer is None or self.layers == 1 or role not in LAYER_ROLES:
            return base
        return f"{base}{layer}" if "_" in base else f"{base}_{layer}"

    def latex(self, role: str, layer: int | None = None, time: str | None = None) -> str:
        """LaTeX of a symbol with its layer and time indices, in the preset's placement."""
        base = self.base[role]
        head, _, sub = base.partition("_")
        head = latex_name(head)
        if role == "output":
            head = rf"\hat{{{head}}}"
        subs = [sub] if sub else []
        sups: list[str] = []
        stacked = layer is not None and self.layers > 1 and role in LAYER_ROLES
        if role in ("delta", "output_delta"):
            head = r"\delta"
            if self.preset.time == "sub":
                sups.append("y" if role == "output_delta" else self.latex_head("hidden"))
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

    def latex_head(self, role: str) -> str:
        return latex_name(self.base[role].partition("_")[0])

    def python_names(self, *, output: bool, bias: bool) -> list[tuple[str, str]]:
        """(spec key, Python name) of every symbol the generated code names: the parameters
        (the keys of PARAMS and grads) and the hidden states. The names the code derives
        from them (delta arrays, transposed copies) are the emitter's to choose."""
        roles = [r for r in PARAM_ROLES + ("hidden",) if (output or not r.startswith("output")) and
                 (bias or r not in ("bias", "output_bias"))]
        return [(f"notation.names.{role}", self.python(role, layer)) for role in roles
                for layer in (range(1, self.layers + 1) if role in LAYER_ROLES else [None])]
