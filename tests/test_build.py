"""`derive build`: never clobber, atomic, deterministic, PDFs build, bad flags are one line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from derive import spec
from derive.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_refuses_to_overwrite_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "elman_softmax.py"
    mine.write_text("print('my own work')\n")
    assert main(["build", "--preset", "elman_softmax", "--out", str(tmp_path), "--format", "py,md"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("derive: error: ") and "--force" in err
    assert mine.read_text() == "print('my own work')\n"
    assert not (tmp_path / "elman_softmax.md").exists(), "nothing is written on error"
    assert main(["build", "--preset", "elman_softmax", "--out", str(tmp_path), "--format", "py", "--force"]) == 0
    assert "derive: generated file" in mine.read_text()


def test_rebuild_over_own_output(tmp_path: Path) -> None:
    for _ in range(2):
        assert main(["build", "--preset", "many_to_one_bce", "--out", str(tmp_path), "--format", "md,py"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many_to_one_bce.md", "many_to_one_bce.py"]


@pytest.mark.parametrize("argv", [
    ["build"], ["build", "--preset", "nope"], ["build", "--preset", "elman_softmax", "--format", "docx"],
    ["build", "--preset", "elman_softmax", "--steps", "0"], ["frobnicate"], ["check"],
    ["build", "missing.toml"],
])
def test_bad_usage_is_one_line(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    os.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("derive: error: ") and captured.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    outs = []
    for seed in ("0", "1", "12345"):
        work = tmp_path / seed
        work.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "derive", "build", "--preset", "stacked_mse",
                        "--out", "out", "--format", "tex,md,py,pdf"], check=True, env=env, cwd=work)
        outs.append({p.name: p.read_bytes() for p in (work / "out").iterdir()})
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.skipif(not shutil.which("latexmk"), reason="TeX Live is not installed (.ci/run installs it)")
def test_pdf_builds_for_every_preset(tmp_path: Path) -> None:
    assert main(["build", "--all", "--out", str(tmp_path), "--format", "pdf"]) == 0
    pdfs = sorted(tmp_path.rglob("*.pdf"))
    assert len(pdfs) == len(spec.preset_names()) and all(p.read_bytes().startswith(b"%PDF") for p in pdfs)


def test_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "derive", "presets"], capture_output=True, text=True, check=True)
    assert len(result.stdout.splitlines()) == len(spec.preset_names())


def test_a_failed_build_leaves_the_previous_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from derive import latex

    assert main(["build", "--preset", "many_to_one_bce", "--out", str(tmp_path), "--format", "md,py"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(tex: bytes, name: str) -> bytes:
        raise RuntimeError("pdflatex failed")

    monkeypatch.setattr(latex, "typeset", broken)
    assert main(["build", "--preset", "many_to_one_bce", "--steps", "4", "--out", str(tmp_path),
                 "--format", "md,py,pdf"]) == 3
    assert capsys.readouterr().err.startswith("derive: error: internal error")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
