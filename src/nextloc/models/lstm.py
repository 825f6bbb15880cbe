"""The ``lstm`` model: visit embedding -> LSTM -> user-aware residual head (docs/reference.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError
from nextloc.models.base import NextLocationModel
from nextloc.models.head import UserAwareHead
from nextloc.models.dropout import Dropout
from nextloc.models.init import INITS, initialise
from nextloc.models.length_groups import LengthGroups

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
    length_groups: int = 3  # sequence=grouped: at most this many length groups per batch
    group_size_multiple: int = 4  # sequence=grouped: rows per group, a multiple of this
    group_length_multiple: int = 4  # sequence=grouped: padded steps per group, a multiple of this

    def __post_init__(self) -> None:
        counts = ("embed_dim", "hidden_size", "num_layers", "length_groups")
        for key in (*counts, "group_size_multiple", "group_length_multiple"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be > 0")
        for key in ("lstm_dropout", "embed_dropout", "head_dropout", "fc_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}={getattr(self, key)} not in [0, 1); try 0.1")
        if self.init not in INITS:
            raise ConfigError(f"model.init='{self.init}' is unknown; choose one of {list(INITS)}")
        if self.sequence not in SEQUENCE_PATHS:
            raise ConfigError(f"model.sequence='{self.sequence}' is unknown; choose one of {list(SEQUENCE_PATHS)}")


class VisitEmbedding(nn.Module):
    """Sum of location, hour, quarter-hour, weekday and duration embeddings, then dropout.

    The fields may have any shape ``S``; the result is ``(*S, d)``.
    """

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
        self.dropout = Dropout(dropout)

    def forward(self, location: Tensor, time_slot: Tensor, weekday: Tensor, duration: Tensor) -> Tensor:
        x = self.location(location)
        if self.use_time:
            hour, quarter = time_slot // SLOTS_PER_HOUR, time_slot % SLOTS_PER_HOUR
            x = x + self.hour(hour) + self.quarter(quarter) + self.weekday(weekday)
        if self.use_duration:
            x = x + self.duration(duration)
        return self.dropout(x)


class LastStepLSTM(nn.Module):
    """An LSTM over the blocks of a :class:`LengthGroups` layout, returning each sequence's last valid output.

    Three paths compute the same function, because a unidirectional LSTM's
    output at a valid step never depends on later padding:

    - ``packed``: the reference's packed sequence (a per-step loop that uses
      several cores poorly);
    - ``padded``: one run over the whole batch padded to its longest history;
    - ``grouped``: at most ``length_groups`` groups, each padded only to its
      own longest history; the least wasted work. The boundaries are chosen
      per batch to minimise the padded steps (see
      :func:`~nextloc.models.length_groups.length_group_sizes`), which wastes
      far less than equal-sized groups on the long-tailed history lengths.
      Group sizes are multiples of ``group_size_multiple`` and padded lengths
      multiples of ``group_length_multiple``, which keeps oneDNN's kernel
      cache small and warm (see :meth:`LengthGroups.plan`). Dropout between
      layers draws its masks per group, so training runs are equivalent to,
      not bit-identical with, the other paths.

    oneDNN (``torch.backends.mkldnn``, on by default) runs the padded and
    grouped paths about 3x (GeoLife sizes) and 1.3x (DIY sizes) faster than
    PyTorch's native kernel; the packed path cannot use it.

    Each layer is its own one-layer ``nn.LSTM`` so that the dropout between
    layers is :class:`~nextloc.models.dropout.Dropout`, not ``nn.LSTM``'s
    built-in one with its slow CPU mask: the same parameters, named per layer.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers,
        dropout,
        sequence,
        length_groups,
        group_size_multiple,
        group_length_multiple,
    ) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.LSTM(size, hidden_size) for size in sizes)
        self.dropout = Dropout(dropout)  # between layers
        self.sequence = sequence
        grouped = sequence == "grouped"
        self.length_groups = length_groups if grouped else 1
        self.group_size_multiple = group_size_multiple if grouped else 1
        self.group_length_multiple = group_length_multiple if grouped else 1

    def plan(self, length: Tensor, width: int) -> LengthGroups:
        """The layout this encoder runs a batch of ``(B, width)`` histories in (one group under ``torch.export``)."""
        if torch.compiler.is_compiling():
            return LengthGroups.whole(length, width)
        return LengthGroups.plan(
            length, width, self.length_groups, self.group_size_multiple, self.group_length_multiple
        )

    def forward(self, blocks: list[Tensor], groups: LengthGroups) -> Tensor:
        if self.sequence == "packed" and not torch.compiler.is_compiling():
            (x,) = blocks  # one group, longest first
            packed = pack_padded_sequence(x, groups.length.cpu())
            for i, layer in enumerate(self.layers):
                if i:
                    packed = PackedSequence(self.dropout(packed.data), packed.batch_sizes)
                packed = layer(packed)[0]
            return groups.last_steps([pad_packed_sequence(packed)[0]])
        for i, layer in enumerate(self.layers):
            if i:
                blocks = [self.dropout(x) for x in blocks]
            blocks = [layer(x)[0] for x in blocks]
        return groups.last_steps(blocks)


class LSTMModel(UserAwareHead, NextLocationModel):
    """Embedding -> LSTM -> LayerNorm -> (+ user) -> residual block + BatchNorm -> classes.

    Examples
    --------
    >>> model = LSTMModel(DataInfo(num_locations=1187, num_users=46))
    >>> sum(p.numel() for p in model.parameters())
    482659
    """

    inputs = ("time_slot", "weekday", "duration")

    def __init__(
        self,
        data: DataInfo,
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
        length_groups: int = 3,
        group_size_multiple: int = 4,
        group_length_multiple: int = 4,
    ) -> None:
        super().__init__()
        self.embedding = VisitEmbedding(data.num_locations, embed_dim, embed_dropout, use_time, use_duration)
        self.encoder = LastStepLSTM(
            embed_dim,
            hidden_size,
            num_layers,
            lstm_dropout,
            sequence,
            length_groups,
            group_size_multiple,
            group_length_multiple,
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.build_head(data, hidden_size, head_dropout, fc_dropout, use_user)
        initialise(self, init)

    def forward(self, batch: Batch) -> Tensor:
        # embed only the positions the encoder reads: each group padded to its own length
        groups = self.encoder.plan(batch.length, batch.location.shape[1])
        fields = (batch.location, batch.time_slot, batch.weekday, batch.duration)
        x = self.embedding(*(groups.gather(field) for field in fields))  # (N, d)
        h = self.norm(self.encoder(groups.split(x), groups))  # (B, h)
        return self.head(h, batch.user)  # (B, L)
