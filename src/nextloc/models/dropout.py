"""Inverted dropout whose mask is cheap to draw on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16  # a 16-bit uniform per element


class Dropout(nn.Module):
    """``nn.Dropout`` with a mask made from 16-bit uniform integers on the CPU.

    PyTorch's CPU dropout draws one Bernoulli variate per element from the
    serial Mersenne Twister, about 8 ns each: a tenth of a GeoLife-sized
    training step. Here every 64-bit draw of the same generator gives four
    16-bit uniforms, about 1 ns per element. The drop probability is rounded
    to a multiple of 2^-16 (0.2 -> 0.199997) and kept values are scaled by the
    inverse of the resulting keep probability, so every output's expectation
    is still its input. Other devices use ``F.dropout``. Seeded by
    ``torch.manual_seed`` like any other draw.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} not in [0, 1)")
        self.p = p
        self.cut = min(round(p * LEVELS), LEVELS - 1)  # a 16-bit uniform below this drops its element

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.cut == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * self.mask(x.shape, x.dtype)

    def mask(self, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """Zeros (dropped) and ``1 / keep probability`` (kept), of ``shape``."""
        n = shape.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits uniform
        uniform = bits.view(torch.int16)[:n].view(shape)  # in [-2^15, 2^15)
        keep = uniform >= self.cut - LEVELS // 2
        return keep.to(dtype).mul_(LEVELS / (LEVELS - self.cut))

    def extra_repr(self) -> str:
        return f"p={self.p}"
