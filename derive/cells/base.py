"""What a cell module declares about its parameters."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """A per-layer parameter. `shape` is its column-layout shape in the words "hidden"
    (this layer's size) and "below" (the layer below's, or the input's); row layout
    transposes it. A vector has one word. `bias` marks parameters present only with
    `model.bias = true`."""

    role: str
    gate: str | None
    shape: tuple[str, ...]
    bias: bool = False
    reset: str | None = None   # a GRU's parameter present only with this `gru_reset`

    def present(self, model) -> bool:
        """Whether a model has this parameter (bias on, the GRU's reset form)."""
        return (model.bias or not self.bias) and self.reset in (None, model.gru_reset)
