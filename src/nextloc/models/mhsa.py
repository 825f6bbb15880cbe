"""The ``mhsa`` model: visit embedding -> causal transformer encoder -> the ``lstm``'s user-aware head (docs/reference.md).

Hong et al. 2023: the summed location, time and duration embeddings scaled by
``sqrt(d)`` plus fixed sinusoidal positions, a post-norm GELU
``TransformerEncoder`` with a final LayerNorm under causal and padding masks;
the output at each history's last valid step goes into the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError
from nextloc.models.base import NextLocationModel
from nextloc.models.dropout import Dropout
from nextloc.models.head import UserAwareHead
from nextloc.models.init import INITS, initialise
from nextloc.models.length_groups import run_by_length
from nextloc.models.lstm import VisitEmbedding
from nextloc.models.transformer import TransformerEncoder


@dataclass
class MHSAConfig:
    """Sizes and switches of :class:`MHSAModel` (GeoLife sizes); table sizes come from the data."""

    name: str = "mhsa"
    embed_dim: int = 32  # d
    num_layers: int = 2
    num_heads: int = 8
    feedforward_dim: int = 128
    dropout: float = 0.1  # after the embedding, and inside the encoder
    head_dropout: float = 0.1
    fc_dropout: float = 0.2
    use_time: bool = True
    use_duration: bool = True
    use_user: bool = True
    init: str = "xavier"
    length_groups: int = 3  # the encoder runs a batch in up to this many groups of similar history length; same scores

    def __post_init__(self) -> None:
        for key in ("embed_dim", "num_layers", "num_heads", "feedforward_dim", "length_groups"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be > 0")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"model.embed_dim={self.embed_dim} must be a multiple of model.num_heads={self.num_heads}")
        for key in ("dropout", "head_dropout", "fc_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}={getattr(self, key)} not in [0, 1); try 0.1")
        if self.init not in INITS:
            raise ConfigError(f"model.init='{self.init}' is unknown; choose one of {list(INITS)}")


def sinusoidal_positions(length: int, dim: int, device=None) -> Tensor:
    """``(length, dim)``: sin on even, cos on odd dimensions, wavelengths up to 10000 * 2 pi."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


class MHSAModel(UserAwareHead, NextLocationModel):
    """Embedding (x sqrt d, + positions) -> causal TransformerEncoder + LayerNorm -> last valid step -> head.

    Examples
    --------
    >>> model = MHSAModel(DataInfo(num_locations=1187, num_users=46))
    >>> sum(p.numel() for p in model.parameters())
    112547
    """

    inputs = ("time_slot", "weekday", "duration")

    def __init__(
        self,
        data: DataInfo,
        embed_dim: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        feedforward_dim: int = 128,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
        fc_dropout: float = 0.2,
        use_time: bool = True,
        use_duration: bool = True,
        use_user: bool = True,
        init: str = "xavier",
        length_groups: int = 3,
    ) -> None:
        super().__init__()
        self.length_groups = length_groups
        self.embedding = VisitEmbedding(data.num_locations, embed_dim, 0.0, use_time, use_duration)
        self.embedding_dropout = Dropout(dropout)  # after scaling and positions
        self.encoder = TransformerEncoder(embed_dim, num_heads, feedforward_dim, dropout, num_layers, norm_first=False,
                                          final_norm=True)
        self.build_head(data, embed_dim, head_dropout, fc_dropout, use_user)
        initialise(self, init)

    def encode(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The embedded histories ``(B, T, d)`` and their padding ``(B, T)`` (True = padded)."""
        steps = batch.location.shape[1]
        x = self.embedding(batch.location, batch.time_slot, batch.weekday, batch.duration)
        x = x * math.sqrt(x.shape[-1]) + sinusoidal_positions(steps, x.shape[-1], x.device)
        padding = torch.arange(steps, device=x.device)[None, :] >= batch.length[:, None]
        return self.embedding_dropout(x), padding

    def forward(self, batch: Batch) -> Tensor:
        # the encoder treats histories one by one, so it may run in length groups; the head's BatchNorm sees the batch
        return self.head(run_by_length(self._last_state, batch, self.length_groups), batch.user)

    def _last_state(self, batch: Batch) -> Tensor:
        out = self.encoder(*self.encode(batch), causal=True)  # (B, T, d)
        return out[torch.arange(out.shape[0], device=out.device), batch.length - 1]  # (B, d)

    @torch.no_grad()
    def attention_maps(self, batch: Batch) -> list[Tensor]:
        """Each layer's attention of the last valid step over the history: ``(B, heads, T)`` per layer.

        Every layer runs under the same causal and padding masks as in ``forward``.
        """
        x, padding = self.encode(batch)
        rows = torch.arange(x.shape[0], device=x.device)
        return [weights[rows, :, batch.length - 1] for weights in self.encoder.attention_maps(x, padding, causal=True)]
