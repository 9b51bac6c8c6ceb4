"""The handout in Markdown (`templates/markdown/`, GitHub's dialect with `$` math)."""
from __future__ import annotations

from typing import ClassVar

import re

from derive.document import Document
from derive.formats.documents import DocumentFile, DocumentFormat

#: Characters that Markdown or HTML would interpret anywhere in a line ($ starts math).
_SPECIALS = set("\\`*[]<>$|&~")


def md_text(text: str) -> str:
    """Plain text made safe in Markdown: specials get a backslash; `_` only where it could
    start or end emphasis (inside a word, as in `W_xh`, it cannot)."""
    out = []
    for i, c in enumerate(text):
        if c == "_":
            inside = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inside else r"\_")
        elif c in _SPECIALS:
            out.append("\\" + c)
        else:
            out.append(" " if c == "\n" else c)
    return "".join(out)


def md_code(text: str) -> str:
    """A code span: fenced by more backticks than it contains in a row."""
    text = text.replace("\n", " ")
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class Markdown(DocumentFormat):
    folder, suffix = "markdown", "md"

    def text(self, text: str) -> str:
        return md_text(text)

    def math(self, latex: str) -> str:
        return f"${latex}$"

    def code(self, text: str) -> str:
        return md_code(text)

    def comment(self, text: str) -> str:
        # inside <!-- -->: a ">" could close it
        return super().comment(text).replace(">", "&gt;")


def render(document: Document) -> str:
    return Markdown().render(document)


class MarkdownFormat(DocumentFile):
    """`<name>.md`: the handout."""

    name: ClassVar[str] = "md"
    renderer: ClassVar[DocumentFormat] = Markdown()
