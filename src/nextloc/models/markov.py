"""The ``markov`` baseline: first-order transitions from the current location, with a fallback chain."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nextloc.data.batches import Batch, SplitTensors
from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError
from nextloc.models.base import CountModel
from nextloc.models.counting import (
    SparseCounts,
    history_counts,
    history_transitions,
    last_location,
    training_transitions,
)

SCOPES = ("history", "user")
FALLBACKS = ("history", "user", "global_transitions", "global")


@dataclass
class MarkovConfig:
    name: str = "markov"
    scope: str = "user"  # user: the user's training transitions; history: those inside the sample's own window
    fallback: list[str] = field(default_factory=lambda: ["user", "global_transitions", "global"])

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError(f"model.scope='{self.scope}' is unknown; choose one of {list(SCOPES)}")
        unknown = [f for f in self.fallback if f not in FALLBACKS]
        if unknown:
            raise ConfigError(f"model.fallback has unknown entries {unknown}; choose from {list(FALLBACKS)}")


class MarkovModel(CountModel):
    """Counts of the places that followed the current location; where there are none, the next source.

    The transitions are those of the user's training samples (current
    location -> target, ``scope=user``) or the consecutive pairs inside the
    sample's own history (``scope=history``). A sample whose current location
    has no transition takes its scores from the first ``fallback`` source
    that has any: ``history`` (the history's visit counts), ``user`` (the
    user's training targets), ``global_transitions`` (every user's training
    transitions from the current location), ``global`` (all training targets).
    Ties are left as they are; the metrics average over them.
    """

    def __init__(self, data: DataInfo, scope: str, fallback: list[str]) -> None:
        super().__init__()
        self.num_locations, self.scope, self.fallback = data.num_locations, scope, list(fallback)
        L = data.num_locations
        self.user_transitions = SparseCounts(L)  # row: user * L + current location
        self.user_targets = SparseCounts(L)  # row: user
        self.global_transitions = SparseCounts(L)  # row: current location
        self.global_targets = SparseCounts(L)  # row: 0

    def fit(self, train: SplitTensors) -> None:
        user, current, target = training_transitions(train)
        if self.scope == "user":
            self.user_transitions.fit(user * self.num_locations + current, target)
        if "user" in self.fallback:
            self.user_targets.fit(user, target)
        if "global_transitions" in self.fallback:
            self.global_transitions.fit(current, target)
        if "global" in self.fallback:
            self.global_targets.fit(torch.zeros_like(target), target)

    def forward(self, batch: Batch) -> Tensor:
        current = last_location(batch)
        if self.scope == "user":
            scores = self.user_transitions.rows(batch.user * self.num_locations + current)
        else:
            scores = history_transitions(batch, self.num_locations)
        for source in self.fallback:
            empty = scores.sum(dim=1) == 0
            if not empty.any():
                break
            scores[empty] = self._source(source, batch, current)[empty]
        return scores

    def _source(self, name: str, batch: Batch, current: Tensor) -> Tensor:
        if name == "history":
            return history_counts(batch, self.num_locations)
        if name == "user":
            return self.user_targets.rows(batch.user)
        if name == "global_transitions":
            return self.global_transitions.rows(current)
        return self.global_targets.rows(torch.zeros_like(current))
