"""The handout in LaTeX (`templates/latex/`): text is escaped for TeX, math set inline."""
from __future__ import annotations

from typing import ClassVar

from derive.document import Document
from derive.formats.documents import DocumentFile, DocumentFormat

_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
             "#": r"\#", "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}",
             "`": r"\textasciigrave{}", "\n": " "}
#: Doubled, these form a ligature in T1 (-- en dash, << guillemet, '' and ,, quotes).
_LIGATURES = "-<>',"


def tex_text(text: str) -> str:
    """Plain text made safe to set in LaTeX: specials escaped, ligatures broken with `{}`
    (also at the end, where the next run could double the character)."""
    out = []
    for i, c in enumerate(text):
        if c in _LIGATURES:
            out.append(c + "{}" if text[i + 1:i + 2] in (c, "") else c)
        else:
            out.append(_SPECIALS.get(c, c))
    return "".join(out)


class Latex(DocumentFormat):
    folder, suffix = "latex", "tex"

    def text(self, text: str) -> str:
        return tex_text(text)

    def math(self, latex: str) -> str:
        return f"${latex}$"

    def code(self, text: str) -> str:
        return rf"\texttt{{{tex_text(text)}}}"


def render(document: Document) -> str:
    return Latex().render(document)


class LatexFormat(DocumentFile):
    """`<name>.tex`: the handout."""

    name: ClassVar[str] = "tex"
    renderer: ClassVar[DocumentFormat] = Latex()
