"""The generated NumPy module: `<name>.py`, printed by `LoopCodePrinter` from the step rule
(loop style) or from the unrolled recursion (unrolled style)."""
from __future__ import annotations

from typing import ClassVar

from derive.emit import python, render
from derive.formats.base import Format, Job

#: code style -> template
STYLES = {"loop": "module_loop.py.j2", "unrolled": "module_unrolled.py.j2"}


class ModuleFormat(Format):
    name: ClassVar[str] = "py"

    def files(self, name: str) -> list[str]:
        return [f"{name}.py"]

    def render(self, job: Job) -> dict[str, bytes]:
        template = STYLES[job.style]
        if job.style == "loop":
            view = python.module_view(job.derivation, job.command, template)
        else:
            view = python.unrolled_view(job.derivation, job.document.labels, job.command, template)
        # a module defines only the helpers its code calls: render, look, render with them
        body = render.render(template, {**view, "helpers": []})
        code = render.render(template, {**view, "helpers": python.used_helpers(body)})
        return {f"{job.name}.py": code.encode("utf-8")}
