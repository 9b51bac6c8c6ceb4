"""`derive build`: spec -> derivation -> views -> files, in that order.

Everything one command produces (every format of every spec) is rendered and typeset in
memory first, then handed to `derive.files.write_all`, which writes all of it or nothing:
a file that does not carry our generated-file marker is never overwritten unless `force`
is given, and each file is written atomically.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from derive import files, latex
from derive.emit import python, render
from derive.spec import Spec, SpecError

FORMATS = ("tex", "pdf", "md", "py")
STYLES = ("loop", "unrolled")
MARKER = files.MARKER
TEX_HINT = latex.TEX_HINT
#: The regenerating command lands in every header (a docstring, TeX and Markdown comments):
#: only these characters may pass, so it can never close the comment it sits in.
COMMAND_CHARS = re.compile(r"[A-Za-z0-9_.=/ -]{0,200}")


def render_all(spec: Spec, formats: list[str], style: str, command: str) -> dict[str, str]:
    """Every requested text output, rendered in memory."""
    out: dict[str, str] = {}
    if "py" in formats:
        template = "module_loop.py.j2" if style == "loop" else "module_unrolled.py.j2"
        view = python.module_view(spec, command, template) if style == "loop" else \
            python.unrolled_view(spec, command, template)
        out["py"] = render.render(template, view)
    if "tex" in formats or "pdf" in formats or "md" in formats:
        from derive.emit import handout
        views = handout.views(spec, command)
        if "tex" in formats or "pdf" in formats:
            out["tex"] = render.render("handout.tex.j2", views["tex"])
        if "md" in formats:
            out["md"] = render.render("handout.md.j2", views["md"])
    return out


def _validate(spec: object, formats: object, style: object, command: object) -> list[str]:
    if not isinstance(spec, Spec):
        raise SpecError([f"spec: must be a derive.spec.Spec, got {type(spec).__name__}"])
    if isinstance(formats, str) or not isinstance(formats, (list, tuple)) or not formats or \
            any(f not in FORMATS for f in formats):
        raise SpecError([f"formats: must be a non-empty list of {', '.join(FORMATS)}, got {formats!r}"])
    if style not in STYLES:
        raise SpecError([f"style: {style!r} is not one of {', '.join(STYLES)}"])
    if not isinstance(command, str) or not COMMAND_CHARS.fullmatch(command):
        raise SpecError(["command: must be at most 200 letters, digits, spaces and _ . = / -"])
    return [f for f in FORMATS if f in formats]


def outputs(spec: Spec, folder: Path, *, formats: list[str], style: str = "loop",
            command: str = "", force: bool = False, hint: bool = True) -> list[tuple[Path, bytes]]:
    """The (path, bytes) of every requested output of one spec, produced in memory."""
    formats = _validate(spec, formats, style, command)
    folder = Path(folder)
    targets = {fmt: folder / f"{spec.name}.{fmt}" for fmt in formats}
    files.check(list(targets.values()), force=force)   # fail fast; write_all checks again
    texts = render_all(spec, formats, style, command)
    data = {fmt: texts[fmt].encode("utf-8") for fmt in formats if fmt in texts}
    if "pdf" in formats:
        pdf = latex.typeset(data.get("tex") or texts["tex"].encode("utf-8"), spec.name)
        if pdf is None:
            if hint:
                print(f"derive: note: {TEX_HINT}", file=sys.stderr)
        else:
            data["pdf"] = pdf
    return [(targets[fmt], data[fmt]) for fmt in formats if fmt in data]


def build(spec: Spec, folder: Path, *, formats: list[str], style: str = "loop",
          force: bool = False, command: str = "") -> list[Path]:
    """Write the requested outputs of one spec into `folder`; return the paths written."""
    return files.write_all(outputs(spec, folder, formats=formats, style=style, command=command,
                                   force=force), force=force)


def build_many(jobs: list[tuple[Spec, Path, str]], *, formats: list[str], style: str = "loop",
               force: bool = False) -> list[Path]:
    """Build several specs (spec, folder, command) as one all-or-nothing write."""
    names = [spec.name for spec, _, _ in jobs]
    shared = sorted({n for n in names if names.count(n) > 1})
    if shared:
        raise SpecError([f"name: {', '.join(map(repr, shared))} is the name of more than one spec "
                         "in this command; their files would overwrite each other"])
    everything: list[tuple[Path, bytes]] = []
    for i, (spec, folder, command) in enumerate(jobs):
        everything += outputs(spec, folder, formats=formats, style=style, command=command,
                              force=force, hint=i == 0)
    return files.write_all(everything, force=force)
