"""The ``persistent`` baseline: the next place is the current one (the history's last location)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nextloc.data.batches import Batch, SplitTensors
from nextloc.data.info import DataInfo
from nextloc.models.base import CountModel
from nextloc.models.counting import last_location


@dataclass
class PersistentConfig:
    name: str = "persistent"


class PersistentModel(CountModel):
    """Scores 1 for the last visited location of the history, 0 for every other class.

    Examples
    --------
    >>> model = PersistentModel(DataInfo(num_locations=5, num_users=2))
    >>> batch = Batch(torch.tensor([[2, 3, 0]]), torch.tensor([2]), torch.tensor([1]), torch.tensor([2]))
    >>> model(batch)
    tensor([[0., 0., 0., 1., 0.]])
    """

    def __init__(self, data: DataInfo) -> None:
        super().__init__()
        self.num_locations = data.num_locations

    def fit(self, train: SplitTensors) -> None:
        """Nothing to count."""

    def forward(self, batch: Batch) -> Tensor:
        scores = torch.zeros(len(batch.length), self.num_locations, device=batch.location.device)
        return scores.scatter_(1, last_location(batch)[:, None], 1.0)
