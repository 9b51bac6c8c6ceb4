"""Notation: role -> symbol for every preset, in exact Python and LaTeX strings.

Why: handouts must reproduce each source document's own symbols (CONTRACT §2, issue 2
item 3), and generated code must use the same names.  These are exact-string tests, so
any change to how a symbol, its layer number or its time index is written shows up here.

How names are formed (what the tables pin down):
* Python: the base name; with stacked layers a per-layer symbol gets the layer number,
  `W` -> `W_1`, and a name that already has `_` gets it appended, `W_xh` -> `W_xh1`.
* LaTeX: the part after `_` is a subscript (`W_xh` -> `W_{xh}`), a multi-letter head is
  `\\mathit{...}`.  Document 000 (`doc000`) writes the time as a superscript and the layer
  as a subscript (`h^t_1` -> `h_{1}^{t}`); every other preset writes the time as a
  subscript and the layer as `^{(l)}`.  Deltas are `\\delta` with the hidden symbol (or
  `y` for the output delta) as superscript, except in doc000 (`\\delta_{1}^{t}`, `\\delta_{y}^{t}`).
"""
from __future__ import annotations

import pytest

from derive import notation
from derive.notation import NAME, PRESETS, Names, latex_name

PRESET_NAMES = ["doc000", "doc001", "d2l", "doc003", "cs231n", "dlai", "pytorch"]

LATEX = [
    # doc000: document 000 (Russian): W, V, b, h, z
    ('doc000', 1, 'input_weight', None, None, 'W'),
    ('doc000', 1, 'recurrent_weight', None, None, 'V'),
    ('doc000', 1, 'bias', None, None, 'b'),
    ('doc000', 1, 'output_weight', None, None, 'W_{y}'),
    ('doc000', 1, 'output_bias', None, None, 'b_{y}'),
    ('doc000', 1, 'input', None, 't', 'x^{t}'),
    ('doc000', 1, 'pre_activation', None, 't', 'z^{t}'),
    ('doc000', 1, 'hidden', None, 't', 'h^{t}'),
    ('doc000', 1, 'logits', None, 't', 's^{t}'),
    ('doc000', 1, 'output', None, 't', r"\hat{y}^{t}"),
    ('doc000', 1, 'loss', None, 't', 'L^{t}'),
    ('doc000', 1, 'delta', None, 't', r"\delta^{t}"),
    ('doc000', 1, 'output_delta', None, 't', r"\delta_{y}^{t}"),
    ('doc000', 1, 'hidden', None, 't-1', 'h^{t-1}'),
    ('doc000', 1, 'hidden', None, 't+1', 'h^{t+1}'),
    ('doc000', 1, 'delta', None, 't-1', r"\delta^{t-1}"),
    ('doc000', 1, 'delta', None, 't+1', r"\delta^{t+1}"),
    ('doc000', 1, 'output_delta', None, 't-1', r"\delta_{y}^{t-1}"),
    ('doc000', 1, 'output_delta', None, 't+1', r"\delta_{y}^{t+1}"),
    ('doc000', 1, 'hidden', 1, '0', 'h^{0}'),
    ('doc000', 2, 'input_weight', 1, None, 'W_{1}'),
    ('doc000', 2, 'input_weight', 2, None, 'W_{2}'),
    ('doc000', 2, 'recurrent_weight', 1, None, 'V_{1}'),
    ('doc000', 2, 'recurrent_weight', 2, None, 'V_{2}'),
    ('doc000', 2, 'bias', 1, None, 'b_{1}'),
    ('doc000', 2, 'bias', 2, None, 'b_{2}'),
    ('doc000', 2, 'output_weight', 3, None, 'W_{y}'),
    ('doc000', 2, 'output_bias', 3, None, 'b_{y}'),
    ('doc000', 2, 'hidden', 1, 't', 'h_{1}^{t}'),
    ('doc000', 2, 'hidden', 2, 't-1', 'h_{2}^{t-1}'),
    ('doc000', 2, 'hidden', 1, 't+1', 'h_{1}^{t+1}'),
    ('doc000', 2, 'pre_activation', 1, 't', 'z_{1}^{t}'),
    ('doc000', 2, 'pre_activation', 2, 't-1', 'z_{2}^{t-1}'),
    ('doc000', 2, 'pre_activation', 1, 't+1', 'z_{1}^{t+1}'),
    ('doc000', 2, 'delta', 1, 't', r"\delta_{1}^{t}"),
    ('doc000', 2, 'delta', 2, 't-1', r"\delta_{2}^{t-1}"),
    ('doc000', 2, 'delta', 1, 't+1', r"\delta_{1}^{t+1}"),
    ('doc000', 2, 'output_delta', None, 't', r"\delta_{y}^{t}"),
    ('doc000', 2, 'output', None, 't', r"\hat{y}^{t}"),
    # doc001: document 001 (Russian): U, W, V, s
    ('doc001', 1, 'input_weight', None, None, 'U'),
    ('doc001', 1, 'recurrent_weight', None, None, 'W'),
    ('doc001', 1, 'bias', None, None, 'b'),
    ('doc001', 1, 'output_weight', None, None, 'V'),
    ('doc001', 1, 'output_bias', None, None, 'c'),
    ('doc001', 1, 'input', None, 't', 'x_{t}'),
    ('doc001', 1, 'pre_activation', None, 't', 'z_{t}'),
    ('doc001', 1, 'hidden', None, 't', 's_{t}'),
    ('doc001', 1, 'logits', None, 't', 'o_{t}'),
    ('doc001', 1, 'output', None, 't', r"\hat{y}_{t}"),
    ('doc001', 1, 'loss', None, 't', 'L_{t}'),
    ('doc001', 1, 'delta', None, 't', r"\delta_{t}^{s}"),
    ('doc001', 1, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('doc001', 1, 'hidden', None, 't-1', 's_{t-1}'),
    ('doc001', 1, 'hidden', None, 't+1', 's_{t+1}'),
    ('doc001', 1, 'delta', None, 't-1', r"\delta_{t-1}^{s}"),
    ('doc001', 1, 'delta', None, 't+1', r"\delta_{t+1}^{s}"),
    ('doc001', 1, 'output_delta', None, 't-1', r"\delta_{t-1}^{y}"),
    ('doc001', 1, 'output_delta', None, 't+1', r"\delta_{t+1}^{y}"),
    ('doc001', 1, 'hidden', 1, '0', 's_{0}'),
    ('doc001', 2, 'input_weight', 1, None, 'U^{(1)}'),
    ('doc001', 2, 'input_weight', 2, None, 'U^{(2)}'),
    ('doc001', 2, 'recurrent_weight', 1, None, 'W^{(1)}'),
    ('doc001', 2, 'recurrent_weight', 2, None, 'W^{(2)}'),
    ('doc001', 2, 'bias', 1, None, 'b^{(1)}'),
    ('doc001', 2, 'bias', 2, None, 'b^{(2)}'),
    ('doc001', 2, 'output_weight', 3, None, 'V'),
    ('doc001', 2, 'output_bias', 3, None, 'c'),
    ('doc001', 2, 'hidden', 1, 't', 's_{t}^{(1)}'),
    ('doc001', 2, 'hidden', 2, 't-1', 's_{t-1}^{(2)}'),
    ('doc001', 2, 'hidden', 1, 't+1', 's_{t+1}^{(1)}'),
    ('doc001', 2, 'pre_activation', 1, 't', 'z_{t}^{(1)}'),
    ('doc001', 2, 'pre_activation', 2, 't-1', 'z_{t-1}^{(2)}'),
    ('doc001', 2, 'pre_activation', 1, 't+1', 'z_{t+1}^{(1)}'),
    ('doc001', 2, 'delta', 1, 't', r"\delta_{t}^{s,(1)}"),
    ('doc001', 2, 'delta', 2, 't-1', r"\delta_{t-1}^{s,(2)}"),
    ('doc001', 2, 'delta', 1, 't+1', r"\delta_{t+1}^{s,(1)}"),
    ('doc001', 2, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('doc001', 2, 'output', None, 't', r"\hat{y}_{t}"),
    # d2l: documents 002 and 004 (Bengali): W_xh, W_hh, W_hy
    ('d2l', 1, 'input_weight', None, None, 'W_{xh}'),
    ('d2l', 1, 'recurrent_weight', None, None, 'W_{hh}'),
    ('d2l', 1, 'bias', None, None, 'b_{h}'),
    ('d2l', 1, 'output_weight', None, None, 'W_{hy}'),
    ('d2l', 1, 'output_bias', None, None, 'b_{y}'),
    ('d2l', 1, 'input', None, 't', 'x_{t}'),
    ('d2l', 1, 'pre_activation', None, 't', 'a_{t}'),
    ('d2l', 1, 'hidden', None, 't', 'h_{t}'),
    ('d2l', 1, 'logits', None, 't', 'o_{t}'),
    ('d2l', 1, 'output', None, 't', r"\hat{y}_{t}"),
    ('d2l', 1, 'loss', None, 't', 'L_{t}'),
    ('d2l', 1, 'delta', None, 't', r"\delta_{t}^{h}"),
    ('d2l', 1, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('d2l', 1, 'hidden', None, 't-1', 'h_{t-1}'),
    ('d2l', 1, 'hidden', None, 't+1', 'h_{t+1}'),
    ('d2l', 1, 'delta', None, 't-1', r"\delta_{t-1}^{h}"),
    ('d2l', 1, 'delta', None, 't+1', r"\delta_{t+1}^{h}"),
    ('d2l', 1, 'output_delta', None, 't-1', r"\delta_{t-1}^{y}"),
    ('d2l', 1, 'output_delta', None, 't+1', r"\delta_{t+1}^{y}"),
    ('d2l', 1, 'hidden', 1, '0', 'h_{0}'),
    ('d2l', 2, 'input_weight', 1, None, 'W_{xh}^{(1)}'),
    ('d2l', 2, 'input_weight', 2, None, 'W_{xh}^{(2)}'),
    ('d2l', 2, 'recurrent_weight', 1, None, 'W_{hh}^{(1)}'),
    ('d2l', 2, 'recurrent_weight', 2, None, 'W_{hh}^{(2)}'),
    ('d2l', 2, 'bias', 1, None, 'b_{h}^{(1)}'),
    ('d2l', 2, 'bias', 2, None, 'b_{h}^{(2)}'),
    ('d2l', 2, 'output_weight', 3, None, 'W_{hy}'),
    ('d2l', 2, 'output_bias', 3, None, 'b_{y}'),
    ('d2l', 2, 'hidden', 1, 't', 'h_{t}^{(1)}'),
    ('d2l', 2, 'hidden', 2, 't-1', 'h_{t-1}^{(2)}'),
    ('d2l', 2, 'hidden', 1, 't+1', 'h_{t+1}^{(1)}'),
    ('d2l', 2, 'pre_activation', 1, 't', 'a_{t}^{(1)}'),
    ('d2l', 2, 'pre_activation', 2, 't-1', 'a_{t-1}^{(2)}'),
    ('d2l', 2, 'pre_activation', 1, 't+1', 'a_{t+1}^{(1)}'),
    ('d2l', 2, 'delta', 1, 't', r"\delta_{t}^{h,(1)}"),
    ('d2l', 2, 'delta', 2, 't-1', r"\delta_{t-1}^{h,(2)}"),
    ('d2l', 2, 'delta', 1, 't+1', r"\delta_{t+1}^{h,(1)}"),
    ('d2l', 2, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('d2l', 2, 'output', None, 't', r"\hat{y}_{t}"),
    # doc003: document 003 (English): w_i, w_h, w_o, o
    ('doc003', 1, 'input_weight', None, None, 'w_{i}'),
    ('doc003', 1, 'recurrent_weight', None, None, 'w_{h}'),
    ('doc003', 1, 'bias', None, None, 'b'),
    ('doc003', 1, 'output_weight', None, None, 'w_{o}'),
    ('doc003', 1, 'output_bias', None, None, 'b_{o}'),
    ('doc003', 1, 'input', None, 't', 'x_{t}'),
    ('doc003', 1, 'pre_activation', None, 't', 'a_{t}'),
    ('doc003', 1, 'hidden', None, 't', 'o_{t}'),
    ('doc003', 1, 'logits', None, 't', 'z_{t}'),
    ('doc003', 1, 'output', None, 't', r"\hat{y}_{t}"),
    ('doc003', 1, 'loss', None, 't', 'L_{t}'),
    ('doc003', 1, 'delta', None, 't', r"\delta_{t}^{o}"),
    ('doc003', 1, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('doc003', 1, 'hidden', None, 't-1', 'o_{t-1}'),
    ('doc003', 1, 'hidden', None, 't+1', 'o_{t+1}'),
    ('doc003', 1, 'delta', None, 't-1', r"\delta_{t-1}^{o}"),
    ('doc003', 1, 'delta', None, 't+1', r"\delta_{t+1}^{o}"),
    ('doc003', 1, 'output_delta', None, 't-1', r"\delta_{t-1}^{y}"),
    ('doc003', 1, 'output_delta', None, 't+1', r"\delta_{t+1}^{y}"),
    ('doc003', 1, 'hidden', 1, '0', 'o_{0}'),
    ('doc003', 2, 'input_weight', 1, None, 'w_{i}^{(1)}'),
    ('doc003', 2, 'input_weight', 2, None, 'w_{i}^{(2)}'),
    ('doc003', 2, 'recurrent_weight', 1, None, 'w_{h}^{(1)}'),
    ('doc003', 2, 'recurrent_weight', 2, None, 'w_{h}^{(2)}'),
    ('doc003', 2, 'bias', 1, None, 'b^{(1)}'),
    ('doc003', 2, 'bias', 2, None, 'b^{(2)}'),
    ('doc003', 2, 'output_weight', 3, None, 'w_{o}'),
    ('doc003', 2, 'output_bias', 3, None, 'b_{o}'),
    ('doc003', 2, 'hidden', 1, 't', 'o_{t}^{(1)}'),
    ('doc003', 2, 'hidden', 2, 't-1', 'o_{t-1}^{(2)}'),
    ('doc003', 2, 'hidden', 1, 't+1', 'o_{t+1}^{(1)}'),
    ('doc003', 2, 'pre_activation', 1, 't', 'a_{t}^{(1)}'),
    ('doc003', 2, 'pre_activation', 2, 't-1', 'a_{t-1}^{(2)}'),
    ('doc003', 2, 'pre_activation', 1, 't+1', 'a_{t+1}^{(1)}'),
    ('doc003', 2, 'delta', 1, 't', r"\delta_{t}^{o,(1)}"),
    ('doc003', 2, 'delta', 2, 't-1', r"\delta_{t-1}^{o,(2)}"),
    ('doc003', 2, 'delta', 1, 't+1', r"\delta_{t+1}^{o,(1)}"),
    ('doc003', 2, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('doc003', 2, 'output', None, 't', r"\hat{y}_{t}"),
    # cs231n: CS231n rnn_step_forward: Wx, Wh, b
    ('cs231n', 1, 'input_weight', None, None, r"\mathit{Wx}"),
    ('cs231n', 1, 'recurrent_weight', None, None, r"\mathit{Wh}"),
    ('cs231n', 1, 'bias', None, None, 'b'),
    ('cs231n', 1, 'output_weight', None, None, r"\mathit{Wy}"),
    ('cs231n', 1, 'output_bias', None, None, r"\mathit{by}"),
    ('cs231n', 1, 'input', None, 't', 'x_{t}'),
    ('cs231n', 1, 'pre_activation', None, 't', 'a_{t}'),
    ('cs231n', 1, 'hidden', None, 't', 'h_{t}'),
    ('cs231n', 1, 'logits', None, 't', 's_{t}'),
    ('cs231n', 1, 'output', None, 't', r"\hat{y}_{t}"),
    ('cs231n', 1, 'loss', None, 't', 'L_{t}'),
    ('cs231n', 1, 'delta', None, 't', r"\delta_{t}^{h}"),
    ('cs231n', 1, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('cs231n', 1, 'hidden', None, 't-1', 'h_{t-1}'),
    ('cs231n', 1, 'hidden', None, 't+1', 'h_{t+1}'),
    ('cs231n', 1, 'delta', None, 't-1', r"\delta_{t-1}^{h}"),
    ('cs231n', 1, 'delta', None, 't+1', r"\delta_{t+1}^{h}"),
    ('cs231n', 1, 'output_delta', None, 't-1', r"\delta_{t-1}^{y}"),
    ('cs231n', 1, 'output_delta', None, 't+1', r"\delta_{t+1}^{y}"),
    ('cs231n', 1, 'hidden', 1, '0', 'h_{0}'),
    ('cs231n', 2, 'input_weight', 1, None, r"\mathit{Wx}^{(1)}"),
    ('cs231n', 2, 'input_weight', 2, None, r"\mathit{Wx}^{(2)}"),
    ('cs231n', 2, 'recurrent_weight', 1, None, r"\mathit{Wh}^{(1)}"),
    ('cs231n', 2, 'recurrent_weight', 2, None, r"\mathit{Wh}^{(2)}"),
    ('cs231n', 2, 'bias', 1, None, 'b^{(1)}'),
    ('cs231n', 2, 'bias', 2, None, 'b^{(2)}'),
    ('cs231n', 2, 'output_weight', 3, None, r"\mathit{Wy}"),
    ('cs231n', 2, 'output_bias', 3, None, r"\mathit{by}"),
    ('cs231n', 2, 'hidden', 1, 't', 'h_{t}^{(1)}'),
    ('cs231n', 2, 'hidden', 2, 't-1', 'h_{t-1}^{(2)}'),
    ('cs231n', 2, 'hidden', 1, 't+1', 'h_{t+1}^{(1)}'),
    ('cs231n', 2, 'pre_activation', 1, 't', 'a_{t}^{(1)}'),
    ('cs231n', 2, 'pre_activation', 2, 't-1', 'a_{t-1}^{(2)}'),
    ('cs231n', 2, 'pre_activation', 1, 't+1', 'a_{t+1}^{(1)}'),
    ('cs231n', 2, 'delta', 1, 't', r"\delta_{t}^{h,(1)}"),
    ('cs231n', 2, 'delta', 2, 't-1', r"\delta_{t-1}^{h,(2)}"),
    ('cs231n', 2, 'delta', 1, 't+1', r"\delta_{t+1}^{h,(1)}"),
    ('cs231n', 2, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('cs231n', 2, 'output', None, 't', r"\hat{y}_{t}"),
    # dlai: deeplearning.ai: Wax, Waa, ba, Wya, by
    ('dlai', 1, 'input_weight', None, None, r"\mathit{Wax}"),
    ('dlai', 1, 'recurrent_weight', None, None, r"\mathit{Waa}"),
    ('dlai', 1, 'bias', None, None, r"\mathit{ba}"),
    ('dlai', 1, 'output_weight', None, None, r"\mathit{Wya}"),
    ('dlai', 1, 'output_bias', None, None, r"\mathit{by}"),
    ('dlai', 1, 'input', None, 't', 'x_{t}'),
    ('dlai', 1, 'pre_activation', None, 't', 'z_{t}'),
    ('dlai', 1, 'hidden', None, 't', 'a_{t}'),
    ('dlai', 1, 'logits', None, 't', 'o_{t}'),
    ('dlai', 1, 'output', None, 't', r"\hat{y}_{t}"),
    ('dlai', 1, 'loss', None, 't', 'L_{t}'),
    ('dlai', 1, 'delta', None, 't', r"\delta_{t}^{a}"),
    ('dlai', 1, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('dlai', 1, 'hidden', None, 't-1', 'a_{t-1}'),
    ('dlai', 1, 'hidden', None, 't+1', 'a_{t+1}'),
    ('dlai', 1, 'delta', None, 't-1', r"\delta_{t-1}^{a}"),
    ('dlai', 1, 'delta', None, 't+1', r"\delta_{t+1}^{a}"),
    ('dlai', 1, 'output_delta', None, 't-1', r"\delta_{t-1}^{y}"),
    ('dlai', 1, 'output_delta', None, 't+1', r"\delta_{t+1}^{y}"),
    ('dlai', 1, 'hidden', 1, '0', 'a_{0}'),
    ('dlai', 2, 'input_weight', 1, None, r"\mathit{Wax}^{(1)}"),
    ('dlai', 2, 'input_weight', 2, None, r"\mathit{Wax}^{(2)}"),
    ('dlai', 2, 'recurrent_weight', 1, None, r"\mathit{Waa}^{(1)}"),
    ('dlai', 2, 'recurrent_weight', 2, None, r"\mathit{Waa}^{(2)}"),
    ('dlai', 2, 'bias', 1, None, r"\mathit{ba}^{(1)}"),
    ('dlai', 2, 'bias', 2, None, r"\mathit{ba}^{(2)}"),
    ('dlai', 2, 'output_weight', 3, None, r"\mathit{Wya}"),
    ('dlai', 2, 'output_bias', 3, None, r"\mathit{by}"),
    ('dlai', 2, 'hidden', 1, 't', 'a_{t}^{(1)}'),
    ('dlai', 2, 'hidden', 2, 't-1', 'a_{t-1}^{(2)}'),
    ('dlai', 2, 'hidden', 1, 't+1', 'a_{t+1}^{(1)}'),
    ('dlai', 2, 'pre_activation', 1, 't', 'z_{t}^{(1)}'),
    ('dlai', 2, 'pre_activation', 2, 't-1', 'z_{t-1}^{(2)}'),
    ('dlai', 2, 'pre_activation', 1, 't+1', 'z_{t+1}^{(1)}'),
    ('dlai', 2, 'delta', 1, 't', r"\delta_{t}^{a,(1)}"),
    ('dlai', 2, 'delta', 2, 't-1', r"\delta_{t-1}^{a,(2)}"),
    ('dlai', 2, 'delta', 1, 't+1', r"\delta_{t+1}^{a,(1)}"),
    ('dlai', 2, 'output_delta', None, 't', r"\delta_{t}^{y}"),
    ('dlai', 2, 'output', None, 't', r"\hat{y}_{t}"),
]
PYTHON = [
    # doc000
    ('doc000', 1, 'input_weight', 1, 'W'),
    ('doc000', 1, 'recurrent_weight', 1, 'V'),
    ('doc000', 1, 'bias', 1, 'b'),
    ('doc000', 1, 'output_weight', None, 'W_y'),
    ('doc000', 1, 'output_bias', None, 'b_y'),
    ('doc000', 1, 'hidden', 1, 'h'),
    ('doc000', 1, 'pre_activation', 1, 'z'),
    ('doc000', 1, 'output', None, 'y'),
    ('doc000', 1, 'delta', 1, 'delta'),
    ('doc000', 2, 'input_weight', 1, 'W_1'),
    ('doc000', 2, 'input_weight', 2, 'W_2'),
    ('doc000', 2, 'recurrent_weight', 1, 'V_1'),
    ('doc000', 2, 'recurrent_weight', 2, 'V_2'),
    ('doc000', 2, 'bias', 1, 'b_1'),
    ('doc000', 2, 'bias', 2, 'b_2'),
    ('doc000', 2, 'output_weight', 3, 'W_y'),
    ('doc000', 2, 'output_bias', 3, 'b_y'),
    ('doc000', 2, 'hidden', 1, 'h_1'),
    ('doc000', 2, 'hidden', 2, 'h_2'),
    ('doc000', 2, 'pre_activation', 1, 'z_1'),
    ('doc000', 2, 'pre_activation', 2, 'z_2'),
    ('doc000', 2, 'output', 3, 'y'),
    ('doc000', 2, 'delta', 1, 'delta_1'),
    ('doc000', 2, 'delta', 2, 'delta_2'),
    # doc001
    ('doc001', 1, 'input_weight', 1, 'U'),
    ('doc001', 1, 'recurrent_weight', 1, 'W'),
    ('doc001', 1, 'bias', 1, 'b'),
    ('doc001', 1, 'output_weight', None, 'V'),
    ('doc001', 1, 'output_bias', None, 'c'),
    ('doc001', 1, 'hidden', 1, 's'),
    ('doc001', 1, 'pre_activation', 1, 'z'),
    ('doc001', 1, 'output', None, 'y'),
    ('doc001', 1, 'delta', 1, 'delta'),
    ('doc001', 2, 'input_weight', 1, 'U_1'),
    ('doc001', 2, 'input_weight', 2, 'U_2'),
    ('doc001', 2, 'recurrent_weight', 1, 'W_1'),
    ('doc001', 2, 'recurrent_weight', 2, 'W_2'),
    ('doc001', 2, 'bias', 1, 'b_1'),
    ('doc001', 2, 'bias', 2, 'b_2'),
    ('doc001', 2, 'output_weight', 3, 'V'),
    ('doc001', 2, 'output_bias', 3, 'c'),
    ('doc001', 2, 'hidden', 1, 's_1'),
    ('doc001', 2, 'hidden', 2, 's_2'),
    ('doc001', 2, 'pre_activation', 1, 'z_1'),
    ('doc001', 2, 'pre_activation', 2, 'z_2'),
    ('doc001', 2, 'output', 3, 'y'),
    ('doc001', 2, 'delta', 1, 'delta_1'),
    ('doc001', 2, 'delta', 2, 'delta_2'),
    # d2l
    ('d2l', 1, 'input_weight', 1, 'W_xh'),
    ('d2l', 1, 'recurrent_weight', 1, 'W_hh'),
    ('d2l', 1, 'bias', 1, 'b_h'),
    ('d2l', 1, 'output_weight', None, 'W_hy'),
    ('d2l', 1, 'output_bias', None, 'b_y'),
    ('d2l', 1, 'hidden', 1, 'h'),
    ('d2l', 1, 'pre_activation', 1, 'a'),
    ('d2l', 1, 'output', None, 'y'),
    ('d2l', 1, 'delta', 1, 'delta'),
    ('d2l', 2, 'input_weight', 1, 'W_xh1'),
    ('d2l', 2, 'input_weight', 2, 'W_xh2'),
    ('d2l', 2, 'recurrent_weight', 1, 'W_hh1'),
    ('d2l', 2, 'recurrent_weight', 2, 'W_hh2'),
    ('d2l', 2, 'bias', 1, 'b_h1'),
    ('d2l', 2, 'bias', 2, 'b_h2'),
    ('d2l', 2, 'output_weight', 3, 'W_hy'),
    ('d2l', 2, 'output_bias', 3, 'b_y'),
    ('d2l', 2, 'hidden', 1, 'h_1'),
    ('d2l', 2, 'hidden', 2, 'h_2'),
    ('d2l', 2, 'pre_activation', 1, 'a_1'),
    ('d2l', 2, 'pre_activation', 2, 'a_2'),
    ('d2l', 2, 'output', 3, 'y'),
    ('d2l', 2, 'delta', 1, 'delta_1'),
    ('d2l', 2, 'delta', 2, 'delta_2'),
    # doc003
    ('doc003', 1, 'input_weight', 1, 'w_i'),
    ('doc003', 1, 'recurrent_weight', 1, 'w_h'),
    ('doc003', 1, 'bias', 1, 'b'),
    ('doc003', 1, 'output_weight', None, 'w_o'),
    ('doc003', 1, 'output_bias', None, 'b_o'),
    ('doc003', 1, 'hidden', 1, 'o'),
    ('doc003', 1, 'pre_activation', 1, 'a'),
    ('doc003', 1, 'output', None, 'y'),
    ('doc003', 1, 'delta', 1, 'delta'),
    ('doc003', 2, 'input_weight', 1, 'w_i1'),
    ('doc003', 2, 'input_weight', 2, 'w_i2'),
    ('doc003', 2, 'recurrent_weight', 1, 'w_h1'),
    ('doc003', 2, 'recurrent_weight', 2, 'w_h2'),
    ('doc003', 2, 'bias', 1, 'b_1'),
    ('doc003', 2, 'bias', 2, 'b_2'),
    ('doc003', 2, 'output_weight', 3, 'w_o'),
    ('doc003', 2, 'output_bias', 3, 'b_o'),
    ('doc003', 2, 'hidden', 1, 'o_1'),
    ('doc003', 2, 'hidden', 2, 'o_2'),
    ('doc003', 2, 'pre_activation', 1, 'a_1'),
    ('doc003', 2, 'pre_activation', 2, 'a_2'),
    ('doc003', 2, 'output', 3, 'y'),
    ('doc003', 2, 'delta', 1, 'delta_1'),
    ('doc003', 2, 'delta', 2, 'delta_2'),
    # cs231n
    ('cs231n', 1, 'input_weight', 1, 'Wx'),
    ('cs231n', 1, 'recurrent_weight', 1, 'Wh'),
    ('cs231n', 1, 'bias', 1, 'b'),
    ('cs231n', 1, 'output_weight', None, 'Wy'),
    ('cs231n', 1, 'output_bias', None, 'by'),
    ('cs231n', 1, 'hidden', 1, 'h'),
    ('cs231n', 1, 'pre_activation', 1, 'a'),
    ('cs231n', 1, 'output', None, 'y'),
    ('cs231n', 1, 'delta', 1, 'delta'),
    ('cs231n', 2, 'input_weight', 1, 'Wx_1'),
    ('cs231n', 2, 'input_weight', 2, 'Wx_2'),
    ('cs231n', 2, 'recurrent_weight', 1, 'Wh_1'),
    ('cs231n', 2, 'recurrent_weight', 2, 'Wh_2'),
    ('cs231n', 2, 'bias', 1, 'b_1'),
    ('cs231n', 2, 'bias', 2, 'b_2'),
    ('cs231n', 2, 'output_weight', 3, 'Wy'),
    ('cs231n', 2, 'output_bias', 3, 'by'),
    ('cs231n', 2, 'hidden', 1, 'h_1'),
    ('cs231n', 2, 'hidden', 2, 'h_2'),
    ('cs231n', 2, 'pre_activation', 1, 'a_1'),
    ('cs231n', 2, 'pre_activation', 2, 'a_2'),
    ('cs231n', 2, 'output', 3, 'y'),
    ('cs231n', 2, 'delta', 1, 'delta_1'),
    ('cs231n', 2, 'delta', 2, 'delta_2'),
    # dlai
    ('dlai', 1, 'input_weight', 1, 'Wax'),
    ('dlai', 1, 'recurrent_weight', 1, 'Waa'),
    ('dlai', 1, 'bias', 1, 'ba'),
    ('dlai', 1, 'output_weight', None, 'Wya'),
    ('dlai', 1, 'output_bias', None, 'by'),
    ('dlai', 1, 'hidden', 1, 'a'),
    ('dlai', 1, 'pre_activation', 1, 'z'),
    ('dlai', 1, 'output', None, 'y'),
    ('dlai', 1, 'delta', 1, 'delta'),
    ('dlai', 2, 'input_weight', 1, 'Wax_1'),
    ('dlai', 2, 'input_weight', 2, 'Wax_2'),
    ('dlai', 2, 'recurrent_weight', 1, 'Waa_1'),
    ('dlai', 2, 'recurrent_weight', 2, 'Waa_2'),
    ('dlai', 2, 'bias', 1, 'ba_1'),
    ('dlai', 2, 'bias', 2, 'ba_2'),
    ('dlai', 2, 'output_weight', 3, 'Wya'),
    ('dlai', 2, 'output_bias', 3, 'by'),
    ('dlai', 2, 'hidden', 1, 'a_1'),
    ('dlai', 2, 'hidden', 2, 'a_2'),
    ('dlai', 2, 'pre_activation', 1, 'z_1'),
    ('dlai', 2, 'pre_activation', 2, 'z_2'),
    ('dlai', 2, 'output', 3, 'y'),
    ('dlai', 2, 'delta', 1, 'delta_1'),
    ('dlai', 2, 'delta', 2, 'delta_2'),
]


def names(preset: str, layers: int, overrides: dict[str, str] | None = None) -> Names:
    return Names(PRESETS[preset], overrides or {}, layers)


def test_the_presets_and_their_layouts() -> None:
    assert list(PRESETS) == PRESET_NAMES
    layouts = {name: p.layout for name, p in PRESETS.items()}
    assert layouts == {"doc000": "row", "doc001": "column", "d2l": "column", "doc003": "row",
                       "cs231n": "row", "dlai": "column", "pytorch": "column"}
    assert {name: p.time for name, p in PRESETS.items()} == {
        "doc000": "sup", "doc001": "sub", "d2l": "sub", "doc003": "sub", "cs231n": "sub", "dlai": "sub",
        "pytorch": "sub"}


ELMAN_ROLES = {"input_weight", "recurrent_weight", "bias", "output_weight", "output_bias",
               "hidden", "pre_activation", "output"}


def test_tables_cover_every_preset() -> None:
    assert {row[0] for row in LATEX} == set(PRESET_NAMES) - {"pytorch"}
    assert {row[0] for row in PYTHON} == set(PRESET_NAMES) - {"pytorch"}
    for preset in set(PRESET_NAMES) - {"pytorch"}:
        assert {r[2] for r in PYTHON if r[0] == preset} == ELMAN_ROLES | {"delta"}
    assert {row[0] for row in GATED} == set(PRESET_NAMES)
    assert set(notation.ROLES) == ELMAN_ROLES | {"recurrent_bias", "gate", "cell"}


#: A gated cell's symbols, exactly: (preset, layers, role, layer, gate, time, LaTeX, Python)
GATED = [
    ("pytorch", 1, "input_weight", 1, "i", None, "W_{ii}", "W_ii"),
    ("pytorch", 1, "recurrent_weight", 1, "f", None, "W_{hf}", "W_hf"),
    ("pytorch", 1, "bias", 1, "g", None, "b_{g}", "b_g"),
    ("pytorch", 1, "recurrent_bias", 1, "n", None, "b_{hn}", "b_hn"),
    ("pytorch", 2, "input_weight", 2, "o", None, "W_{io}^{(2)}", "W_io2"),
    ("pytorch", 1, "gate", 1, "i", "t", "i_{t}", "i"),
    ("pytorch", 1, "pre_activation", 1, "f", "t", "a_{f,t}", "a_f"),
    ("pytorch", 1, "cell", 1, None, "t-1", "c_{t-1}", "c"),
    ("pytorch", 1, "delta", 1, "g", "t", r"\delta_{t}^{g}", "delta_g"),
    ("pytorch", 1, "cell_delta", 1, None, "t+1", r"\delta_{t+1}^{c}", None),
    ("pytorch", 1, "hidden_delta", 1, None, "t", r"\delta_{t}^{h}", None),
    ("d2l", 1, "input_weight", 1, "i", None, "W_{xi}", "W_xi"),
    ("d2l", 1, "recurrent_weight", 1, "g", None, "W_{hc}", "W_hc"),
    ("d2l", 1, "bias", 1, "g", None, "b_{c}", "b_c"),
    ("d2l", 1, "gate", 1, "g", "t", r"\tilde{C}_{t}", "G"),
    ("d2l", 1, "gate", 1, "f", "t", "F_{t}", "F"),
    ("d2l", 1, "cell", 1, None, "t", "C_{t}", "C"),
    ("d2l", 1, "input_weight", 1, "n", None, "W_{xh}", "W_xh"),
    ("d2l", 1, "gate", 1, "n", "t", r"\tilde{H}_{t}", "N"),
    ("d2l", 1, "gate", 1, "r", "t", "R_{t}", "R"),
    ("d2l", 1, "delta", 1, "g", "t", r"\delta_{t}^{\tilde{C}}", "delta_g"),
    ("cs231n", 1, "input_weight", 1, "i", None, r"\mathit{Wx}_{i}", "Wx_i"),
    ("cs231n", 1, "recurrent_weight", 1, "o", None, r"\mathit{Wh}_{o}", "Wh_o"),
    ("cs231n", 2, "bias", 2, "f", None, "b_{f}^{(2)}", "b_f2"),
    ("dlai", 1, "input_weight", 1, "f", None, r"\mathit{Wfx}", "Wfx"),
    ("dlai", 1, "recurrent_weight", 1, "i", None, r"\mathit{Wua}", "Wua"),
    ("dlai", 1, "bias", 1, "g", None, r"\mathit{bc}", "bc"),
    ("dlai", 1, "gate", 1, "f", "t", r"\Gamma_{f,t}", "f"),
    ("dlai", 1, "gate", 1, "i", "t", r"\Gamma_{u,t}", "u"),
    ("dlai", 1, "gate", 1, "g", "t", r"\tilde{c}_{t}", "c"),
    ("dlai", 1, "hidden", 1, None, "t", "a_{t}", "a"),
    ("doc000", 1, "input_weight", 1, "i", None, "W_{ii}", "W_ii"),
    ("doc001", 1, "gate", 1, "z", "t", "z_{t}", "z"),
    ("doc003", 1, "recurrent_weight", 1, "r", None, "W_{hr}", "W_hr"),
]


@pytest.mark.parametrize("preset, layers, role, layer, gate, time, latex, python", GATED,
                         ids=[f"{r[0]}-L{r[1]}-{r[2]}.{r[4]}-{r[5]}" for r in GATED])
def test_gated_symbols(preset, layers, role, layer, gate, time, latex, python) -> None:
    table = names(preset, layers)
    assert table.latex(role, layer, time, gate) == latex
    if python is not None and role not in ("gate", "pre_activation", "cell", "delta"):
        assert table.python(role, layer, gate) == python


@pytest.mark.parametrize("preset, layers, role, layer, time, expected", LATEX,
                         ids=[f"{r[0]}-L{r[1]}-{r[2]}-{r[3]}-{r[4]}" for r in LATEX])
def test_latex(preset: str, layers: int, role: str, layer: int | None, time: str | None, expected: str) -> None:
    assert names(preset, layers).latex(role, layer, time) == expected


@pytest.mark.parametrize("preset, layers, role, layer, expected", PYTHON,
                         ids=[f"{r[0]}-L{r[1]}-{r[2]}-{r[3]}" for r in PYTHON])
def test_python(preset: str, layers: int, role: str, layer: int | None, expected: str) -> None:
    got = names(preset, layers).python(role, layer)
    assert got == expected
    assert got.isidentifier()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_single_layer_ignores_the_layer_number(preset: str) -> None:
    n = names(preset, 1)
    for role in sorted(ELMAN_ROLES):
        assert n.python(role, 1) == n.python(role)
        assert n.latex(role, 1, "t") == n.latex(role, None, "t")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_python_names_of_a_spec_are_distinct(preset: str) -> None:
    for layers in (1, 2, 3):
        pairs = names(preset, layers).python_names(output=True, bias=True)
        pythons = [p for _, p in pairs]
        assert len(pythons) == len(set(pythons)), (preset, layers)
        assert all(k.startswith("notation.names.") for k, _ in pairs)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_python_names_respect_bias_and_output(preset: str) -> None:
    n = names(preset, 2)
    full = {p for _, p in n.python_names(output=True, bias=True)}
    for role, layer in (("input_weight", 1), ("recurrent_weight", 2), ("bias", 1), ("output_weight", 3),
                        ("output_bias", 3), ("hidden", 1), ("hidden", 2)):
        assert n.python(role, layer) in full, role
    assert all(not notation.is_reserved(p) for p in full)
    bare = {p for _, p in n.python_names(output=False, bias=False)}
    assert n.python("bias", 1) not in bare
    assert n.python("output_weight", 3) not in bare
    assert n.python("recurrent_weight", 2) in bare


# --------------------------------------------------------------------------- overrides

@pytest.mark.parametrize("preset, layers, overrides, role, layer, time, python, latex", [
    ("d2l", 1, {"input_weight": "U"}, "input_weight", None, None, "U", "U"),
    ("d2l", 2, {"input_weight": "U"}, "input_weight", 2, None, "U_2", "U^{(2)}"),
    ("d2l", 2, {"input_weight": "U_x"}, "input_weight", 2, None, "U_x2", "U_{x}^{(2)}"),
    ("d2l", 2, {"hidden": "s"}, "hidden", 1, "t-1", "s_1", "s_{t-1}^{(1)}"),
    ("d2l", 1, {"hidden": "s"}, "delta", None, "t+1", "delta", r"\delta_{t+1}^{s}"),
    ("d2l", 2, {"hidden": "Hs"}, "delta", 2, "t", "delta_2", r"\delta_{t}^{\mathit{Hs},(2)}"),
    ("d2l", 1, {"output": "p"}, "output", None, "t", "p", r"\hat{p}_{t}"),
    ("d2l", 1, {"recurrent_weight": "U1"}, "recurrent_weight", None, None, "U1", r"\mathit{U1}"),
    ("doc000", 2, {"hidden": "h_x"}, "hidden", 2, "t", "h_x2", "h_{x,2}^{t}"),
    ("doc000", 2, {"input_weight": "Wx"}, "input_weight", 1, None, "Wx_1", r"\mathit{Wx}_{1}"),
    ("doc003", 1, {"output_weight": "v"}, "output_weight", None, None, "v", "v"),
    ("cs231n", 3, {"bias": "c_h"}, "bias", 3, None, "c_h3", "c_{h}^{(3)}"),
])
def test_overrides(preset: str, layers: int, overrides: dict[str, str], role: str, layer: int | None,
                   time: str | None, python: str, latex: str) -> None:
    n = names(preset, layers, overrides)
    assert n.python(role, layer) == python
    assert n.latex(role, layer, time) == latex


# --------------------------------------------------------------------------- latex_name

@pytest.mark.parametrize("name, expected", [
    ("W", "W"),
    ("x", "x"),
    ("W_xh", "W_{xh}"),
    ("w_i", "w_{i}"),
    ("W_1", "W_{1}"),
    ("b_h", "b_{h}"),
    ("U1", r"\mathit{U1}"),
    ("Wx", r"\mathit{Wx}"),
    ("Wax", r"\mathit{Wax}"),
    ("Wax_1", r"\mathit{Wax}_{1}"),
    ("W_hh2", "W_{hh2}"),
    ("delta", r"\mathit{delta}"),
])
def test_latex_name(name: str, expected: str) -> None:
    assert latex_name(name) == expected


# --------------------------------------------------------------------------- the name grammar

VALID = ["W", "x", "U1", "W_xh", "w_i", "W_1", "Wx_h2", "Z9_9", "q_0a", "M_xy", "A_B", "abc123_XYZ789"]
INVALID = ["", "_", "_W", "1W", "9", "W_", "W__x", "W_x_y", "W-x", "W x", " W", "W ", "W\n", "W\t",
           r"\alpha", "W^2", "W_{xh}", "W.x", "W$", "W'", "é", "Wé", "α", "Ŵ", "W_é", "W;x", "W()"]


@pytest.mark.parametrize("name", VALID)
def test_grammar_accepts(name: str) -> None:
    assert NAME.fullmatch(name)
    assert notation.check("d2l", "", (("input_weight", name),), layers=1, output=True, bias=True) == []


@pytest.mark.parametrize("name", INVALID, ids=[repr(n) for n in INVALID])
def test_grammar_rejects(name: str) -> None:
    assert not NAME.fullmatch(name)
    problems = notation.check("d2l", "", (("input_weight", name),), layers=1, output=True, bias=True)
    assert len(problems) == 1
    assert problems[0].startswith("notation.names.input_weight: ")
    assert "is not a symbol name" in problems[0]


@pytest.mark.parametrize("name", ["forward", "PARAMS", "step", "to_torch",
                                  "lambda", "class", "None", "match", "case", "type", "sum", "len", "print"])
def test_grammatical_but_reserved_names_are_rejected(name: str) -> None:
    assert NAME.fullmatch(name)
    assert notation.is_reserved(name)
    problems = notation.check("d2l", "", (("hidden", name),), layers=1, output=True, bias=True)
    assert problems == [f"notation.names.hidden: {name!r} is reserved (a Python keyword or builtin, "
                        "or a name of the module's API)"]


@pytest.mark.parametrize("name", ["np", "xs", "T", "B", "t", "tmp", "params", "grads", "loss", "hv", "W_hhT"])
def test_the_generated_modules_locals_are_not_reserved(name: str) -> None:
    # the code emitter names its locals around the user's symbols: validation does not
    # depend on the generated code (tests/test_naming.py builds and runs such specs)
    assert not notation.is_reserved(name)
    assert notation.check("d2l", "", (("recurrent_weight", name),), layers=1, output=True, bias=True) == []


@pytest.mark.parametrize("layers, names_, key", [
    (1, (("input_weight", "W_hh"),), "notation.names.recurrent_weight"),
    (1, (("input_weight", "A"), ("recurrent_weight", "A")), "notation.names.recurrent_weight"),
    (1, (("hidden", "W_hh"),), "notation.names.hidden"),
    (2, (("output_weight", "W_xh1"),), "notation.names.output_weight"),  # layer 1's W_xh -> W_xh1
])
def test_clashing_names_are_rejected(layers: int, names_: tuple, key: str) -> None:
    problems = notation.check("d2l", "", names_, layers=layers, output=True, bias=True)
    assert problems and all("is already used" in p for p in problems)
    assert any(p.startswith(key + ": ") for p in problems)


def test_layer_suffix_clash_is_caught() -> None:
    # a stacked layer's name (W + layer 1 -> W_1) may collide with another symbol
    problems = notation.check("doc000", "", (("output_weight", "W_1"),), layers=2, output=True, bias=True)
    assert problems and "'W_1' is already used" in problems[0]


def test_unknown_preset_layout_and_role() -> None:
    assert notation.check("nope", "", (), layers=1, output=True, bias=True) == [
        "notation.preset: 'nope' is not one of doc000, doc001, d2l, doc003, cs231n, dlai, pytorch"]
    assert notation.check("d2l", "diag", (), layers=1, output=True, bias=True) == [
        "notation.layout: 'diag' is not one of row, column"]
    (problem,) = notation.check("d2l", "", (("loss", "J"),), layers=1, output=True, bias=True)
    assert problem.startswith("notation.names.loss: unknown role; allowed: input_weight, recurrent_weight")
