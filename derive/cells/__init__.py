"""The cell registry: one module per recurrent cell.

A cell module declares its parameters by role and gate (`PARAMS`, a tuple of
`base.Param`), the roles of its state (`STATE`), and `step(sym, layer, time, below)`: its
step as assignments between matrix symbols. `unroll` loops the step over T and the
layers; the engine differentiates whatever the step assigns, through the
vector-Jacobian table of `bptt`. Adding a cell is one module here plus its notation
rows (README, "How to add").
"""
from __future__ import annotations

from types import ModuleType

from derive.cells import elman, gru, lstm

CELLS: dict[str, ModuleType] = {"elman": elman, "lstm": lstm, "gru": gru}
