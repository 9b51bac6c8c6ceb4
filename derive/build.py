"""`derive build`: spec -> unroll -> derive -> document -> formats -> files, in that order.

Everything one command produces (every format of every spec) is rendered and typeset in
memory first, then handed to `derive.files.write_all`, which writes all of it or nothing:
a file that does not carry our generated-file marker is never overwritten unless `force`
is given, and each file is written atomically.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from derive import bptt, document, files, numbers
from derive.formats import FORMATS, STYLES, TEX_HINT, Job
from derive.spec import Spec, SpecError

MARKER = files.MARKER
#: The regenerating command lands in every header (a docstring, TeX and Markdown comments):
#: only these characters may pass, so it can never close the comment it sits in.
COMMAND_CHARS = re.compile(r"[A-Za-z0-9_.=/ -]{0,200}")


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


def render(spec: Spec, formats: list[str], style: str = "loop", command: str = "",
           hint: bool = True) -> dict[str, bytes]:
    """Every file of the requested formats, in memory: file name -> content."""
    formats = _validate(spec, formats, style, command)
    derivation = bptt.derive(spec)                        # unroll and derive, once
    wanted = {need for f in formats for need in FORMATS[f].needs} | set(formats)
    doc = None
    if any(FORMATS[f].reads_document for f in wanted):    # not for the module alone (derive check)
        figures = numbers.compute(derivation, command)    # the worked example, the measured norms
        doc = document.build(derivation, command, numbers=figures)   # the handout as data
    job = Job(derivation, doc, command, style)
    for name, fmt in FORMATS.items():                     # the formats, in registry order
        if name in wanted:
            out = fmt.render(job)
            if out is None:
                if hint:
                    print(f"derive: note: {TEX_HINT}", file=sys.stderr)
            else:
                job.rendered.update(out)
    return {file: job.rendered[file] for f in formats for file in FORMATS[f].files(spec.name)
            if file in job.rendered}


def render_all(spec: Spec, formats: list[str], style: str, command: str) -> dict[str, str]:
    """The requested text outputs, by format (tests and `derive check` read the module this way)."""
    out = render(spec, formats, style, command)
    return {f: out[f"{spec.name}.{f}"].decode("utf-8") for f in formats if f != "pdf"}


def outputs(spec: Spec, folder: Path, *, formats: list[str], style: str = "loop",
            command: str = "", force: bool = False, hint: bool = True) -> list[tuple[Path, bytes]]:
    """The (path, bytes) of every requested output of one spec, produced in memory."""
    formats = _validate(spec, formats, style, command)
    folder = Path(folder)
    targets = [folder / file for f in formats for file in FORMATS[f].files(spec.name)]
    files.check(targets, force=force)   # fail fast; write_all checks again
    return [(folder / file, data) for file, data in render(spec, formats, style, command, hint).items()]


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
