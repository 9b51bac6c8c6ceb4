"""What a format is: a class that names its files, its templates and its printer, and
renders its files from the stages before it (the derivation and the document)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:   # the derivation is an input of the formats, never called by them
    from derive.bptt import Derivation


@dataclass
class Job:
    """Everything a format may read: the results of the earlier stages, and the text
    outputs of the formats it `needs` (a PDF typesets the LaTeX)."""

    derivation: "Derivation"
    document: Any
    command: str
    style: str = "loop"
    rendered: dict[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.derivation.spec.name


class Format:
    """One output format. Subclasses set `name`, `needs` and implement `files` and `render`."""

    name: ClassVar[str]
    #: formats whose rendered files this one reads from `Job.rendered`
    needs: ClassVar[tuple[str, ...]] = ()
    #: whether `render` reads `Job.document`: the document (and its numbers) is built only then
    reads_document: ClassVar[bool] = False

    def files(self, name: str) -> list[str]:
        """The file names this format writes for the spec `name`."""
        raise NotImplementedError

    def render(self, job: Job) -> dict[str, bytes] | None:
        """File name -> content; None when the format cannot be produced here (no TeX)."""
        raise NotImplementedError
