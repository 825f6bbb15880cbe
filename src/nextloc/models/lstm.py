"""The ``lstm`` model: visit embedding -> LSTM -> user-aware residual head (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nextloc.data.batches import Batch
from nextloc.errors import ConfigError
from nextloc.models.init import INITS, initialise

SEQUENCE_PATHS = ("grouped", "padded", "packed")
SLOTS_PER_HOUR = 4


@dataclass
class LSTMConfig:
    """Sizes and switches of :class:`LSTMModel`; table sizes come from the data."""

    name: str = "lstm"
    embed_dim: int = 32
    hidden_size: int = 128
    num_layers: int = 2
    lstm_dropout: float = 0.2  # between LSTM layers
    embed_dropout: float = 0.1
    head_dropout: float = 0.1  # after adding the user embedding
    fc_dropout: float = 0.2  # inside the residual block
    use_time: bool = True
    use_duration: bool = True
    use_user: bool = True
    init: str = "reference"
    sequence: str = "grouped"  # how the LSTM skips padding; all give the same model
    length_groups: int = 4  # sequence=grouped: at most this many length groups per batch

    def __post_init__(self) -> None:
        for key in ("embed_dim", "hidden_size", "num_layers", "length_groups"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be > 0")
        for key in ("lstm_dropout", "embed_dropout", "head_dropout", "fc_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}={getattr(self, key)} not in [0, 1); try 0.1")
        if self.init not in INITS:
            raise ConfigError(f"model.init='{self.init}' is unknown; choose one of {list(INITS)}")
        if self.sequence not in SEQUENCE_PATHS:
            raise ConfigError(f"model.sequence='{self.sequence}' is unknown; choose one of {list(SEQUENCE_PATHS)}")


class VisitEmbedding(nn.Module):
    """Sum of location, hour, quarter-hour, weekday and duration embeddings, then dropout."""

    def __init__(self, num_locations, embed_dim, dropout, use_time=True, use_duration=True) -> None:
        super().__init__()
        self.location = nn.Embedding(num_locations, embed_dim)
        self.use_time, self.use_duration = use_time, use_duration
        if use_time:
            self.hour = nn.Embedding(24, embed_dim)
            self.quarter = nn.Embedding(SLOTS_PER_HOUR, embed_dim)
            self.weekday = nn.Embedding(7, embed_dim)
        if use_duration:
            self.duration = nn.Embedding(96, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: Batch) -> Tensor:
        x = self.location(batch.location)  # (B, T, d)
        if self.use_time:
            slot = batch.time_slot
            x = x + self.hour(slot // SLOTS_PER_HOUR) + self.quarter(slot % SLOTS_PER_HOUR) + self.weekday(batch.weekday)
        if self.use_duration:
            x = x + self.duration(batch.duration)
        return self.dropout(x)


class LastStepLSTM(nn.Module):
    """An LSTM that returns each sequence's output at its last valid step: ``(B, T, d) -> (B, h)``.

    Three paths compute the same function, because a unidirectional LSTM's
    output at a valid step never depends on later padding:

    - ``packed``: the reference's packed sequence (a per-step loop that uses
      several cores poorly);
    - ``padded``: one run over the padded batch, then a gather;
    - ``grouped``: the batch ordered by length and run in at most
      ``length_groups`` groups, each padded only to its own longest history,
      then put back in order; the least wasted work. The group boundaries are
      chosen per batch to minimise the padded steps (see
      :func:`length_group_sizes`), which wastes far less than equal-sized
      groups on the long-tailed history lengths (at 4 groups: about 1.23x the
      valid steps instead of 1.5x). Dropout between layers draws its masks per
      group, so training runs are equivalent to, not bit-identical with, the
      other paths.

    oneDNN (``torch.backends.mkldnn``, on by default) runs the padded and
    grouped paths about 3x (GeoLife sizes) and 1.3x (DIY sizes) faster than
    PyTorch's native kernel; the packed path cannot use it.
    """

    def __init__(self, input_size, hidden_size, num_layers, dropout, sequence="grouped", length_groups=4) -> None:
        super().__init__()
        dropout = dropout if num_layers > 1 else 0.0  # it only acts between layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.sequence, self.length_groups = sequence, length_groups

    def forward(self, x: Tensor, length: Tensor) -> Tensor:
        if self.sequence == "packed":
            packed = pack_padded_sequence(x, length.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
            return _last_step(out, length)
        if self.sequence == "padded":
            return _last_step(self.lstm(x)[0], length)
        sorted_length, order = torch.sort(length, descending=True)
        sizes = length_group_sizes(sorted_length.cpu().numpy(), self.length_groups)
        parts = []
        for group, group_length in zip(torch.split(order, sizes), torch.split(sorted_length, sizes)):
            out, _ = self.lstm(x[group, : int(group_length[0])])  # (b, T_g, h)
            parts.append(_last_step(out, group_length))
        return torch.cat(parts).index_select(0, torch.argsort(order))


def length_group_sizes(sorted_length: np.ndarray, max_groups: int) -> list[int]:
    """Sizes of at most ``max_groups`` consecutive groups of descending lengths with the fewest padded steps.

    A group costs ``len(group) * group[0]`` LSTM steps (it is padded to its
    longest member). Boundaries only matter where the length changes, so a
    dynamic programme over the ``D`` distinct lengths (``D <= max length``)
    finds the optimum in ``max_groups`` vectorised ``(D, D)`` steps.

    Examples
    --------
    >>> length_group_sizes(np.array([90, 40, 38, 20, 19, 18, 5, 4]), 3)
    [1, 2, 5]
    """
    values, counts = np.unique(sorted_length, return_counts=True)
    values, counts = values[::-1], counts[::-1]  # distinct lengths, descending
    ends = np.concatenate([[0], np.cumsum(counts)])  # row where each distinct length starts; ends[-1] = n
    n_distinct = len(values)
    # cost[s, e]: one group from distinct length s up to (not including) e
    cost = (ends[None, :] - ends[:-1, None]) * values[:, None].astype(np.float64)
    cost[np.tril_indices(n_distinct, 0, n_distinct + 1)] = np.inf  # e must be > s
    best = np.full(n_distinct + 1, np.inf)
    best[n_distinct] = 0.0  # nothing left to cover
    choices = []
    for _ in range(min(max_groups, n_distinct)):
        total = cost + best[None, :]
        choice = total.argmin(axis=1)
        best = np.append(total[np.arange(n_distinct), choice], 0.0)
        choices.append(choice)
    sizes, start = [], 0
    for choice in reversed(choices):  # the last level holds the first group's best end
        if start == n_distinct:
            break
        end = int(choice[start])
        sizes.append(int(ends[end] - ends[start]))
        start = end
    return sizes


def _last_step(out: Tensor, length: Tensor) -> Tensor:
    return out[torch.arange(len(length), device=out.device), length.to(out.device) - 1]


class LSTMModel(nn.Module):
    """Embedding -> LSTM -> LayerNorm -> (+ user) -> residual block + BatchNorm -> classes.

    Examples
    --------
    >>> model = LSTMModel(num_locations=1187, num_users=46)
    >>> sum(p.numel() for p in model.parameters())
    482659
    """

    def __init__(
        self,
        num_locations: int,
        num_users: int,
        embed_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 2,
        lstm_dropout: float = 0.2,
        embed_dropout: float = 0.1,
        head_dropout: float = 0.1,
        fc_dropout: float = 0.2,
        use_time: bool = True,
        use_duration: bool = True,
        use_user: bool = True,
        init: str = "reference",
        sequence: str = "grouped",
        length_groups: int = 4,
    ) -> None:
        super().__init__()
        self.embedding = VisitEmbedding(num_locations, embed_dim, embed_dropout, use_time, use_duration)
        self.encoder = LastStepLSTM(embed_dim, hidden_size, num_layers, lstm_dropout, sequence, length_groups)
        self.norm = nn.LayerNorm(hidden_size)
        self.user = nn.Embedding(num_users, hidden_size) if use_user else None
        self.head_dropout = nn.Dropout(head_dropout)
        self.residual = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size),
            nn.ReLU(),
            nn.Dropout(fc_dropout),
            nn.Linear(2 * hidden_size, hidden_size),
            nn.Dropout(fc_dropout),
        )
        self.residual_norm = nn.BatchNorm1d(hidden_size)
        self.classifier = nn.Linear(hidden_size, num_locations)
        initialise(self, init)

    def forward(self, batch: Batch) -> Tensor:
        x = self.embedding(batch)  # (B, T, d)
        h = self.norm(self.encoder(x, batch.length))  # (B, h)
        if self.user is not None:
            h = h + self.user(batch.user)
        h = self.head_dropout(h)
        h = self.residual_norm(h + self.residual(h))
        return self.classifier(h)  # (B, L)
