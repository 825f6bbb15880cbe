"""Counting helpers shared by the count-based models: sparse count tables and history counts.

Every function works on a whole batch at once; none loops over samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nextloc.data.batches import Batch, SplitTensors
from nextloc.data.samples import PADDING


class SparseCounts(nn.Module):
    """Counts of ``(row, class)`` pairs, stored sparsely as sorted keys ``row * L + class``.

    A per-user transition table at DIY sizes would have 693 x 7038 x 7038
    cells, almost all zero; the keys hold only the pairs that occur.

    Examples
    --------
    >>> table = SparseCounts(num_classes=4)
    >>> table.fit(torch.tensor([0, 0, 1]), torch.tensor([2, 2, 3]))
    >>> table.rows(torch.tensor([0, 1, 5]))
    tensor([[0., 0., 2., 0.],
            [0., 0., 0., 1.],
            [0., 0., 0., 0.]])
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("keys", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0))

    def fit(self, row: Tensor, cls: Tensor) -> None:
        """Count each pair ``(row[i], cls[i])``."""
        self.keys, counts = torch.unique(row * self.num_classes + cls, return_counts=True)
        self.counts = counts.float()

    def rows(self, row: Tensor) -> Tensor:
        """The dense count rows ``(len(row), L)`` of the given row ids (zero for unseen rows)."""
        first = torch.searchsorted(self.keys, row * self.num_classes)
        last = torch.searchsorted(self.keys, (row + 1) * self.num_classes)
        n = last - first
        owner = torch.repeat_interleave(torch.arange(len(row), device=row.device), n)  # (E,)
        offset = torch.arange(len(owner), device=row.device) - torch.repeat_interleave(n.cumsum(0) - n, n)
        entry = first[owner] + offset
        out = torch.zeros(len(row), self.num_classes, device=row.device)
        out[owner, self.keys[entry] % self.num_classes] = self.counts[entry]
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a fitted table's size depends on the data: take the stored size before loading
        for name in ("keys", "counts"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def last_location(batch: Batch) -> Tensor:
    """The current location of each sample: its history's last valid step, ``(B,)``."""
    return batch.location.gather(1, (batch.length - 1)[:, None]).squeeze(1)


def history_counts(batch: Batch, num_classes: int) -> Tensor:
    """How often each location occurs in each history, ``(B, L)``; padding never counts."""
    valid = (batch.location != PADDING).float()
    counts = torch.zeros(len(batch.length), num_classes, device=batch.location.device)
    return counts.scatter_add_(1, batch.location, valid)


def history_transitions(batch: Batch, num_classes: int) -> Tensor:
    """Within each history, how often each location followed the current location, ``(B, L)``."""
    source, destination = batch.location[:, :-1], batch.location[:, 1:]
    current = last_location(batch)[:, None]
    # a pair is inside the history when its destination step is < length
    inside = torch.arange(1, batch.location.shape[1], device=current.device) < batch.length[:, None]
    hit = ((source == current) & inside).float()
    counts = torch.zeros(len(batch.length), num_classes, device=current.device)
    return counts.scatter_add_(1, destination, hit)  # a valid pair's destination is never padding


def training_transitions(train: SplitTensors) -> tuple[Tensor, Tensor, Tensor]:
    """``(user, current location, target)`` of every training sample."""
    current = train.location[train.history_end - 1]
    return train.user[train.target_index], current, train.location[train.target_index]
