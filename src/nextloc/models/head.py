"""The user-aware residual head that the ``lstm`` and ``mhsa`` share (docs/reference.md).

sequence state ``h`` (+ user vector) -> dropout -> ``h + residual(h)`` -> BatchNorm -> classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nextloc.data.info import DataInfo
from nextloc.models.dropout import Dropout


class UserAwareHead:
    """A mixin for :class:`~torch.nn.Module` models: the head's layers stay top-level attributes
    (``user``, ``head_dropout``, ``residual``, ``residual_norm``, ``classifier``), so checkpoints keep their keys.

    User 0 (one the model has not seen, at prediction time) gets the mean of the known users' vectors.
    """

    def build_head(self, data: DataInfo, size: int, head_dropout: float, fc_dropout: float, use_user: bool) -> None:
        self.user = nn.Embedding(data.num_users, size) if use_user else None
        self.head_dropout = Dropout(head_dropout)
        self.residual = nn.Sequential(
            nn.Linear(size, 2 * size),
            nn.ReLU(),
            Dropout(fc_dropout),
            nn.Linear(2 * size, size),
            Dropout(fc_dropout),
        )
        self.residual_norm = nn.BatchNorm1d(size)
        self.classifier = nn.Linear(size, data.num_locations)

    def head(self, h: Tensor, user: Tensor) -> Tensor:
        """Scores ``(B, L)`` from each sequence's state ``h`` ``(B, size)`` and its ``user`` ``(B,)``."""
        if self.user is not None:
            known_mean = self.user.weight[1:].mean(0)
            h = h + torch.where(user[:, None] == 0, known_mean, self.user(user))
        h = self.head_dropout(h)
        h = self.residual_norm(h + self.residual(h))
        return self.classifier(h)
