"""The model spec: bundled presets, the TOML round trip, and bad input of every kind.

Why: CONTRACT §1-2 promise that every bad spec is rejected with one line naming the key
(`derive: error: ...`, exit 2) and that no TOML key goes unread.  The table below walks
every level of the schema (unknown keys, wrong types, out-of-range sizes, unknown enum
values, contradictions between fields, bad or reserved symbol names, unreadable files)
and checks both the library error (`SpecError`) and the command line.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest

from derive import cli
from derive import spec as specs
from derive.spec import BPTT, Loss, Model, Notation, Spec, SpecError

PRESETS = specs.preset_names()
TRAINING_PRESETS = ["chunked_elman"]   # presets of issue 13 (training loops), not of a source document
EXPECTED_PRESETS = ["chunked_elman", "elman_softmax", "gru_softmax", "lstm_softmax", "many_to_one_bce", "stacked_mse", "truncated_elman", "uwv_softmax"]


# --------------------------------------------------------------------------- a tiny TOML writer

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text for nested plain data: scalars first, then one [table] per dict."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{_key(k)}"
            lines.append(f"\n[{name}]")
            lines.append(dumps(v, prefix=name + "."))
    return "\n".join(lines)


def test_writer_round_trips_plain_data() -> None:
    data = {"a": 1, "b": "x \"y\" \\ z", "c": [1, 2], "d": {"e": 1.5, "f": {"g h": True}}}
    assert tomllib.loads(dumps(data)) == data


# --------------------------------------------------------------------------- presets

def test_bundled_presets_are_the_five_documents() -> None:
    assert PRESETS == EXPECTED_PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_is_named_after_its_file(name: str) -> None:
    s = specs.preset(name)
    assert isinstance(s, Spec)
    assert s.name == name
    assert s.title and "\n" not in s.title
    assert specs.preset_source(name).startswith("document 00") or name in TRAINING_PRESETS


@pytest.mark.parametrize("name, expected", [
    ("stacked_mse", dict(hidden_sizes=(2, 1), input_size=3, output_size=0, activation="tanh", bias=True,
                         kind="mse", at="every_step", steps=3, truncate=0, clip=0.0, preset="doc000", layout="row")),
    ("uwv_softmax", dict(hidden_sizes=(4,), input_size=3, output_size=3, output_activation="softmax", bias=False,
                         kind="cross_entropy", at="every_step", steps=3, truncate=0, preset="doc001", layout="column")),
    ("elman_softmax", dict(hidden_sizes=(4,), input_size=3, output_size=3, activation="tanh",
                           output_activation="softmax", bias=True, kind="cross_entropy", at="every_step", steps=3,
                           truncate=0, clip=0.0, preset="d2l", layout="column")),
    ("many_to_one_bce", dict(hidden_sizes=(1,), input_size=1, output_size=1, output_activation="sigmoid", bias=False,
                             kind="bce", at="last_step", steps=3, preset="doc003", layout="row")),
    ("truncated_elman", dict(hidden_sizes=(4,), output_size=3, output_activation="softmax", bias=True,
                             kind="cross_entropy", steps=3, truncate=2, clip=5.0, preset="d2l", layout="column")),
])
def test_preset_reproduces_its_document(name: str, expected: dict[str, Any]) -> None:
    s = specs.preset(name)
    flat = {**dataclasses.asdict(s.model), **dataclasses.asdict(s.loss), **dataclasses.asdict(s.bptt),
            "preset": s.notation.preset, "layout": s.layout}
    flat["hidden_sizes"] = tuple(flat["hidden_sizes"])
    for key, value in expected.items():
        assert flat[key] == value, key


def test_unknown_preset_names_the_option_and_lists_the_allowed() -> None:
    with pytest.raises(SpecError) as info:
        specs.preset("nope")
    assert "--preset" in str(info.value)
    for name in PRESETS:
        assert name in str(info.value)


# --------------------------------------------------------------------------- round trip

CONVENTION_KEYS = {
    "": {"name", "title", "model", "loss", "bptt", "notation", "example"},
    "model": {"cell", "input_size", "hidden_sizes", "output_size", "activation", "output_activation", "bias"},
    "loss": {"kind", "at", "reduction"},
    "bptt": {"steps", "truncate", "clip", "truncate_style", "clip_norm"},
    "notation": {"preset", "layout", "names"},
    "example": {"seed", "scale", "eta", "tokens"},
}


@pytest.mark.parametrize("name", PRESETS)
def test_to_dict_has_exactly_the_conventions_keys(name: str) -> None:
    d = specs.preset(name).to_dict()
    assert set(d) == CONVENTION_KEYS[""]
    for table in ("model", "loss", "bptt", "notation", "example"):
        extra = {"gru_reset"} if table == "model" and d["model"]["cell"] == "gru" else set()
        assert set(d[table]) == CONVENTION_KEYS[table] | extra, table
    assert isinstance(d["model"]["hidden_sizes"], list)
    assert isinstance(d["notation"]["names"], dict)
    json.dumps(d)  # plain data only


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trips_through_toml(name: str, tmp_path: Path) -> None:
    s = specs.preset(name)
    text = dumps(s.to_dict())
    again = specs.from_dict(tomllib.loads(text))
    assert again.to_dict() == s.to_dict()
    assert _same(again, s)
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    assert _same(specs.load(path), s)


def _same(a: Spec, b: Spec) -> bool:
    """Equal specs, reading `notation.names` as a mapping."""
    names = lambda s: dataclasses.replace(s, notation=dataclasses.replace(s.notation, names=()))
    return names(a) == names(b) and dict(a.notation.names) == dict(b.notation.names)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_hashable_and_equals_its_python_twin(name: str) -> None:
    s = specs.preset(name)
    hash(s)
    twin = dataclasses.replace(s, notation=Notation(s.notation.preset, s.notation.layout, ()))
    assert s == twin


def test_round_trip_keeps_name_overrides_and_resolves_the_default_layout(tmp_path: Path) -> None:
    s = Spec(name="custom", title="Custom names",
             model=Model(input_size=2, hidden_sizes=(3, 2), output_size=2, activation="relu",
                         output_activation="softmax", bias=True),
             loss=Loss(kind="cross_entropy", at="last_step", reduction="mean"),
             bptt=BPTT(steps=5, truncate=3, clip=1.5),
             notation=Notation(preset="cs231n", names=(("input_weight", "A_x"), ("hidden", "s"))))
    d = s.to_dict()
    assert d["notation"]["layout"] == "row"  # the cs231n preset's own layout
    assert d["notation"]["names"] == {"input_weight": "A_x", "hidden": "s"}
    path = tmp_path / "custom.toml"
    path.write_text(dumps(d), encoding="utf-8")
    again = specs.load(path)
    assert again.to_dict() == d
    assert again.layout == s.layout == "row"
    assert again.notation.names == s.notation.names
    # to_dict writes the resolved layout, so only `notation.layout` differs ("" -> "row")
    assert again.notation.layout == "row" and s.notation.layout == ""
    assert dataclasses.replace(again, notation=s.notation) == s


def test_defaults_fill_every_optional_key() -> None:
    s = specs.from_dict({"name": "tiny", "model": {"input_size": 1, "hidden_sizes": [1]}})
    assert s.to_dict() == {
        "name": "tiny", "title": "",
        "model": {"cell": "elman", "input_size": 1, "hidden_sizes": [1], "output_size": 0,
                  "activation": "tanh", "output_activation": "identity", "bias": True},
        "loss": {"kind": "mse", "at": "every_step", "reduction": "sum"},
        "bptt": {"steps": 3, "truncate": 0, "clip": 0.0, "truncate_style": "window", "clip_norm": 0.0},
        "notation": {"preset": "d2l", "layout": "column", "names": {}},
        "example": {"seed": 0, "scale": 0.5, "eta": 0.1, "tokens": []},
    }


def test_integer_clip_is_read_as_a_float() -> None:
    s = specs.from_dict({"name": "tiny", "model": {"input_size": 1, "hidden_sizes": [1]}, "bptt": {"clip": 5}})
    assert s.bptt.clip == 5.0 and isinstance(s.bptt.clip, float)


def test_spec_is_frozen() -> None:
    s = specs.preset("stacked_mse")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model.input_size = 7  # type: ignore[misc]


def test_with_steps_changes_only_the_steps() -> None:
    s = specs.preset("elman_softmax")
    s7 = s.with_steps(7)
    assert s7.bptt.steps == 7
    assert dataclasses.replace(s7, bptt=s.bptt) == s
    with pytest.raises(SpecError, match="bptt.steps"):
        s.with_steps(0)


# --------------------------------------------------------------------------- bad specs

def base() -> dict[str, Any]:
    """A valid spec as TOML-shaped data; each bad case changes one thing."""
    return {
        "name": "ok_rnn",
        "title": "A valid spec",
        "model": {"cell": "elman", "input_size": 3, "hidden_sizes": [4], "output_size": 2,
                  "activation": "tanh", "output_activation": "softmax", "bias": True},
        "loss": {"kind": "cross_entropy", "at": "every_step", "reduction": "sum"},
        "bptt": {"steps": 3, "truncate": 0, "clip": 0.0},
        "notation": {"preset": "d2l", "layout": "column", "names": {}},
        "example": {"seed": 0, "scale": 0.5, "eta": 0.1, "tokens": []},
    }


def change(path: str, value: Any = ..., **more: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or, with value ..., delete) the dotted key `path`; `more` sets further keys."""
    changes = [(path, value)] + [(k.replace("__", "."), v) for k, v in more.items()]

    def apply(data: dict[str, Any]) -> None:
        for dotted, v in changes:
            *parents, last = dotted.split(".")
            table = data
            for p in parents:
                table = table.setdefault(p, {})
            if v is ...:
                del table[last]
            else:
                table[last] = v
    return apply


#: (id, change to the valid spec, substring the message must contain)
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # unknown keys, at every level
    ("unknown-top-level-key", change("version", 2), "version: unknown key"),
    ("unknown-model-key", change("model.depth", 2), "model.depth: unknown key"),
    ("unknown-model-subtable", change("model.extra", {"a": 1}), "model.extra: unknown key"),
    ("unknown-loss-key", change("loss.weight", 0.5), "loss.weight: unknown key"),
    ("unknown-bptt-key", change("bptt.learning_rate", 0.1), "bptt.learning_rate: unknown key"),
    ("unknown-notation-key", change("notation.style", "bold"), "notation.style: unknown key"),
    ("unknown-top-level-table", change("training", {"epochs": 3}), "training: unknown key"),
    # missing required keys
    ("missing-name", change("name"), "name: missing required key"),
    ("missing-model", change("model"), "model: missing required key"),
    ("missing-input-size", change("model.input_size"), "model.input_size: missing required key"),
    ("missing-hidden-sizes", change("model.hidden_sizes"), "model.hidden_sizes: missing required key"),
    # wrong types
    ("name-not-a-string", change("name", 5), "name: must be a string"),
    ("title-not-a-string", change("title", ["a"]), "title: must be a string"),
    ("model-not-a-table", change("model", 3), "model: must be a table"),
    ("loss-not-a-table", change("loss", "mse"), "loss: must be a table"),
    ("input-size-string", change("model.input_size", "3"), "model.input_size: must be an integer"),
    ("input-size-float", change("model.input_size", 3.0), "model.input_size: must be an integer"),
    ("input-size-bool", change("model.input_size", True), "model.input_size: must be an integer"),
    ("hidden-sizes-scalar", change("model.hidden_sizes", 4), "model.hidden_sizes: must be a list"),
    ("hidden-sizes-item-string", change("model.hidden_sizes", [2, "x"]), "model.hidden_sizes[1]"),
    ("hidden-sizes-item-bool", change("model.hidden_sizes", [True]), "model.hidden_sizes[0]"),
    ("output-size-float", change("model.output_size", 2.5), "model.output_size: must be an integer"),
    ("bias-string", change("model.bias", "yes"), "model.bias: must be true or false"),
    ("activation-number", change("model.activation", 1), "model.activation: must be a string"),
    ("kind-list", change("loss.kind", ["mse"]), "loss.kind: must be a string"),
    ("steps-float", change("bptt.steps", 2.5), "bptt.steps: must be an integer"),
    ("truncate-string", change("bptt.truncate", "2"), "bptt.truncate: must be an integer"),
    ("clip-string", change("bptt.clip", "big"), "bptt.clip: must be a number"),
    ("clip-bool", change("bptt.clip", True), "bptt.clip: must be a number"),
    ("layout-bool", change("notation.layout", False), "notation.layout: must be a string"),
    ("names-not-a-table", change("notation.names", "W"), "notation.names: must be a table"),
    ("names-value-not-a-string", change("notation.names.input_weight", 3), "notation.names.input_weight"),
    # zero, negative and too large sizes
    ("input-size-zero", change("model.input_size", 0), "model.input_size"),
    ("input-size-negative", change("model.input_size", -3), "model.input_size"),
    ("input-size-too-large", change("model.input_size", 10**7), "model.input_size"),
    ("hidden-sizes-empty", change("model.hidden_sizes", []), "model.hidden_sizes"),
    ("hidden-size-zero", change("model.hidden_sizes", [0]), "model.hidden_sizes[0]"),
    ("hidden-size-negative", change("model.hidden_sizes", [2, -1]), "model.hidden_sizes[1]"),
    ("too-many-layers", change("model.hidden_sizes", [1] * (specs.MAX_LAYERS + 1)), "model.hidden_sizes"),
    ("output-size-negative", change("model.output_size", -1), "model.output_size"),
    ("steps-zero", change("bptt.steps", 0), "bptt.steps"),
    ("steps-negative", change("bptt.steps", -2), "bptt.steps"),
    ("steps-too-many", change("bptt.steps", specs.MAX_STEPS + 1), "bptt.steps"),
    ("truncate-negative", change("bptt.truncate", -1), "bptt.truncate"),
    ("clip-negative", change("bptt.clip", -1.0), "bptt.clip"),
    ("clip-infinite", change("bptt.clip", math.inf), "bptt.clip"),
    ("clip-nan", change("bptt.clip", math.nan), "bptt.clip"),
    # unknown enum values
    ("cell-unknown", change("model.cell", "transformer"), "model.cell: 'transformer' is not one of elman, lstm, gru"),
    ("gru-reset-unknown", change("model.gru_reset", "middle"), "model.gru_reset: 'middle' is not one of after, before"),
    ("gru-reset-on-elman", change("model.gru_reset", "before"), "model.gru_reset: only for cell = 'gru', not 'elman'"),
    ("gru-reset-on-lstm", change("model.cell", "lstm", model__gru_reset="before"),
     "model.gru_reset: only for cell = 'gru', not 'lstm'"),
    ("lstm-relu", change("model.cell", "lstm", model__activation="relu"),
     "model.activation: an lstm cell's candidate and cell output use tanh (its gates use sigmoid); got 'relu'"),
    ("gru-sigmoid", change("model.cell", "gru", model__activation="sigmoid"),
     "model.activation: an gru cell's candidate"),
    ("gate-on-elman", change("notation.names", {"input_weight.i": "W_xi"}),
     "notation.names.'input_weight.i': unknown gate 'i'; an Elman cell has no gates"),
    ("gate-unknown", change("model.cell", "gru", notation__names={"input_weight.i": "W_xi"}),
     "notation.names.'input_weight.i': unknown gate 'i'; this cell's gates are r, z, n"),
    ("gate-role-not-gated", change("model.cell", "lstm", notation__names={"hidden.i": "H"}),
     "notation.names.'hidden.i': unknown role"),
    ("gate-symbol-bad", change("model.cell", "lstm", notation__names={"input_weight.f": "W f"}),
     "notation.names.'input_weight.f': 'W f' is not a symbol name"),
    ("gate-symbol-clash", change("model.cell", "lstm", notation__names={"input_weight.f": "W_q", "input_weight.i": "W_q"}),
     "notation.names.'input_weight.f': 'W_q' is already used for notation.names.'input_weight.i'"),
    ("activation-gelu", change("model.activation", "gelu"), "model.activation: 'gelu' is not one of"),
    ("activation-case", change("model.activation", "Tanh"), "model.activation: 'Tanh'"),
    ("output-activation-tanh", change("model.output_activation", "tanh"), "model.output_activation: 'tanh'"),
    ("loss-kind-hinge", change("loss.kind", "hinge"), "loss.kind: 'hinge' is not one of"),
    ("loss-at-first", change("loss.at", "first_step"), "loss.at: 'first_step' is not one of"),
    ("reduction-max", change("loss.reduction", "max"), "loss.reduction: 'max' is not one of"),
    ("notation-preset-unknown", change("notation.preset", "goodfellow"), "notation.preset: 'goodfellow'"),
    ("notation-layout-unknown", change("notation.layout", "diagonal"), "notation.layout: 'diagonal'"),
    # contradictions between fields
    ("cross-entropy-one-class", change("model.output_size", 1), "model.output_size"),
    ("cross-entropy-sigmoid", change("model.output_activation", "sigmoid"), "model.output_activation"),
    ("bce-softmax", change("loss.kind", "bce"), "model.output_activation"),
    ("cross-entropy-without-output-layer", change("model.output_size", 0, model__output_activation="identity"),
     "loss.kind"),
    ("bce-without-output-layer", change("model.output_size", 0, model__output_activation="identity",
                                        loss__kind="bce"), "loss.kind"),
    ("softmax-without-output-layer", change("model.output_size", 0, loss__kind="mse"), "model.output_activation"),
    # the spec's own name and title
    ("name-starts-with-digit", change("name", "1rnn"), "name: must be an ASCII Python identifier"),
    ("name-with-dash", change("name", "my-rnn"), "name: must be an ASCII Python identifier"),
    ("name-with-path", change("name", "../evil"), "name: must be an ASCII Python identifier"),
    ("name-non-ascii", change("name", "модель"), "name: must be an ASCII Python identifier"),
    ("name-empty", change("name", ""), "name: must be an ASCII Python identifier"),
    ("name-keyword", change("name", "class"), "name: 'class' is reserved"),
    ("name-builtin", change("name", "print"), "name: 'print' is reserved"),
    ("name-module-global", change("name", "np"), "name: 'np' is reserved"),
    ("name-private", change("name", "_rnn"), "name: '_rnn' is reserved"),
    ("title-with-latex", change("title", "cost $x^2$"), "title: must be printable ASCII text"),
    ("title-with-newline", change("title", "two\nlines"), "title: must be printable ASCII text"),
    ("title-closing-a-docstring", change("title", 'a """ b'), "title: must be printable ASCII text"),
    ("title-not-ascii", change("title", "Рекуррентные сети"), "title: must be printable ASCII text"),
    # bad symbol names
    ("symbol-double-underscore", change("notation.names.input_weight", "W__x"), "notation.names.input_weight"),
    ("symbol-two-subscripts", change("notation.names.input_weight", "W_x_h"), "notation.names.input_weight"),
    ("symbol-trailing-underscore", change("notation.names.bias", "b_"), "notation.names.bias"),
    ("symbol-leading-digit", change("notation.names.hidden", "1h"), "notation.names.hidden"),
    ("symbol-leading-underscore", change("notation.names.hidden", "_h"), "notation.names.hidden"),
    ("symbol-dash", change("notation.names.bias", "b-1"), "notation.names.bias"),
    ("symbol-latex", change("notation.names.output", "\\hat{y}"), "notation.names.output"),
    ("symbol-braces", change("notation.names.input_weight", "W_{xh}"), "notation.names.input_weight"),
    ("symbol-space", change("notation.names.output_weight", "W y"), "notation.names.output_weight"),
    ("symbol-empty", change("notation.names.output_bias", ""), "notation.names.output_bias"),
    ("symbol-non-ascii", change("notation.names.recurrent_weight", "Ŵ"), "notation.names.recurrent_weight"),
    ("symbol-code", change("notation.names.pre_activation", "a;import os"), "notation.names.pre_activation"),
    # reserved symbol names
    ("symbol-reserved-api", change("notation.names.input_weight", "forward"),
     "notation.names.input_weight: 'forward' is reserved"),
    ("symbol-keyword", change("notation.names.recurrent_weight", "lambda"),
     "notation.names.recurrent_weight: 'lambda' is reserved"),
    ("symbol-soft-keyword", change("notation.names.hidden", "match"), "notation.names.hidden: 'match' is reserved"),
    ("symbol-builtin", change("notation.names.bias", "sum"), "notation.names.bias: 'sum' is reserved"),
    ("symbol-module-api", change("notation.names.hidden", "SPEC"), "notation.names.hidden: 'SPEC' is reserved"),
    ("symbol-module-api-step", change("notation.names.hidden", "step"), "notation.names.hidden: 'step' is reserved"),
    ("symbol-clash", change("notation.names.input_weight", "W_hh"), "'W_hh' is already used"),
    ("symbol-clash-hidden", change("notation.names.hidden", "W_hy"), "notation.names.hidden: 'W_hy' is already used for notation.names.output_weight"),
    # unknown roles
    ("unknown-role", change("notation.names.weight", "W"), "notation.names.weight: unknown role"),
    ("fixed-role-delta", change("notation.names.delta", "d"), "notation.names.delta: unknown role"),
    ("fixed-role-input", change("notation.names.input", "u"), "notation.names.input: unknown role"),
]
BAD_IDS = [case[0] for case in BAD]
assert len(BAD_IDS) == len(set(BAD_IDS))


def bad_data(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = base()
    mutate(data)
    return data


def test_the_base_of_the_bad_cases_is_valid() -> None:
    specs.from_dict(base())


@pytest.mark.parametrize("mutate, key", [c[1:] for c in BAD], ids=BAD_IDS)
def test_bad_spec_is_rejected_naming_the_key(mutate: Callable, key: str, tmp_path: Path) -> None:
    data = bad_data(mutate)
    with pytest.raises(SpecError) as info:
        specs.from_dict(data)
    assert key in str(info.value)
    assert all("\n" not in m for m in info.value.messages)
    # the same through a TOML file
    path = tmp_path / "bad.toml"
    path.write_text(dumps(data), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        specs.load(path)
    assert key in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    data = base()
    change("model.input_size", 0, model__activation="gelu", loss__at="first", bptt__truncate=-1)(data)
    with pytest.raises(SpecError) as info:
        specs.from_dict(data)
    text = str(info.value)
    for key in ("model.input_size", "model.activation", "loss.at", "bptt.truncate"):
        assert key in text
    assert len(info.value.messages) == 4


@pytest.mark.parametrize("kwargs, key", [
    (dict(model=Model(input_size=0, hidden_sizes=(2,))), "model.input_size"),
    (dict(model=Model(input_size=2, hidden_sizes=(2, 0))), "model.hidden_sizes[1]"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,), activation="swish")), "model.activation"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,), bias=1)), "model.bias"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,)), bptt=BPTT(steps=0)), "bptt.steps"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,)), bptt=BPTT(clip=-1.0)), "bptt.clip"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,)), loss=Loss(kind="bce")), "loss.kind"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,)), notation=Notation(preset="nope")), "notation.preset"),
    (dict(model=Model(input_size=2, hidden_sizes=(2,)), notation=Notation(names=(("hidden", "h h"),))),
     "notation.names.hidden"),
])
def test_spec_built_in_python_is_validated_too(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        Spec(name="py_rnn", **kwargs)
    assert key in str(info.value)


# --------------------------------------------------------------------------- bad files

def _file_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """id -> (path, substring of the message)."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    blank = tmp_path / "blank.toml"
    blank.write_text("  \n\t\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    nul = tmp_path / "nul.toml"
    nul.write_bytes(b"\x00\x00\x00name = 1")
    not_toml = tmp_path / "prose.toml"
    not_toml.write_text("This is not TOML, it is a sentence.\n")
    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps(base()))
    missing = tmp_path / "missing.toml"
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    return {
        "empty": (empty, "empty"),
        "blank": (blank, "empty"),
        "binary": (binary, "not a UTF-8 text file"),
        "nul-bytes": (nul, "not valid TOML"),
        "not-toml": (not_toml, "not valid TOML"),
        "json": (json_file, "not valid TOML"),
        "missing": (missing, "cannot read"),
        "directory": (folder, "is a directory"),
    }


FILE_IDS = ["empty", "blank", "binary", "nul-bytes", "not-toml", "json", "missing", "directory"]


@pytest.mark.parametrize("case", FILE_IDS)
def test_bad_file_is_rejected_naming_the_file(case: str, tmp_path: Path) -> None:
    path, words = _file_cases(tmp_path)[case]
    with pytest.raises(SpecError) as info:
        specs.load(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


# --------------------------------------------------------------------------- the command line

def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n") and err.count("\n") == 1
    assert lines[0].startswith("derive: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("mutate, key", [c[1:] for c in BAD], ids=BAD_IDS)
def test_cli_bad_spec_one_line_exit_2(mutate: Callable, key: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(dumps(bad_data(mutate)), encoding="utf-8")
    assert cli.main(["check", str(path)]) == 2
    assert key in _one_error_line(capsys)


@pytest.mark.parametrize("case", FILE_IDS)
def test_cli_bad_file_one_line_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, words = _file_cases(tmp_path)[case]
    assert cli.main(["check", str(path)]) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and words in line


@pytest.mark.parametrize("argv, words", [
    (["check", "--preset", "nope"], "--preset"),
    (["check", "--preset", "stacked_mse", "--steps", "0"], "--steps"),
    (["check", "--preset", "stacked_mse", "--steps", str(specs.MAX_STEPS + 1)], "--steps"),
    (["check", "--preset", "stacked_mse", "--steps", "three"], "--steps"),
    (["check"], "--preset"),
    (["check", "a.toml", "--preset", "stacked_mse"], "--preset"),
    (["check", "--preset", "stacked_mse", "--bogus"], "--bogus"),
    (["frobnicate"], "frobnicate"),
], ids=["unknown-preset", "steps-zero", "steps-too-many", "steps-not-int", "nothing-to-check",
        "file-and-preset", "unknown-option", "unknown-command"])
def test_cli_bad_usage_one_line_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert words in _one_error_line(capsys)


def test_cli_presets_lists_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["presets"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == PRESETS
    for line in lines:
        assert "document 00" in line or line.split()[0] in TRAINING_PRESETS


@pytest.mark.parametrize("where", ["top", "names"])
def test_cli_error_stays_one_line_with_a_newline_in_a_key(where: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = base()
    if where == "top":
        data["bad\nkey"] = 1
    else:
        data["notation"]["names"]["in\nput"] = "W"
    path = tmp_path / "bad.toml"
    path.write_text(dumps(data), encoding="utf-8")
    assert cli.main(["check", str(path)]) == 2
    _one_error_line(capsys)
