"""The ``mostfreq`` baseline: the most frequent place of the sample's history or of its user."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nextloc.data.batches import Batch, SplitTensors
from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError
from nextloc.models.base import CountModel
from nextloc.models.counting import SparseCounts, history_counts, training_transitions

SCOPES = ("history", "user")


@dataclass
class MostFreqConfig:
    name: str = "mostfreq"
    scope: str = "history"  # history: visits in the sample's own history; user: the user's training targets

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"model.scope='{self.scope}' is unknown; choose one of {list(SCOPES)}")


class MostFreqModel(CountModel):
    """Scores each location by its visit count, in the history (``scope=history``) or the user's training targets.

    ``scope=user`` counts the targets of the user's training samples (each a
    visit with a history before it), which gives the same answer for data sets
    whose tables repeat visits, such as those imported from pickles.
    """

    def __init__(self, data: DataInfo, scope: str) -> None:
        super().__init__()
        self.num_locations, self.scope = data.num_locations, scope
        self.user_counts = SparseCounts(data.num_locations)

    def fit(self, train: SplitTensors) -> None:
        if self.scope == "user":
            user, _, target = training_transitions(train)
            self.user_counts.fit(user, target)

    def forward(self, batch: Batch) -> Tensor:
        if self.scope == "history":
            return history_counts(batch, self.num_locations)
        return self.user_counts.rows(batch.user)
