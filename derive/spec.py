"""The model spec: frozen dataclasses, loaded from TOML or built in Python, and validated.

Every problem is collected as one message that names the key and what is allowed, so the
CLI can print one line and exit 2. No TOML key is read silently: unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from derive import notation
from derive.cells import CELLS
from derive.rules import ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS

AT = ("every_step", "last_step")
REDUCTIONS = ("sum", "mean")
TRUNCATE_STYLES = ("window", "chunk")
GRU_RESETS = ("after", "before")
#: The handout and the unrolled module write every step out; beyond this they would be
#: unreadable and slow to typeset, so `steps` is capped (the loop module works for any T).
MAX_STEPS = 200
MAX_SIZE = 4096
MAX_LAYERS = 16
#: Names and symbols land in file names, identifiers and headings: at most this long.
MAX_NAME = 64
#: A spec file is read in a bounded way: at most this many bytes ...
MAX_FILE_BYTES = 1_000_000
#: ... and tables and arrays nested at most this deep (a spec needs 3).
MAX_DEPTH = 8
#: A title lands in a LaTeX heading, a Markdown heading and a Python docstring: none of
#: their special characters may pass (pdflatex here has no fonts beyond ASCII).
TITLE_FORBIDDEN = "\\{}$%#&^_~\"'`<>|*[]"


class SpecError(ValueError):
    """A bad spec. `messages` holds one line per problem, each naming its key."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


@dataclass(frozen=True)
class Model:
    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int = 0
    activation: str = "tanh"
    output_activation: str = "identity"
    bias: bool = True
    cell: str = "elman"
    gru_reset: str = "after"     # gru only: after (PyTorch, cuDNN) | before (Cho et al. 2014, d2l)

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, list):   # a list from Python code reads naturally
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def layers(self) -> int:
        return len(self.hidden_sizes)


@dataclass(frozen=True)
class Loss:
    kind: str = "mse"
    at: str = "every_step"
    reduction: str = "sum"


@dataclass(frozen=True)
class BPTT:
    steps: int = 3
    truncate: int = 0
    clip: float = 0.0
    truncate_style: str = "window"   # window (BPTT(k;1)) | chunk (BPTT(k;k))
    clip_norm: float = 0.0


@dataclass(frozen=True)
class Notation:
    preset: str = ""                     # "" = the cell's default (d2l; pytorch for gated cells)
    layout: str = ""                     # "" = the preset's own layout
    names: tuple[tuple[str, str], ...] = ()  # role -> symbol overrides, in file order

    def __post_init__(self) -> None:
        if isinstance(self.names, dict):   # a dict from Python code reads naturally
            object.__setattr__(self, "names", tuple(self.names.items()))
        elif isinstance(self.names, list):
            object.__setattr__(self, "names", tuple(tuple(x) if isinstance(x, list) else x for x in self.names))


@dataclass(frozen=True)
class Example:
    """The handout's worked example (`derive/numbers.py` documents how it draws values):
    weights round(scale * N(0, 1), 1) from default_rng(seed), inputs round(N(0, 1), 1) or
    the one-hot vectors of `tokens` (step t reads token t, cyclically; ignored when there are
    more distinct tokens than inputs), and the learning rate eta."""

    seed: int = 0
    scale: float = 0.5
    eta: float = 0.1
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    model: Model
    loss: Loss = field(default_factory=Loss)
    bptt: BPTT = field(default_factory=BPTT)
    notation: Notation = field(default_factory=Notation)
    title: str = ""
    example: Example = field(default_factory=Example)

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise SpecError(problems)

    @property
    def preset(self) -> str:
        """The notation preset: the spec's, or the cell's default."""
        return self.notation.preset or CELLS[self.model.cell].NOTATION

    @property
    def layout(self) -> str:
        return self.notation.layout or notation.PRESETS[self.preset].layout

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the generated module's `SPEC`)."""
        return {
            "name": self.name,
            "title": self.title,
            "model": {
                "cell": self.model.cell,
                "input_size": self.model.input_size,
                "hidden_sizes": list(self.model.hidden_sizes),
                "output_size": self.model.output_size,
                "activation": self.model.activation,
                "output_activation": self.model.output_activation,
                "bias": self.model.bias,
                **({"gru_reset": self.model.gru_reset} if self.model.cell == "gru" else {}),
            },
            "loss": dataclasses.asdict(self.loss),
            "bptt": dataclasses.asdict(self.bptt),
            "notation": {
                "preset": self.preset,
                "layout": self.layout,
                "names": dict(self.notation.names),
            },
            "example": {**dataclasses.asdict(self.example), "tokens": list(self.example.tokens)},
        }

    def with_steps(self, steps: int) -> "Spec":
        return dataclasses.replace(self, bptt=dataclasses.replace(self.bptt, steps=steps))


# --------------------------------------------------------------------------- validation

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(problems: list[str], key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        problems.append(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _positive(problems: list[str], key: str, value: int, maximum: int = MAX_SIZE) -> None:
    if not _is_int(value) or not 1 <= value <= maximum:
        problems.append(f"{key}: must be an integer from 1 to {maximum}, got {value!r}")


def _types(spec: Spec) -> list[str]:
    """Wrong types of a spec built in Python: the parts, then every string field."""
    problems = []
    for key, kind in (("model", Model), ("loss", Loss), ("bptt", BPTT), ("notation", Notation)):
        if not isinstance(getattr(spec, key), kind):
            problems.append(f"{key}: must be a derive.spec.{kind.__name__}, got {type(getattr(spec, key)).__name__}")
    if problems:
        return problems
    for key, value in (("model.cell", spec.model.cell), ("model.gru_reset", spec.model.gru_reset),
                       ("model.activation", spec.model.activation),
                       ("model.output_activation", spec.model.output_activation),
                       ("loss.kind", spec.loss.kind), ("loss.at", spec.loss.at),
                       ("loss.reduction", spec.loss.reduction), ("notation.preset", spec.notation.preset),
                       ("notation.layout", spec.notation.layout)):
        if not isinstance(value, str):
            problems.append(f"{key}: must be a string, got {_describe(value)}")
    names = spec.notation.names
    if not isinstance(names, tuple) or not all(
            isinstance(x, tuple) and len(x) == 2 and all(isinstance(y, str) for y in x) for x in names):
        problems.append("notation.names: must be a table (a dict) of role = \"symbol\" strings, "
                        f"got {_describe(names)}")
    else:
        for role, symbol in names:
            if len(symbol) > MAX_NAME:
                problems.append(f"notation.names.{notation.toml_key(role[:MAX_NAME])}: at most {MAX_NAME} "
                                f"characters, got {len(symbol)}")
    return problems


def _check(spec: Spec) -> list[str]:
    """Every problem of a spec built in Python or from TOML, one message each."""
    problems: list[str] = _types(spec)
    if problems:
        return problems
    if not isinstance(spec.name, str) or not spec.name.isidentifier() or not spec.name.isascii():
        problems.append(f"name: must be an ASCII Python identifier, got {_describe(spec.name)}")
    elif len(spec.name) > MAX_NAME:
        problems.append(f"name: at most {MAX_NAME} characters, got {len(spec.name)}")
    elif spec.name.startswith("_") or notation.is_reserved(spec.name) or spec.name in ("np", "numpy"):
        problems.append(f"name: {spec.name!r} is reserved; use a plain identifier such as 'my_rnn'")
    if not isinstance(spec.title, str) or len(spec.title) > 200 or any(
            not (c.isascii() and c.isprintable()) or c in TITLE_FORBIDDEN for c in spec.title):
        problems.append("title: must be printable ASCII text of at most 200 characters, "
                        "without any of " + " ".join(TITLE_FORBIDDEN))
    m = spec.model
    _choice(problems, "model.cell", m.cell, tuple(CELLS))
    _positive(problems, "model.input_size", m.input_size)
    if not isinstance(m.hidden_sizes, tuple) or not 1 <= len(m.hidden_sizes) <= MAX_LAYERS:
        problems.append(f"model.hidden_sizes: must be a list of 1 to {MAX_LAYERS} positive integers")
    else:
        for i, size in enumerate(m.hidden_sizes):
            _positive(problems, f"model.hidden_sizes[{i}]", size)
    if not _is_int(m.output_size) or not 0 <= m.output_size <= MAX_SIZE:
        problems.append(f"model.output_size: must be an integer from 0 (no output layer) to {MAX_SIZE}, got {m.output_size!r}")
    _choice(problems, "model.activation", m.activation, tuple(ACTIVATIONS))
    _choice(problems, "model.gru_reset", m.gru_reset, GRU_RESETS)
    _choice(problems, "model.output_activation", m.output_activation, OUTPUT_ACTIVATIONS)
    if not isinstance(m.bias, bool):
        problems.append(f"model.bias: must be true or false, got {m.bias!r}")
    loss = spec.loss
    _choice(problems, "loss.kind", loss.kind, LOSSES)
    _choice(problems, "loss.at", loss.at, AT)
    _choice(problems, "loss.reduction", loss.reduction, REDUCTIONS)
    b = spec.bptt
    _positive(problems, "bptt.steps", b.steps, MAX_STEPS)
    if not _is_int(b.truncate) or b.truncate < 0:
        problems.append(f"bptt.truncate: must be an integer >= 0 (0 = full BPTT), got {b.truncate!r}")
    elif _is_int(b.steps) and 1 <= b.steps <= MAX_STEPS and b.truncate > b.steps:
        problems.append(f"bptt.truncate: must be at most bptt.steps = {b.steps} (0 = full BPTT), got {b.truncate}")
    if isinstance(b.clip, bool) or not isinstance(b.clip, (int, float)) or not 0 <= b.clip < float("inf"):
        problems.append(f"bptt.clip: must be a finite number >= 0 (0 = no clipping), got {b.clip!r}")
    _choice(problems, "bptt.truncate_style", b.truncate_style, TRUNCATE_STYLES)
    if isinstance(b.clip_norm, bool) or not isinstance(b.clip_norm, (int, float)) or not 0 <= b.clip_norm < float("inf"):
        problems.append(f"bptt.clip_norm: must be a finite number >= 0 (0 = no clipping), got {b.clip_norm!r}")
    elif b.clip and b.clip_norm:
        problems.append("bptt.clip_norm: at most one of bptt.clip and bptt.clip_norm may be set (non-zero)")
    problems += _check_example(spec.example)
    if problems:
        return problems
    # contradictions between fields, once every field is well-formed
    row = LOSSES[loss.kind]
    if m.output_size == 0:
        if not row.without_output_layer:
            alone = [k for k, r in LOSSES.items() if r.without_output_layer]
            problems.append(f"loss.kind: {loss.kind!r} needs an output layer (model.output_size > 0); "
                            f"without one use {' or '.join(alone)}")
        if m.output_activation != "identity":
            problems.append("model.output_activation: must be 'identity' when model.output_size = 0 (no output layer)")
    if row.target == "class" and m.output_size and m.output_size < 2:
        problems.append(f"model.output_size: {loss.kind} needs at least 2 classes")
    if m.cell in CELLS and CELLS[m.cell].GATES and m.activation != "tanh":
        problems.append(f"model.activation: an {m.cell} cell's candidate and cell output use tanh "
                        f"(its gates use sigmoid); got {m.activation!r}")
    if m.cell != "gru" and m.gru_reset != "after":
        problems.append(f"model.gru_reset: only for cell = 'gru', not {m.cell!r}")
    if m.output_activation not in row.outputs:
        allowed = " or ".join(repr(o) + (" (logits)" if o == "identity" else "") for o in row.outputs)
        problems.append(f"model.output_activation: {loss.kind} needs {allowed}, not {m.output_activation!r}")
    problems += notation.check(spec.preset, spec.notation.layout, spec.notation.names, layers=m.layers,
                               output=m.output_size > 0, bias=m.bias, cell=CELLS[m.cell], reset=m.gru_reset)
    return problems


def _check_example(ex: Example) -> list[str]:
    problems = []
    if not _is_int(ex.seed) or not 0 <= ex.seed < 2**32:
        problems.append(f"example.seed: must be an integer from 0 to {2**32 - 1}, got {ex.seed!r}")
    for key in ("scale", "eta"):
        value = getattr(ex, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
            problems.append(f"example.{key}: must be a number in (0, 10], got {value!r}")
    if not isinstance(ex.tokens, tuple) or not all(isinstance(w, str) and w.isascii() and w.isalnum()
                                                   for w in ex.tokens):
        problems.append("example.tokens: must be a list of words (ASCII letters and digits)")
    return problems


def no_effect(spec: Spec) -> list[str]:
    """Settings that are valid but change nothing, one warning each (the CLI prints them)."""
    out = []
    if spec.bptt.truncate and spec.bptt.truncate >= spec.bptt.steps:
        out.append(f"bptt.truncate = {spec.bptt.truncate} has no effect with bptt.steps = "
                   f"{spec.bptt.steps}: every gradient already goes back at most T steps (full BPTT)")
    return out


# --------------------------------------------------------------------------- TOML

_REQUIRED = object()
_SCHEMA: dict[str, dict[str, tuple[str, object]]] = {
    "": {"name": ("str", _REQUIRED), "title": ("str", ""), "model": ("table", _REQUIRED),
         "loss": ("table", {}), "bptt": ("table", {}), "notation": ("table", {}), "example": ("table", {})},
    "model": {"cell": ("str", "elman"), "gru_reset": ("str", "after"), "input_size": ("int", _REQUIRED),
              "hidden_sizes": ("int_list", _REQUIRED), "output_size": ("int", 0),
              "activation": ("str", "tanh"), "output_activation": ("str", "identity"),
              "bias": ("bool", True)},
    "loss": {"kind": ("str", "mse"), "at": ("str", "every_step"), "reduction": ("str", "sum")},
    "bptt": {"steps": ("int", 3), "truncate": ("int", 0), "clip": ("float", 0.0),
             "truncate_style": ("str", "window"), "clip_norm": ("float", 0.0)},
    "notation": {"preset": ("str", ""), "layout": ("str", ""), "names": ("names", {})},
    "example": {"seed": ("int", 0), "scale": ("float", 0.5), "eta": ("float", 0.1), "tokens": ("str_list", ())},
}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "bool": "true or false",
               "float": "a number", "table": "a table", "int_list": "a list of integers",
               "names": "a table of role = \"symbol\"", "str_list": "a list of strings"}


def _read_table(data: dict[str, Any], table: str, problems: list[str]) -> dict[str, Any]:
    """Check one table's keys and types; return its values with defaults filled in."""
    schema = _SCHEMA[table]
    prefix = f"{table}." if table else ""
    out: dict[str, Any] = {}
    for key in data:
        if key not in schema:
            problems.append(f"{prefix}{notation.toml_key(key)}: unknown key; allowed: {', '.join(schema)}")
    for key, (kind, default) in schema.items():
        if key not in data:
            if default is _REQUIRED:
                problems.append(f"{prefix}{key}: missing required key ({_TYPE_WORDS[kind]})")
            out[key] = () if kind == "names" else default
            continue
        value = data[key]
        ok = {
            "str": isinstance(value, str),
            "int": _is_int(value),
            "bool": isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "table": isinstance(value, dict),
            "int_list": isinstance(value, list),
            "str_list": isinstance(value, list) and all(isinstance(w, str) for w in value),
            "names": isinstance(value, dict),
        }[kind]
        if not ok:
            problems.append(f"{prefix}{key}: must be {_TYPE_WORDS[kind]}, got {_describe(value)}")
            out[key] = default if default is not _REQUIRED else None
            continue
        if kind == "int_list":
            for i, item in enumerate(value):
                if not _is_int(item):
                    problems.append(f"{prefix}{key}[{i}]: must be an integer, got {_describe(item)}")
            value = tuple(value)
        if kind == "names":
            for role, symbol in value.items():
                if not isinstance(symbol, str):
                    problems.append(f"{prefix}{key}.{notation.toml_key(role)}: must be a string, got {_describe(symbol)}")
            value = tuple((r, s) for r, s in value.items() if isinstance(s, str))
        if kind == "float":
            value = float(value)
        if kind == "str_list":
            value = tuple(value)
        out[key] = value
    return out


def _describe(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


def _depth(table: dict, limit: int) -> int:
    """How deeply tables and arrays nest below the top `table`, counting no further than `limit` + 1."""
    deepest, level = 0, [(x, 0) for x in table.values()]
    while level:
        item, depth = level.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            level += [(x, depth + 1) for x in (item.values() if isinstance(item, dict) else item)]
    return deepest


def from_dict(data: dict[str, Any]) -> Spec:
    """Build a spec from TOML-shaped data; every problem is reported at once."""
    if not isinstance(data, dict):
        raise SpecError([f"spec: must be a table (a dict), got {type(data).__name__}"])
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise SpecError([f"spec: tables and arrays nest more than {MAX_DEPTH} levels deep"])
    problems: list[str] = []
    top = _read_table(data, "", problems)
    tables = {t: _read_table(top[t] if isinstance(top[t], dict) else {}, t, problems)
              for t in ("model", "loss", "bptt", "notation", "example")}
    if problems:
        raise SpecError(problems)
    model = tables["model"]
    return Spec(
        name=top["name"], title=top["title"],
        model=Model(**model),
        loss=Loss(**tables["loss"]), bptt=BPTT(**tables["bptt"]),
        notation=Notation(**tables["notation"]), example=Example(**tables["example"]),
    )


def load(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    if path.is_dir():
        raise SpecError([f"{path}: is a directory, not a spec file"])
    try:
        with path.open("rb") as f:   # bounded: /dev/zero or a huge file fails at once
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file ({exc.strerror or exc})"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError([f"{path}: larger than {MAX_FILE_BYTES} bytes; a spec is a short TOML file"])
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")   # a UTF-8 BOM is allowed
    except UnicodeDecodeError:
        raise SpecError([f"{path}: not a UTF-8 text file; a spec is TOML text"]) from None
    if not text.strip():
        raise SpecError([f"{path}: the file is empty; a spec needs at least name and [model]"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: not valid TOML ({exc})"]) from None
    except RecursionError:
        raise SpecError([f"{path}: tables and arrays nest more than {MAX_DEPTH} levels deep"]) from None
    return from_dict(data)


# --------------------------------------------------------------------------- presets

def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("derive.presets").iterdir()
                  if p.name.endswith(".toml"))


def preset(name: str) -> Spec:
    if name not in preset_names():
        raise SpecError([f"--preset: unknown preset {name!r}; allowed: {', '.join(preset_names())}"])
    text = resources.files("derive.presets").joinpath(f"{name}.toml").read_text("utf-8")
    return from_dict(tomllib.loads(text))


def preset_source(name: str) -> str:
    """The source document a preset reproduces, from the first comment line of its file."""
    text = resources.files("derive.presets").joinpath(f"{name}.toml").read_text("utf-8")
    return text.splitlines()[0].lstrip("# ").strip()


def preset_text(name: str) -> str:
    """A bundled preset's TOML, as shipped."""
    if name not in preset_names():
        raise SpecError([f"preset: unknown preset {name!r}; allowed: {', '.join(preset_names())}"])
    return resources.files("derive.presets").joinpath(f"{name}.toml").read_text("utf-8")


def starting_spec(name: str, base: str = "elman_softmax") -> str:
    """The TOML of a new spec called `name`, a copy of the preset `base` (`derive init`)."""
    if base not in preset_names():
        raise SpecError([f"--preset: unknown preset {base!r}; allowed: {', '.join(preset_names())}"])
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise SpecError([f"name: must be an ASCII Python identifier, got {_describe(name)}"])
    lines = preset_text(base).splitlines(keepends=True)
    (i,) = [i for i, line in enumerate(lines) if line.startswith("name = ")]
    lines[i] = f'name = "{name}"\n'
    text = (f"# a starting spec, copied from the preset {base}: edit it, then run\n"
            f"#     derive build {name}.toml\n" + "".join(lines))
    from_dict(tomllib.loads(text))   # the name is validated like any spec's (length, reserved)
    return text
