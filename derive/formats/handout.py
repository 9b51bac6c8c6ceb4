"""The handout's two text renderings of the document: LaTeX (`<name>.tex`) and Markdown (`<name>.md`)."""
from __future__ import annotations

from typing import ClassVar

from derive.emit import render
from derive.formats.base import Format, Job


class LatexFormat(Format):
    name: ClassVar[str] = "tex"

    def files(self, name: str) -> list[str]:
        return [f"{name}.tex"]

    def render(self, job: Job) -> dict[str, bytes]:
        return {f"{job.name}.tex": render.render("handout.tex.j2", job.document.views["tex"]).encode("utf-8")}


class MarkdownFormat(Format):
    name: ClassVar[str] = "md"

    def files(self, name: str) -> list[str]:
        return [f"{name}.md"]

    def render(self, job: Job) -> dict[str, bytes]:
        return {f"{job.name}.md": render.render("handout.md.j2", job.document.views["md"]).encode("utf-8")}
