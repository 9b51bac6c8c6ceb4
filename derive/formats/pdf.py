"""The handout typeset: `<name>.pdf` from the LaTeX format's output (`derive.latex`: latexmk,
no shell escape, its own process group)."""
from __future__ import annotations

from typing import ClassVar

from derive import latex
from derive.formats.base import Format, Job

TEX_HINT = latex.TEX_HINT


class PdfFormat(Format):
    name: ClassVar[str] = "pdf"
    needs: ClassVar[tuple[str, ...]] = ("tex",)

    def files(self, name: str) -> list[str]:
        return [f"{name}.pdf"]

    def render(self, job: Job) -> dict[str, bytes] | None:
        pdf = latex.typeset(job.rendered[f"{job.name}.tex"], job.name)
        return None if pdf is None else {f"{job.name}.pdf": pdf}
