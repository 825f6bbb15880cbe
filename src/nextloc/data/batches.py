"""Batches of samples, gathered from one split's tensors in a single indexing step.

The tensors are made once when a split is loaded; a batch is a
``(batch, max_len)`` index matrix into them, so building it costs a handful of
tensor operations whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

SLOT_MINUTES = 15  # time slot of a day: start_min // 15 -> 0..95
DURATION_BUCKET_MINUTES = 30  # duration // 30 -> 0..95


@dataclass
class Batch:
    """Histories left-aligned and padded with 0, plus their targets.

    Shapes: history fields ``(B, T)``, ``length``, ``user`` and ``target``
    ``(B,)``. ``diff`` is the target's day minus each history step's day.
    """

    location: Tensor
    time_slot: Tensor
    weekday: Tensor
    duration: Tensor
    diff: Tensor
    length: Tensor
    user: Tensor
    target: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


class SplitTensors:
    """One split's staypoint features and sample index as tensors.

    Examples
    --------
    >>> split = SplitTensors(data.staypoints["train"], data.samples["train"])  # doctest: +SKIP
    >>> for batch in split.batches(32, shuffle=True, drop_last=True, generator=g): ...  # doctest: +SKIP
    """

    def __init__(self, staypoints: pd.DataFrame, samples: pd.DataFrame) -> None:
        def column(frame, name):
            return torch.as_tensor(frame[name].to_numpy(), dtype=torch.long)

        self.location = column(staypoints, "location_id")
        self.time_slot = column(staypoints, "start_min") // SLOT_MINUTES
        self.weekday = column(staypoints, "weekday")
        self.duration = column(staypoints, "duration") // DURATION_BUCKET_MINUTES
        self.start_day = column(staypoints, "start_day")
        self.user = column(staypoints, "user_id")
        self.history_start = column(samples, "history_start")
        self.history_end = column(samples, "history_end")
        self.target_index = column(samples, "target_index")

    def __len__(self) -> int:
        return len(self.history_start)

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batch(self, index: Tensor) -> Batch:
        """The samples at positions ``index`` as one padded batch."""
        start = self.history_start[index]
        length = self.history_end[index] - start
        steps = torch.arange(int(length.max()))
        valid = steps < length[:, None]  # (B, T)
        rows = torch.where(valid, start[:, None] + steps, 0)
        target_row = self.target_index[index]

        def history(values: Tensor) -> Tensor:
            return values[rows].masked_fill_(~valid, 0)

        return Batch(
            location=history(self.location),
            time_slot=history(self.time_slot),
            weekday=history(self.weekday),
            duration=history(self.duration),
            diff=(self.start_day[target_row, None] - self.start_day[rows]).masked_fill_(~valid, 0),
            length=length,
            user=self.user[target_row],
            target=self.location[target_row],
        )

    def batches(
        self, batch_size: int, *, shuffle: bool, drop_last: bool, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Batches over the whole split: shuffled (training) or in order (evaluation)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(self.num_batches(batch_size, drop_last)):
            yield self.batch(order[i * batch_size : (i + 1) * batch_size])
