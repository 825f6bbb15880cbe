"""Batches of samples, gathered from one split's tensors in a single indexing step.

The tensors are made once when a split is loaded; a batch is a
``(batch, max_len)`` index matrix into them, so building it costs a handful of
tensor operations whatever the batch size.

The schema is open. Besides ``location`` a batch carries the per-step
features its model asks for (:data:`STEP_FEATURES` derives the standard ones;
any other integer column of the staypoint table is available by its own name)
and every extra column of the sample table as a per-sample feature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from nextloc.data.samples import SAMPLE_COLUMNS, STAYPOINT_COLUMNS
from nextloc.errors import DataError

SLOT_MINUTES = 15  # time slot of a day: start_min // 15 -> 0..95
DURATION_BUCKET_MINUTES = 30  # duration // 30 -> 0..95
DIFF = "diff"  # days between a history step and the target: needs the target, so made per batch

STEP_FEATURES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "time_slot": lambda sp: sp["start_min"] // SLOT_MINUTES,
    "weekday": lambda sp: sp["weekday"],
    "duration": lambda sp: sp["duration"] // DURATION_BUCKET_MINUTES,
}


@dataclass
class Batch:
    """Histories left-aligned and padded with 0, plus their targets.

    Shapes: ``location`` ``(B, T)``; ``length``, ``user`` and ``target``
    ``(B,)``; ``features`` maps a name to a per-step ``(B, T)`` tensor (0 at
    padding) or a per-sample ``(B,)`` one. Features read as attributes too:
    ``batch.time_slot`` is ``batch.features["time_slot"]``.
    """

    location: Tensor
    length: Tensor
    user: Tensor
    target: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self.__dict__["features"][name]
        except KeyError:
            raise AttributeError(f"the batch has no feature '{name}'; a model lists what it reads in `inputs`") from None

    def rows(self, index: Tensor, width: int) -> Batch:
        """The samples at ``index``, their per-step fields cut to the first ``width`` steps."""
        return Batch(
            self.location[index, :width], self.length[index], self.user[index], self.target[index],
            {k: v[index, :width] if v.dim() == 2 else v[index] for k, v in self.features.items()},
        )

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=True)

        return Batch(
            move(self.location), move(self.length), move(self.user), move(self.target),
            {k: move(v) for k, v in self.features.items()},
        )


class SplitTensors:
    """One split's staypoint features and sample index as tensors.

    ``inputs`` names the per-step features to carry (``None``: the standard
    ones and ``diff``).

    Examples
    --------
    >>> split = SplitTensors(data.staypoints["train"], data.samples["train"], inputs=("time_slot",))  # doctest: +SKIP
    >>> for batch in split.batches(32, shuffle=True, drop_last=True, generator=g): ...  # doctest: +SKIP
    """

    def __init__(self, staypoints: pd.DataFrame, samples: pd.DataFrame, inputs: Iterable[str] | None = None) -> None:
        def column(values) -> Tensor:
            return torch.as_tensor(pd.Series(values).to_numpy(), dtype=torch.long)

        inputs = (*STEP_FEATURES, DIFF) if inputs is None else tuple(inputs)
        self.location = column(staypoints["location_id"])
        self.user = column(staypoints["user_id"])
        self.start_day = column(staypoints["start_day"])
        self.with_diff = DIFF in inputs
        self.steps = {}
        for name in inputs:
            if name == DIFF:
                continue
            if name in STEP_FEATURES:
                self.steps[name] = column(STEP_FEATURES[name](staypoints))
            elif name in staypoints.columns and name not in STAYPOINT_COLUMNS:
                self.steps[name] = column(staypoints[name])
            else:
                known = sorted({*STEP_FEATURES, DIFF, *(set(staypoints.columns) - set(STAYPOINT_COLUMNS))})
                raise DataError(f"no per-step feature '{name}' in this data set; it has {known}")
        self.history_start = column(samples["history_start"])
        self.history_end = column(samples["history_end"])
        self.target_index = column(samples["target_index"])
        self.per_sample = {c: column(samples[c]) for c in samples.columns if c not in SAMPLE_COLUMNS}
        clash = set(self.per_sample) & {*self.steps, DIFF, "location", "length", "user", "target"}
        if clash:
            raise DataError(f"sample columns {sorted(clash)} have the names of per-step or batch fields; rename them")

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

        features = {name: history(values) for name, values in self.steps.items()}
        if self.with_diff:
            features[DIFF] = (self.start_day[target_row, None] - self.start_day[rows]).masked_fill_(~valid, 0)
        features |= {name: values[index] for name, values in self.per_sample.items()}
        return Batch(
            location=history(self.location),
            length=length,
            user=self.user[target_row],
            target=self.location[target_row],
            features=features,
        )

    def batches(
        self, batch_size: int, *, shuffle: bool, drop_last: bool, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Batches over the whole split: shuffled (training) or in order (evaluation)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(self.num_batches(batch_size, drop_last)):
            yield self.batch(order[i * batch_size : (i + 1) * batch_size])
