"""The handout typeset: `<name>.pdf` from the LaTeX format's output (latexmk, no shell escape)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from derive.formats.base import Format, Job

TEX_HINT = ("no TeX engine found (latexmk + pdflatex); the .pdf was skipped. On Debian/Ubuntu: "
            "apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended "
            "texlive-pictures latexmk lmodern")


class PdfFormat(Format):
    name: ClassVar[str] = "pdf"
    needs: ClassVar[tuple[str, ...]] = ("tex",)

    def files(self, name: str) -> list[str]:
        return [f"{name}.pdf"]

    def render(self, job: Job) -> dict[str, bytes] | None:
        pdf = typeset(job.rendered[f"{job.name}.tex"], job.name)
        return None if pdf is None else {f"{job.name}.pdf": pdf}


def typeset(tex: bytes, name: str) -> bytes | None:
    """Typeset in a private folder (no shell escape); None when no TeX engine is installed."""
    if not shutil.which("latexmk") or not shutil.which("pdflatex"):
        return None
    with tempfile.TemporaryDirectory(prefix="derive-tex-") as tmp:
        source = Path(tmp) / f"{name}.tex"
        source.write_bytes(tex)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
        result = subprocess.run(
            ["latexmk", "-pdf", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
             "-quiet", f"{name}.tex"], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
        pdf = source.with_suffix(".pdf")
        if result.returncode != 0 or not pdf.exists():
            log = source.with_suffix(".log")
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise RuntimeError("pdflatex failed: " + " | ".join(tail))
        return pdf.read_bytes()
