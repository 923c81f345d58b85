"""Upsample: nearest and (bi)linear resizing, as torch.nn.Upsample."""

from __future__ import annotations

from collections.abc import Sequence

from graphc.nn import functional as F
from graphc.nn._checks import graph_error
from graphc.nn.module import Module
from graphc.tensor import Tensor


class Upsample(Module):
    """Resize (N, C, ...) inputs to size, or by scale_factor, with 'nearest', 'linear' or
    'bilinear' interpolation (align_corners as in PyTorch)."""

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise graph_error("Upsample: give exactly one of size and scale_factor")
        self.size = size
        if isinstance(scale_factor, (int, float)):
            scale_factor = float(scale_factor)
        elif scale_factor is not None:
            scale_factor = tuple(float(s) for s in scale_factor)
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input resized."""
        return F.interpolate(
            input,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            self.recompute_scale_factor,
        )

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        if self.scale_factor is not None:
            text = f"scale_factor={self.scale_factor!r}"
        else:
            text = f"size={self.size!r}"
        return text + f", mode={self.mode!r}"
