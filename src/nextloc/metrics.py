r"""Ranking metrics of next-location prediction, exact in the presence of tied scores.

Ties. For a sample with target ``y`` and scores ``z`` over ``C`` classes let

- ``g = #{c : z_c > z_y}``        (classes strictly above the target) and
- ``e = #{c != y : z_c == z_y}``  (other classes tied with the target).

The target's rank is taken to be uniform on ``g+1 .. g+e+1``, i.e. the ties
are broken uniformly at random, and every metric is the *expectation* over
that tie-break (McSherry & Najork, "Computing information retrieval
performance measures efficiently in the presence of tied scores", ECIR 2008).
Ties therefore never resolve in the model's favour: a model whose scores are
all equal over ``L`` classes gets acc@1 = 100 / L percent, not 100. For a
model without ties (``e = 0``, the usual case of floating-point scores) the
formulas reduce to the plain ones of rank ``r = g + 1``. Per sample:

- ``acc@k``  = P(rank <= k) = ``clip((k - g) / (e + 1), 0, 1)`` (k = 1, 3, 5, 10)
- ``rr``     = E[1 / rank] = ``(H(g+e+1) - H(g)) / (e + 1)`` with the harmonic
  numbers ``H(n) = 1 + 1/2 + ... + 1/n`` (a float64 cumulative-sum table:
  relative error below 1e-10 up to C = 100,000; exactly ``1 / (g + 1)`` if e = 0)
- ``ndcg``   = NDCG@10 = E[1 / log2(rank + 1) if rank <= 10 else 0]
  = ``(D(min(g+e+1, 10)) - D(min(g, 10))) / (e + 1)`` with the prefix sums
  ``D(n) = sum_{r=1..n} 1 / log2(r + 1)``

``correct@k`` and ``rr`` are the sums over the samples (expected counts, so
floats); ``acc@k``, ``mrr`` and ``ndcg`` the means, in percent.

NaN. A NaN target score ranks last (``g = C - 1``, ``e = 0``); a NaN score of
another class is neither greater than nor equal to the target's, so it never
pushes the target down.

F1. The top-1 prediction of a sample is uniform over its ``m`` tied maxima
(the classes whose score equals the largest non-NaN score; a row of NaN only
predicts every class with probability 1 / C, though its target ranks last).
``f1`` is the support-weighted F1 (sklearn's ``average="weighted"``) of the
*expected* confusion counts:

- predicted mass of class c: ``P_c = sum over samples of [c among its maxima] / m``
- true positives of c:       ``TP_c = sum over samples with target c of [c among its maxima] / m``
  (computed as the sample's expected acc@1, ``[g = 0] / (e + 1)``, which is the
  same number, except in a row of NaN only: there the target ranks last and adds 0)
- support of c:              ``S_c = #samples with target c``
- ``F1_c = 2 TP_c / (P_c + S_c)`` (= 2PR / (P + R), 0 where TP_c = 0)
- ``f1 = sum_c S_c F1_c / sum_c S_c``

Without ties this equals ``sklearn.metrics.f1_score(target, argmax, average="weighted")``.
(It is the F1 of the expected confusion, not the expected F1 over tie-breaks;
F1 is not linear in the counts.)

Nothing sorts over the classes: per batch there are comparisons with the
target's and with the maximum score, row sums, and one thin matrix product
that reads off the argmax of the rows without a tie (see :func:`top_ties`).

All shares are in percent; the counts (``correct@k``, ``rr``, ``total``)
are kept so that results of different runs can be pooled.
Class 1 ("not seen in training") counts as a correct prediction, as in the
reference; the ``_known`` keys repeat acc@1, acc@5 and mrr over the targets
that are known locations.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from nextloc.data.samples import UNSEEN

TOP_K = (1, 3, 5, 10)
NDCG_CUT = 10

# D[n] = sum_{r=1..n} 1 / log2(r + 1), n = 0..10
_NDCG_PREFIX = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, NDCG_CUT + 2, dtype=np.float64)))])


def rank_counts(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(g, e)`` of each target, without sorting: ``(B, C), (B,) -> (B,), (B,)``.

    ``g`` counts the classes scored strictly above the target, ``e`` the other
    classes scored equal to it; the target's rank is uniform on ``g+1 .. g+e+1``.
    A NaN target score gives ``(C - 1, 0)``: last.

    Examples
    --------
    >>> rank_counts(torch.tensor([[0.1, 0.5, 0.2, 0.5]]), torch.tensor([1]))
    (tensor([0]), tensor([1]))
    >>> rank_counts(torch.tensor([[float("nan"), 0.5, 0.2]]), torch.tensor([0]))
    (tensor([2]), tensor([0]))
    """
    target_score = scores.gather(1, target[:, None])
    # both comparisons written straight into float32 and summed (see _flags): exact below 2**24 classes
    flags = torch.empty((2, *scores.shape), dtype=torch.float32, device=scores.device)
    torch.gt(scores, target_score, out=flags[0])
    torch.eq(scores, target_score, out=flags[1])
    greater, equal = flags.sum(dim=2).long()
    equal = equal - 1
    nan = target_score.squeeze(1).isnan()
    if nan.any():
        greater = torch.where(nan, scores.shape[1] - 1, greater)
        equal = torch.where(nan, 0, equal)
    return greater, equal


def top_ties(scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The tied maxima of each row: ``prediction (B,)``, their count ``m (B,)`` and their mask ``(B, C)``.

    ``prediction`` is the argmax where ``m == 1`` and -1 where the top is tied;
    the mask is float32, 1 at the maxima and 0 elsewhere. NaN scores are never
    among the maxima, except in a row of NaN only, where every class is.

    Examples
    --------
    >>> prediction, m, is_max = top_ties(torch.tensor([[0.1, 0.5, 0.5], [float("nan"), 1.0, 0.0]]))
    >>> prediction.tolist(), m.tolist(), is_max.tolist()
    ([-1, 1], [2, 1], [[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    """
    best = scores.amax(dim=1, keepdim=True)  # without indices: several times faster than max() on CPU
    if best.isnan().any():  # amax propagates NaN: only batches with a NaN pay for the copies
        best = torch.where(scores.isnan(), float("-inf"), scores).amax(dim=1, keepdim=True)
        is_max = scores == best
        is_max[~is_max.any(dim=1)] = True  # rows of NaN only
        is_max = is_max.float()
    else:
        is_max = _flags(torch.eq, scores, best)
    count = is_max.sum(dim=1).long()
    # a row with one maximum: its mask times (digits of 0..C-1) is that class's digits, exactly
    digits, place = _class_digits(scores.shape[1], scores.device)
    prediction = (is_max @ digits.T).long()
    prediction = prediction[:, 0] if len(place) == 1 else (prediction * place).sum(dim=1)
    return torch.where(count == 1, prediction, -1), count, is_max


def _flags(compare, scores: Tensor, threshold: Tensor) -> Tensor:
    """``compare(scores, threshold)`` written straight into float32 0/1.

    On CPU, comparing into float32 and summing is several times faster than
    summing a bool tensor (which converts it to int64 first); the row sums are
    exact counts below 2**24 classes.
    """
    return compare(scores, threshold, out=torch.empty(scores.shape, dtype=torch.float32, device=scores.device))


@functools.lru_cache(maxsize=8)
def _class_digits(num_classes: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Class ids 0..C-1 as base-256 digits ``(n, C)`` (float32) and the place values ``(n,)``.

    Digits below 256 and 0/1 masks are exact in bfloat16 and TF32 too, so a
    mask with a single 1 times the digits gives the class exactly whatever
    precision float32 matrix products are allowed to use. ``(n, C)`` and not
    ``(C, n)``: the product with its transpose is several times faster.
    """
    n = max(1, math.ceil(math.log(max(num_classes, 2), 256)))
    place = 256 ** torch.arange(n, device=device)
    classes = torch.arange(num_classes, device=device)
    return (classes // place[:, None] % 256).float(), place


def ranking_metrics(g: np.ndarray, e: np.ndarray, target: np.ndarray, predicted: np.ndarray) -> dict:
    """Every metric of the module docstring from per-sample rank counts.

    ``g``, ``e`` and ``target`` have one entry per sample; ``predicted[c]`` is the
    expected number of these samples whose top-1 prediction is class ``c``
    (``np.bincount(argmax)`` without ties; any length, missing classes count 0).

    Examples
    --------
    Target 2 tied with class 3 at the top: acc@1 = 1/2, rr = (1 + 1/2) / 2;
    expected TP = 1/2 out of a predicted mass of 1/2 and a support of 1, so
    precision 1, recall 1/2 and F1 = 2/3.

    >>> r = ranking_metrics(np.array([0]), np.array([1]), np.array([2]), np.array([0, 0, 0.5, 0.5]))
    >>> r["acc@1"], r["rr"], round(r["f1"], 6)
    (50.0, 0.75, 66.666667)
    """
    g = np.asarray(g, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    target = np.asarray(target)
    total = len(g)
    known = target != UNSEEN
    ties = e + 1.0
    hits = {k: expected_hits(g, e, k) for k in TOP_K}
    rr = _expected_reciprocal_rank(g, e)
    cut = _NDCG_PREFIX[np.minimum(g + e + 1, NDCG_CUT)] - _NDCG_PREFIX[np.minimum(g, NDCG_CUT)]
    gain = np.where(e == 0, np.where(g < NDCG_CUT, 1.0 / np.log2(g + 2.0), 0.0), cut / ties)
    result = {f"correct@{k}": float(hits[k].sum()) for k in TOP_K}
    result |= {
        "rr": float(rr.sum()),
        "ndcg": _percent(gain.sum(), total),
        "f1": expected_f1(target, hits[1], predicted),
        "total": total,
        "acc@1": _percent(result["correct@1"], total),
        "acc@5": _percent(result["correct@5"], total),
        "acc@10": _percent(result["correct@10"], total),
        "mrr": _percent(rr.sum(), total),
        "unseen_share": _percent((~known).sum(), total),
        "total_known": int(known.sum()),
        "acc@1_known": _percent(hits[1][known].sum(), known.sum()),
        "acc@5_known": _percent(hits[5][known].sum(), known.sum()),
        "mrr_known": _percent(rr[known].sum(), known.sum()),
    }
    return result


def expected_hits(g: np.ndarray, e: np.ndarray, k: int) -> np.ndarray:
    """P(rank <= k) per sample for rank uniform on g+1 .. g+e+1: ``clip((k - g) / (e + 1), 0, 1)``."""
    return np.clip((k - g) / (e + 1.0), 0.0, 1.0)


def _expected_reciprocal_rank(g: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Mean of 1/r over r = g+1 .. g+e+1: ``(H(g+e+1) - H(g)) / (e+1)``, exactly 1/(g+1) without ties."""
    rr = 1.0 / (g + 1.0)
    tied = e > 0
    if tied.any():
        n = int((g[tied] + e[tied] + 1).max())
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])
        gt, et = g[tied], e[tied]
        rr[tied] = (harmonic[gt + et + 1] - harmonic[gt]) / (et + 1.0)
    return rr


def expected_confusion(target: np.ndarray, hit: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``support``, expected ``true_positive`` and ``predicted`` counts (float64, equal lengths).

    ``hit[i]`` is the probability that sample ``i`` is predicted as its target
    (its expected acc@1); ``predicted[c]`` the expected number of samples
    predicted as ``c``.
    """
    target = np.asarray(target, dtype=np.int64)
    n = max(int(target.max()) + 1 if len(target) else 0, len(predicted))
    return {
        "support": np.bincount(target, minlength=n).astype(np.float64),
        "true_positive": np.bincount(target, weights=np.asarray(hit, dtype=np.float64), minlength=n),
        "predicted": np.pad(np.asarray(predicted, dtype=np.float64), (0, n - len(predicted))),
    }


def expected_f1(target: np.ndarray, hit: np.ndarray, predicted: np.ndarray) -> float:
    """Support-weighted F1 (percent) of the expected confusion counts (module docstring)."""
    confusion = expected_confusion(target, hit, predicted)
    support = confusion["support"]
    some = support > 0
    if not some.any():
        return 0.0
    f1 = 2.0 * confusion["true_positive"][some] / (confusion["predicted"][some] + support[some])
    return 100.0 * float((support[some] * f1).sum()) / float(support.sum())


def _percent(count, total) -> float:
    return 100.0 * float(count) / float(total) if total else 0.0


class MetricAccumulator:
    """Collects per-sample rank counts over an epoch; keeps no scores.

    Per sample it keeps ``g``, ``e``, target, user and the argmax (-1 where the
    top score is tied); the predicted mass of tied rows is summed per user as
    it comes (a ``(C,)`` float64 vector per user that has tied rows, nothing
    otherwise).

    Examples
    --------
    >>> acc = MetricAccumulator()
    >>> acc.update(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([1]), torch.tensor([3]), torch.tensor(0.4))
    >>> acc.compute()["acc@1"]
    100.0
    >>> acc.update(torch.zeros(1, 3), torch.tensor([1]), torch.tensor([3]))  # all tied; no loss given
    >>> result = acc.compute()
    >>> result["correct@1"], round(result["acc@1"], 4), result["loss"]  # 1 + 1/3 expected hits
    (1.3333333333333333, 66.6667, None)
    """

    def __init__(self) -> None:
        self._greater, self._equal, self._targets, self._users = [], [], [], []
        self._predictions = []  # the argmax, -1 where the top is tied
        self._num_classes = 0
        self._tied_mass = torch.zeros(0, 0, dtype=torch.float64)  # (users, C): predicted mass of tied rows per user id
        self._loss_sum = 0.0
        self._batch_losses: list[float] = []
        self._loss_missing = False

    def update(self, scores: Tensor, target: Tensor, user: Tensor, loss: Tensor | float | None = None) -> None:
        """Add one batch of scores ``(B, C)``; ``loss`` is the batch's mean cross-entropy, or None."""
        scores = scores.detach()
        self._num_classes = max(self._num_classes, scores.shape[1])
        greater, equal = rank_counts(scores, target)
        prediction, count, is_max = top_ties(scores)
        tied = count > 1
        self._greater.append(greater.cpu())
        self._equal.append(equal.cpu())
        self._targets.append(target.cpu())
        self._users.append(user.cpu())
        self._predictions.append(prediction.cpu())
        if tied.any():  # each maximum of a tied row gets 1/m of it, summed per user
            rows = tied.nonzero().squeeze(1)
            weight = is_max[rows].to(torch.float64) / count[rows, None]
            users, inverse = torch.unique(user[rows], return_inverse=True)
            mass = torch.zeros(len(users), scores.shape[1], dtype=torch.float64, device=scores.device)
            mass.index_add_(0, inverse, weight)
            self._add_tied_mass(users.cpu(), mass.cpu())
        if loss is None:
            self._loss_missing = True
        else:
            loss = float(loss)
            self._batch_losses.append(loss)
            self._loss_sum += loss * len(target)

    def compute(self) -> dict:
        """Metrics of all batches, plus ``loss`` (per sample) and ``loss_batch_mean``.

        ``loss_batch_mean`` is the mean of the batches' mean losses (the last,
        partial batch weighs as a full one): the reference's early-stopping
        criterion. Both are None if any batch came without a loss.
        """
        g, e, target, _, prediction = self._arrays()
        result = ranking_metrics(g, e, target, self._predicted_mass(prediction))
        if self._loss_missing:
            result["loss"] = result["loss_batch_mean"] = None
        else:
            result["loss"] = self._loss_sum / max(len(g), 1)
            result["loss_batch_mean"] = float(np.mean(self._batch_losses)) if self._batch_losses else 0.0
        return result

    def confusion(self) -> dict[str, np.ndarray]:
        """Expected confusion counts of all batches, per class (see :func:`expected_confusion`)."""
        g, e, target, _, prediction = self._arrays()
        return expected_confusion(target, expected_hits(g, e, 1), self._predicted_mass(prediction))

    def per_user(self) -> pd.DataFrame:
        """One row of metrics per user, ordered by user id (F1 over that user's samples)."""
        g, e, target, user, prediction = self._arrays()
        order = np.argsort(user, kind="stable")
        users, starts = np.unique(user[order], return_index=True)
        rows = []
        for u, part in zip(users.tolist(), np.split(order, starts[1:])):
            predicted = self._untied_mass(prediction[part])
            if u < len(self._tied_mass):
                mass = self._tied_mass[u].numpy()
                predicted[: len(mass)] += mass
            rows.append({"user_id": int(u), **ranking_metrics(g[part], e[part], target[part], predicted)})
        return pd.DataFrame(rows)

    def _add_tied_mass(self, users: Tensor, mass: Tensor) -> None:
        """Add the rows of ``mass`` to the rows of their user ids, growing the table as needed."""
        rows, cols = int(users.max()) + 1, mass.shape[1]
        if rows > self._tied_mass.shape[0] or cols > self._tied_mass.shape[1]:
            grown = torch.zeros(max(rows, self._tied_mass.shape[0]), max(cols, self._tied_mass.shape[1]),
                                dtype=torch.float64)
            grown[: self._tied_mass.shape[0], : self._tied_mass.shape[1]] = self._tied_mass
            self._tied_mass = grown
        self._tied_mass[:, :cols].index_add_(0, users, mass)

    def _predicted_mass(self, prediction: np.ndarray) -> np.ndarray:
        predicted = self._untied_mass(prediction)
        mass = self._tied_mass.sum(dim=0).numpy()
        predicted[: len(mass)] += mass
        return predicted

    def _untied_mass(self, prediction: np.ndarray) -> np.ndarray:
        return np.bincount(prediction[prediction >= 0], minlength=self._num_classes).astype(np.float64)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        parts = (self._greater, self._equal, self._targets, self._users, self._predictions)
        return tuple(torch.cat(p).numpy() if p else np.zeros(0, np.int64) for p in parts)
