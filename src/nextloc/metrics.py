r"""Ranking metrics of next-location prediction (SPEC §6).

For a sample with target ``y`` and logits ``z``, its rank is
``1 + #{c : z_c > z_y}``: classes tied with the target do not push it down,
so ties resolve in the model's favour. From the ranks:

- ``acc@k`` = share of samples with rank <= k (k = 1, 5, 10; ``correct@3`` too)
- ``mrr``   = mean of 1 / rank
- ``ndcg``  = NDCG@10 = mean of 1 / log2(rank + 1) over ranks <= 10, else 0
- ``f1``    = support-weighted F1 of the top-1 predictions (sklearn "weighted")

All shares are in percent; counts (``correct@k``, ``rr``, ``total``) are
kept so that results of different runs can be pooled. Class 1 ("not seen in
training") counts as a correct prediction, as in the reference; the ``_known``
keys repeat acc@1, acc@5 and mrr over the targets that are known locations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import Tensor

from nextloc.data.samples import UNSEEN

TOP_K = (1, 3, 5, 10)


def target_ranks(logits: Tensor, target: Tensor) -> Tensor:
    """Rank of each target among the classes, without sorting: ``(B, C), (B,) -> (B,)``.

    Examples
    --------
    >>> target_ranks(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([2]))
    tensor([2])
    """
    target_logit = logits.gather(1, target[:, None])
    rank = (logits > target_logit).sum(dim=1) + 1
    # a NaN compares false with everything: such a target must rank last, not first
    return torch.where(torch.isfinite(target_logit.squeeze(1)), rank, logits.shape[1])


def ranking_metrics(rank: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> dict:
    """Every metric of the module docstring from per-sample ranks and top-1 predictions."""
    total = len(rank)
    known = target != UNSEEN
    rr = 1.0 / rank
    gain = np.where(rank <= 10, 1.0 / np.log2(rank + 1.0), 0.0)
    result = {f"correct@{k}": int((rank <= k).sum()) for k in TOP_K}
    result |= {
        "rr": float(rr.sum()),
        "ndcg": _percent(gain.sum(), total),
        "f1": 100.0 * f1_score(target, prediction, average="weighted") if total else 0.0,
        "total": total,
        "acc@1": _percent(result["correct@1"], total),
        "acc@5": _percent(result["correct@5"], total),
        "acc@10": _percent(result["correct@10"], total),
        "mrr": _percent(rr.sum(), total),
        "unseen_share": _percent((~known).sum(), total),
        "total_known": int(known.sum()),
        "acc@1_known": _percent((rank[known] <= 1).sum(), known.sum()),
        "acc@5_known": _percent((rank[known] <= 5).sum(), known.sum()),
        "mrr_known": _percent(rr[known].sum(), known.sum()),
    }
    return result


def _percent(count, total) -> float:
    return 100.0 * float(count) / float(total) if total else 0.0


class MetricAccumulator:
    """Collects per-sample ranks over an epoch; keeps no logits.

    Examples
    --------
    >>> acc = MetricAccumulator()
    >>> acc.update(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([1]), torch.tensor([3]), torch.tensor(0.4))
    >>> acc.compute()["acc@1"]
    100.0
    """

    def __init__(self) -> None:
        self._ranks, self._predictions, self._targets, self._users = [], [], [], []
        self._loss_sum = 0.0
        self._batch_losses = []

    def update(self, logits: Tensor, target: Tensor, user: Tensor, loss: Tensor) -> None:
        """Add one batch; ``loss`` is the batch's mean cross-entropy."""
        logits = logits.detach()
        self._ranks.append(target_ranks(logits, target).cpu())
        self._predictions.append(logits.argmax(dim=1).cpu())
        self._targets.append(target.cpu())
        self._users.append(user.cpu())
        loss = float(loss)
        self._batch_losses.append(loss)
        self._loss_sum += loss * len(target)

    def compute(self) -> dict:
        """Metrics of all batches, plus ``loss`` (per sample) and ``loss_batch_mean``.

        ``loss_batch_mean`` is the mean of the batches' mean losses (the last,
        partial batch weighs as a full one): the reference's early-stopping
        criterion.
        """
        rank, prediction, target, _ = self._arrays()
        result = ranking_metrics(rank, prediction, target)
        result["loss"] = self._loss_sum / max(len(rank), 1)
        result["loss_batch_mean"] = float(np.mean(self._batch_losses)) if self._batch_losses else 0.0
        return result

    def per_user(self) -> pd.DataFrame:
        """One row of metrics per user, ordered by user id."""
        rank, prediction, target, user = self._arrays()
        rows = []
        for u in np.unique(user):
            mask = user == u
            rows.append({"user_id": int(u), **ranking_metrics(rank[mask], prediction[mask], target[mask])})
        return pd.DataFrame(rows)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        parts = (self._ranks, self._predictions, self._targets, self._users)
        return tuple(torch.cat(p).numpy() if p else np.zeros(0, np.int64) for p in parts)
