"""The ``pointer`` model: a transformer whose prediction mixes copying from the history with a softmax over all places.

On real mobility data the next place is in the 7-day history most of the
time, and a softmax over all places cannot copy. This model (the
position-aware pointer network of the copy-model family, docs/reference.md)
concatenates location, user, time, weekday, recency (``diff``, days before
the target's day), duration and position-from-end embeddings, projects them
to ``d`` and adds sinusoidal positions; a pre-norm transformer encodes the
history (every step sees every other: the whole history is the past). From
the last valid step,

- the pointer attends over the history positions (plus a learned bias per
  position from the end) and scatters that mass onto the history's location
  ids;
- the generation head is a softmax over every location;
- a learned gate mixes the two distributions.

``forward`` returns ``log(p + 1e-10)``; the loss is cross-entropy on those
with label smoothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.data.samples import PADDING
from nextloc.errors import ConfigError
from nextloc.models.base import NextLocationModel
from nextloc.models.init import INITS, initialise
from nextloc.models.length_groups import run_by_length
from nextloc.models.mhsa import sinusoidal_positions
from nextloc.models.transformer import TransformerEncoder

MIXES = ("gate", "pointer", "generation")
# Table rows of the published model: the largest value of each feature kept apart, larger ones clamped to it.
TIME_ROWS, WEEKDAY_ROWS, DIFF_ROWS, DURATION_ROWS = 97, 8, 9, 100
EPSILON = 1e-10  # added to the mixed probabilities before the log


@dataclass
class PointerConfig:
    """Sizes and switches of :class:`PointerModel` (GeoLife sizes); table sizes come from the data."""

    name: str = "pointer"
    embed_dim: int = 64  # d; each time feature gets d // 4
    num_layers: int = 2
    num_heads: int = 4
    feedforward_dim: int = 128
    dropout: float = 0.15  # inside the encoder
    max_positions: int = 64  # positions from the end kept apart (table and pointer bias); farther ones clamp
    label_smoothing: float = 0.03
    mix: str = "gate"  # gate | pointer (copy only) | generation (softmax only)
    use_time: bool = True
    use_duration: bool = True
    use_diff: bool = True
    use_position_from_end: bool = True
    use_user: bool = True
    use_transition: bool = False  # pointer bias, set by the last state, for steps that followed the current place
    init: str = "xavier"
    length_groups: int = 3  # a batch runs in up to this many groups of similar history length; same scores

    def __post_init__(self) -> None:
        for key in ("embed_dim", "num_layers", "num_heads", "feedforward_dim", "max_positions", "length_groups"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be > 0")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} must be a multiple of 4 and of model.num_heads={self.num_heads}"
            )
        for key in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}={getattr(self, key)} not in [0, 1)")
        if self.mix not in MIXES:
            raise ConfigError(f"model.mix='{self.mix}' is unknown; choose one of {list(MIXES)}")
        if self.init not in INITS:
            raise ConfigError(f"model.init='{self.init}' is unknown; choose one of {list(INITS)}")


class StepEmbedding(nn.Module):
    """Each history step as one ``d`` vector: its features' embeddings concatenated, projected and normalised."""

    def __init__(self, data: DataInfo, dim: int, max_positions: int, use_time: bool, use_duration: bool,
                 use_diff: bool, use_position_from_end: bool, use_user: bool) -> None:
        super().__init__()
        small = dim // 4
        self.location = nn.Embedding(data.num_locations, dim, padding_idx=PADDING)
        self.user = nn.Embedding(data.num_users, dim, padding_idx=0) if use_user else None
        self.time = nn.Embedding(TIME_ROWS, small) if use_time else None
        self.weekday = nn.Embedding(WEEKDAY_ROWS, small) if use_time else None
        self.diff = nn.Embedding(DIFF_ROWS, small) if use_diff else None
        self.duration = nn.Embedding(DURATION_ROWS, small) if use_duration else None
        self.from_end = nn.Embedding(max_positions + 1, small) if use_position_from_end else None
        widths = [dim * (1 + use_user), small * (2 * use_time + use_diff + use_duration + use_position_from_end)]
        self.projection = nn.Linear(sum(widths), dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, batch: Batch, from_end: Tensor) -> Tensor:
        """``(B, T, d)`` from a batch and each step's position from the end ``(B, T)`` (1 = last, 0 = padding)."""
        parts = [self.location(batch.location)]
        if self.user is not None:
            known_mean = self.user.weight[1:].mean(0)  # user 0: one the model has not seen (prediction only)
            user = torch.where(batch.user[:, None] == 0, known_mean, self.user(batch.user))  # (B, d)
            parts.append(user[:, None, :].expand(-1, batch.location.shape[1], -1))
        if self.time is not None:
            parts += [self.time(batch.time_slot.clamp(0, TIME_ROWS - 1)),
                      self.weekday(batch.weekday.clamp(0, WEEKDAY_ROWS - 1))]
        if self.diff is not None:
            parts.append(self.diff(batch.diff.clamp(0, DIFF_ROWS - 1)))
        if self.duration is not None:
            parts.append(self.duration(batch.duration.clamp(0, DURATION_ROWS - 1)))
        if self.from_end is not None:
            parts.append(self.from_end(from_end))
        return self.norm(self.projection(torch.cat(parts, dim=-1)))


class PointerModel(NextLocationModel):
    """Step embedding + positions -> pre-norm TransformerEncoder -> gate * pointer + (1 - gate) * generation.

    Examples
    --------
    >>> model = PointerModel(DataInfo(num_locations=1187, num_users=46))
    >>> sum(p.numel() for p in model.parameters())
    251476
    """

    def __init__(
        self,
        data: DataInfo,
        embed_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        feedforward_dim: int = 128,
        dropout: float = 0.15,
        max_positions: int = 64,
        label_smoothing: float = 0.03,
        mix: str = "gate",
        use_time: bool = True,
        use_duration: bool = True,
        use_diff: bool = True,
        use_position_from_end: bool = True,
        use_user: bool = True,
        use_transition: bool = False,
        init: str = "xavier",
        length_groups: int = 3,
    ) -> None:
        super().__init__()
        self.length_groups = length_groups
        self.inputs = tuple(name for name, used in (("time_slot", use_time), ("weekday", use_time),
                                                      ("diff", use_diff), ("duration", use_duration)) if used)
        self.max_positions, self.label_smoothing, self.mix = max_positions, label_smoothing, mix
        self.embedding = StepEmbedding(data, embed_dim, max_positions, use_time, use_duration, use_diff,
                                       use_position_from_end, use_user)
        self.encoder = TransformerEncoder(embed_dim, num_heads, feedforward_dim, dropout, num_layers, norm_first=True,
                                          final_norm=False)
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.position_bias = nn.Parameter(torch.zeros(max_positions))
        self.transition = nn.Linear(embed_dim, 2) if use_transition else None
        self.generation = nn.Linear(embed_dim, data.num_locations)
        self.gate = nn.Sequential(nn.Linear(embed_dim, embed_dim // 2), nn.GELU(), nn.Linear(embed_dim // 2, 1))
        initialise(self, init)

    def forward(self, batch: Batch) -> Tensor:
        """``log(p + 1e-10)`` ``(B, L)`` of the mixed distribution.

        Samples do not interact, so the batch runs in up to ``length_groups``
        groups of similar history length, each cut to its own longest history.
        """
        return run_by_length(self._scores, batch, self.length_groups)

    def _scores(self, batch: Batch) -> Tensor:
        steps = batch.location.shape[1]
        position = torch.arange(steps, device=batch.location.device)
        padding = position[None, :] >= batch.length[:, None]  # (B, T), True = hidden
        from_end = (batch.length[:, None] - position[None, :]).clamp(0, self.max_positions - 1)  # (B, T)
        x = self.embedding(batch, from_end)
        x = x + sinusoidal_positions(steps, x.shape[-1], x.device)
        encoded = self.encoder(x, padding, causal=False)  # (B, T, d): every step sees the whole history
        last = encoded[torch.arange(encoded.shape[0], device=x.device), batch.length - 1]  # (B, d)
        if self.mix != "generation":
            copy = self._pointer(last, encoded, padding, from_end, batch)
        if self.mix != "pointer":
            generate = self.generation(last).softmax(-1)
        if self.mix == "gate":
            gate = torch.sigmoid(self.gate(last))  # (B, 1)
            probabilities = gate * copy + (1 - gate) * generate
        else:
            probabilities = copy if self.mix == "pointer" else generate
        return torch.log(probabilities + EPSILON)

    def _pointer(self, last: Tensor, encoded: Tensor, padding: Tensor, from_end: Tensor, batch: Batch) -> Tensor:
        """Attention of the last state over the history positions, scattered onto their location ids ``(B, L)``."""
        query = self.query(last)[:, None, :]  # (B, 1, d)
        scores = (query @ self.key(encoded).transpose(1, 2)).squeeze(1) / math.sqrt(last.shape[-1])  # (B, T)
        scores = scores + self.position_bias[from_end]
        if self.transition is not None:
            scores = scores + self._transition_bias(last, batch)
        scores = scores.masked_fill(padding, float("-inf"))
        weights = scores.softmax(-1)
        copy = weights.new_zeros(weights.shape[0], self.generation.out_features)
        return copy.scatter_add(1, batch.location, weights)

    def _transition_bias(self, last: Tensor, batch: Batch) -> Tensor:
        """``(B, T)``: two weights from the last state, for steps right after a visit to the current place and for
        visits to the current place itself: "where does this person usually go from here" within the window."""
        location = batch.location
        current = location.gather(1, batch.length[:, None] - 1)  # (B, 1)
        previous = F.pad(location[:, :-1], (1, 0))  # (B, T): the place of the step before
        flags = torch.stack([previous == current, location == current], dim=-1).to(last.dtype)  # (B, T, 2)
        return (flags * self.transition(last)[:, None, :]).sum(-1)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        return {"cross_entropy": self._loss(self(batch), batch)}

    def validation_loss(self, scores: Tensor, batch: Batch) -> Tensor:
        return self._loss(scores, batch)

    def probabilities(self, scores: Tensor) -> Tensor:
        return scores.exp()

    def _loss(self, scores: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(scores, batch.target, ignore_index=PADDING, label_smoothing=self.label_smoothing)
