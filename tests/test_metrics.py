import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from nextloc.metrics import MetricAccumulator, ranking_metrics, target_ranks

RANK_KEYS = (
    "correct@1", "correct@3", "correct@5", "correct@10", "rr", "ndcg", "f1", "total",
    "acc@1", "acc@5", "acc@10", "mrr", "unseen_share", "total_known", "acc@1_known", "acc@5_known", "mrr_known",
)


def slow_rank(logits, target):
    """SPEC §6 literally: 1 + number of classes whose logit is strictly greater than the target's."""
    return np.array(
        [1 + sum(1 for z in row if z > row[y]) for row, y in zip(logits.tolist(), target.tolist())], dtype=np.int64
    )


def slow_metrics(logits, target):
    """Every SPEC §6 metric from its definition, one sample at a time, in percent."""
    rank = slow_rank(logits, target)
    target = target.numpy()
    prediction = np.array([row.index(max(row)) for row in logits.tolist()])  # first of the tied maxima
    n = len(rank)
    known = [i for i in range(n) if target[i] != 1]
    return {
        "correct@1": sum(r <= 1 for r in rank),
        "correct@3": sum(r <= 3 for r in rank),
        "correct@5": sum(r <= 5 for r in rank),
        "correct@10": sum(r <= 10 for r in rank),
        "rr": sum(1 / r for r in rank),
        "ndcg": 100 * sum(1 / math.log2(r + 1) if r <= 10 else 0.0 for r in rank) / n,
        "f1": 100 * f1_score(target, prediction, average="weighted"),
        "total": n,
        "acc@1": 100 * sum(r <= 1 for r in rank) / n,
        "acc@5": 100 * sum(r <= 5 for r in rank) / n,
        "acc@10": 100 * sum(r <= 10 for r in rank) / n,
        "mrr": 100 * sum(1 / r for r in rank) / n,
        "unseen_share": 100 * (n - len(known)) / n,
        "total_known": len(known),
        "acc@1_known": 100 * sum(rank[i] <= 1 for i in known) / len(known),
        "acc@5_known": 100 * sum(rank[i] <= 5 for i in known) / len(known),
        "mrr_known": 100 * sum(1 / rank[i] for i in known) / len(known),
    }


def tied_batch(seed, n=96, classes=30):
    """Integer-valued logits in 0..5 over 30 classes: many exact ties and ranks beyond 10.

    Targets are drawn so that about a quarter are class 1 (not seen in training).
    Users are 1..4.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 6, (n, classes), generator=g).float()
    target = torch.randint(2, classes, (n,), generator=g)
    target[torch.rand(n, generator=g) < 0.25] = 1
    user = torch.randint(1, 5, (n,), generator=g)
    return logits, target, user


def accumulate(logits, target, user, batch_size):
    acc = MetricAccumulator()
    for i in range(0, len(target), batch_size):
        part = slice(i, i + batch_size)
        acc.update(logits[part], target[part], user[part], F.cross_entropy(logits[part], target[part]))
    return acc


class TestTargetRanks:
    def test_target_ranked_second_has_rank_two(self):
        """Logits (0.1, 0.5, 0.2), target class 2: only class 1 is higher, so rank 2."""
        assert target_ranks(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([2])).tolist() == [2]

    def test_ties_resolve_in_the_models_favour(self):
        """All logits equal: no class is strictly greater, so every target has rank 1."""
        assert target_ranks(torch.zeros(3, 4), torch.tensor([0, 2, 3])).tolist() == [1, 1, 1]

    def test_only_strictly_greater_classes_push_the_target_down(self):
        """Logits (2, 1, 2, 3), target 0: class 3 is greater, class 2 only ties, so rank 2."""
        assert target_ranks(torch.tensor([[2.0, 1.0, 2.0, 3.0]]), torch.tensor([0])).tolist() == [2]

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_brute_force_on_tied_integer_logits(self, seed):
        logits, target, _ = tied_batch(seed)
        np.testing.assert_array_equal(target_ranks(logits, target).numpy(), slow_rank(logits, target))


class TestRankingMetrics:
    def test_target_ranked_second_gives_hand_worked_values(self):
        """Rank 2: mrr 50, acc@1 0, acc@5 100, ndcg 100 / log2(3)."""
        result = ranking_metrics(np.array([2]), np.array([1]), np.array([2]))
        assert result["mrr"] == pytest.approx(50.0)
        assert result["acc@1"] == 0.0
        assert result["correct@3"] == 1
        assert result["acc@5"] == 100.0
        assert result["ndcg"] == pytest.approx(100 / math.log2(3))

    def test_ndcg_counts_rank_ten_but_not_rank_eleven(self):
        """Ranks 10 and 11: ndcg = (1/log2(11) + 0) / 2 in percent; acc@10 = 50."""
        result = ranking_metrics(np.array([10, 11]), np.array([5, 5]), np.array([3, 4]))
        assert result["ndcg"] == pytest.approx(50 / math.log2(11))
        assert result["acc@10"] == 50.0
        assert result["rr"] == pytest.approx(1 / 10 + 1 / 11)

    def test_f1_is_sklearn_weighted_f1_in_percent(self):
        """Targets (2, 2, 3, 4), predictions (2, 3, 3, 4): weighted F1 = (2*2/3 + 2/3 + 1) / 4."""
        prediction, target = np.array([2, 3, 3, 4]), np.array([2, 2, 3, 4])
        result = ranking_metrics(np.array([1, 2, 1, 1]), prediction, target)
        assert result["f1"] == pytest.approx(100 * f1_score(target, prediction, average="weighted"))
        assert result["f1"] == pytest.approx(100 * (2 * 2 / 3 + 2 / 3 + 1) / 4)

    def test_known_keys_leave_out_unseen_targets(self):
        """Targets (1, 1, 5, 6) with ranks (1, 1, 2, 4): unseen share 50 %; over the known
        targets 5 and 6, acc@1 = 0, acc@5 = 100, mrr = (1/2 + 1/4) / 2 = 37.5 %."""
        result = ranking_metrics(np.array([1, 1, 2, 4]), np.array([1, 1, 4, 3]), np.array([1, 1, 5, 6]))
        assert result["unseen_share"] == 50.0
        assert result["total_known"] == 2
        assert result["acc@1_known"] == 0.0
        assert result["acc@5_known"] == 100.0
        assert result["mrr_known"] == pytest.approx(37.5)
        assert result["acc@1"] == 50.0  # class 1 predicted for class 1 counts as correct overall

    def test_no_known_targets_give_zero_not_an_error(self):
        """Every target is class 1: the _known shares are 0 over 0 samples."""
        result = ranking_metrics(np.array([1, 3]), np.array([1, 2]), np.array([1, 1]))
        assert (result["total_known"], result["acc@1_known"], result["mrr_known"]) == (0, 0.0, 0.0)


class TestMetricAccumulator:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_matches_brute_force_on_tied_integer_logits(self, seed):
        logits, target, user = tied_batch(seed)
        result = accumulate(logits, target, user, batch_size=96).compute()
        expected = slow_metrics(logits, target)
        assert {k: pytest.approx(v) for k, v in expected.items()} == {k: result[k] for k in expected}

    def test_several_batches_equal_one_big_batch(self):
        """Batches of 7 (the last one partial) pool to the metrics of the whole set."""
        logits, target, user = tied_batch(3)
        pooled = accumulate(logits, target, user, batch_size=7).compute()
        whole = accumulate(logits, target, user, batch_size=len(target)).compute()
        assert {k: pytest.approx(whole[k]) for k in RANK_KEYS + ("loss",)} == {k: pooled[k] for k in RANK_KEYS + ("loss",)}

    def test_loss_is_per_sample_and_loss_batch_mean_weighs_batches_equally(self):
        """Batches of 4, 4, 2 samples with mean losses 1, 2, 4: per sample
        (4*1 + 4*2 + 2*4) / 10 = 2.0; mean of batch means (1 + 2 + 4) / 3."""
        acc = MetricAccumulator()
        for size, loss in ((4, 1.0), (4, 2.0), (2, 4.0)):
            acc.update(torch.zeros(size, 3), torch.full((size,), 2), torch.ones(size, dtype=torch.long), torch.tensor(loss))
        result = acc.compute()
        assert result["loss"] == pytest.approx(2.0)
        assert result["loss_batch_mean"] == pytest.approx(7 / 3)

    def test_top1_prediction_is_the_argmax(self):
        """Logits (0, 2, 1), target 2: prediction 1, so f1 is 0 although acc@5 is 100."""
        acc = MetricAccumulator()
        acc.update(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([2]), torch.tensor([1]), torch.tensor(0.5))
        result = acc.compute()
        assert (result["acc@1"], result["acc@5"], result["f1"]) == (0.0, 100.0, 0.0)

    def test_per_user_rows_add_up_to_the_totals(self):
        logits, target, user = tied_batch(4)
        acc = accumulate(logits, target, user, batch_size=10)
        per_user, total = acc.per_user(), acc.compute()
        assert per_user["user_id"].tolist() == sorted(set(user.tolist()))
        assert per_user["correct@1"].sum() == total["correct@1"]
        assert per_user["total"].sum() == total["total"]
        assert per_user["rr"].sum() == pytest.approx(total["rr"])

    def test_per_user_row_equals_the_metrics_of_that_users_samples(self):
        logits, target, user = tied_batch(5)
        row = accumulate(logits, target, user, batch_size=10).per_user().set_index("user_id").loc[2]
        mine = user == 2
        expected = slow_metrics(logits[mine], target[mine])
        assert {k: pytest.approx(v) for k, v in expected.items()} == {k: row[k] for k in expected}


class TestNonFiniteLogits:
    def test_a_nan_target_logit_ranks_last(self):
        """NaN compares false with everything; counted naively it would rank first."""
        assert target_ranks(torch.tensor([[float("nan"), 1.0, 2.0]]), torch.tensor([0])).tolist() == [3]
