"""generated/ is exactly what `derive build --all` writes (PDFs are checked for building only).

Set DERIVE_UPDATE_GOLDEN=1 to rewrite generated/ from the current code instead.
"""
from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from derive import spec
from derive.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "generated"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a scratch folder with the same relative --out, so the headers match
    scratch = tmp_path_factory.mktemp("build")
    here = os.getcwd()
    os.chdir(scratch)
    try:
        assert main(["build", "--all", "--out", "generated", "--format", "tex,md,py"]) == 0
    finally:
        os.chdir(here)
    out = scratch / "generated"
    if os.environ.get("DERIVE_UPDATE_GOLDEN"):
        for path in out.rglob("*.*"):
            target = GOLDEN / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return out


@pytest.mark.parametrize("name", spec.preset_names())
@pytest.mark.parametrize("suffix", ["tex", "md", "py"])
def test_golden(fresh: Path, name: str, suffix: str) -> None:
    got = (fresh / name / f"{name}.{suffix}").read_text("utf-8")
    want = (GOLDEN / name / f"{name}.{suffix}").read_text("utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"generated/{name}/{name}.{suffix}", "fresh build"))
        pytest.fail(f"generated/ is stale; rerun `derive build --all` or DERIVE_UPDATE_GOLDEN=1:\n{diff}")


def test_every_preset_has_all_outputs() -> None:
    for name in spec.preset_names():
        for suffix in ("tex", "pdf", "md", "py"):
            assert (GOLDEN / name / f"{name}.{suffix}").is_file(), f"{name}.{suffix} missing"
