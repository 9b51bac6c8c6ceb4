"""The format registry: one class per output format (as SymForce's codegen configs).

`build` runs the formats a user asks for, in this order, each on the same `Job`. A
format that `needs` another reads that one's rendered files; those are rendered too,
and written only if asked for. Adding a format is one class here (README, "How to add").
"""
from __future__ import annotations

from derive.formats.base import Format, Job
from derive.formats.latex import LatexFormat
from derive.formats.markdown import MarkdownFormat
from derive.formats.module import STYLES, ModuleFormat
from derive.formats.pdf import TEX_HINT, PdfFormat

FORMATS: dict[str, Format] = {f.name: f for f in (LatexFormat(), PdfFormat(), MarkdownFormat(), ModuleFormat())}

__all__ = ["FORMATS", "Format", "Job", "STYLES", "TEX_HINT"]
