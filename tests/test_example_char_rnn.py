"""examples/char_rnn.py runs, and its loss falls within a few iterations."""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "char_rnn.py"


def test_char_rnn_loss_falls() -> None:
    loader = importlib.util.spec_from_file_location("char_rnn_example", EXAMPLE)
    example = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(example)
    out, bar = io.StringIO(), io.StringIO()
    smooth, raw = example.train(iterations=150, hidden=16, chunk=10, chunks=2, chars=20_000, sample_every=100,
                                out=out, bar=bar)
    assert len(raw) == 151 and all(np.isfinite(raw))
    assert np.mean(raw[-20:]) < 0.8 * np.mean(raw[:20]), (raw[:20], raw[-20:])
    assert smooth[-1] < smooth[0]
    assert "smooth loss" in bar.getvalue() and "150/150" in bar.getvalue()
    assert out.getvalue().count("----- iteration") == 2   # samples drawn with step at 0 and 100
