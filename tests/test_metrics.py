import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from nextloc.metrics import MetricAccumulator, rank_counts, ranking_metrics, top_ties

RANK_KEYS = (
    "correct@1", "correct@3", "correct@5", "correct@10", "rr", "ndcg", "f1", "total",
    "acc@1", "acc@5", "acc@10", "mrr", "unseen_share", "total_known", "acc@1_known", "acc@5_known", "mrr_known",
)
COUNT_KEYS = ("correct@1", "correct@3", "correct@5", "correct@10", "rr", "total", "total_known")


def harmonic(n):
    return sum(1 / r for r in range(1, n + 1))


def discount(r):
    """NDCG@10 gain of rank r."""
    return 1 / math.log2(r + 1) if r <= 10 else 0.0


def slow_rank(logits, target):
    """Without ties the rank is 1 + the number of classes whose logit is strictly greater than the target's."""
    return np.array(
        [1 + sum(1 for z in row if z > row[y]) for row, y in zip(logits.tolist(), target.tolist())], dtype=np.int64
    )


def slow_counts(logits, target):
    """(g, e) one sample at a time: classes strictly above the target, other classes equal to it."""
    g, e = [], []
    for row, y in zip(logits.tolist(), target.tolist()):
        g.append(sum(1 for z in row if z > row[y]))
        e.append(sum(1 for c, z in enumerate(row) if c != y and z == row[y]))
    return np.array(g), np.array(e)


def slow_metrics(logits, target):
    """Every metric from its plain definition, one sample at a time, in percent: right for untied logits."""
    assert not has_ties(logits)
    rank = slow_rank(logits, target)
    target = target.numpy()
    prediction = np.array([row.index(max(row)) for row in logits.tolist()])
    n = len(rank)
    known = [i for i in range(n) if target[i] != 1]
    return {
        "correct@1": sum(r <= 1 for r in rank),
        "correct@3": sum(r <= 3 for r in rank),
        "correct@5": sum(r <= 5 for r in rank),
        "correct@10": sum(r <= 10 for r in rank),
        "rr": sum(1 / r for r in rank),
        "ndcg": 100 * sum(discount(r) for r in rank) / n,
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


def has_ties(logits):
    return bool((logits.sort(dim=1).values.diff(dim=1) == 0).any())


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


def untied_batch(seed, n=96, classes=30):
    """As :func:`tied_batch` but with continuous logits (no ties); targets rank anywhere from 1 to 30."""
    logits, target, user = tied_batch(seed, n, classes)
    logits = logits + torch.rand(logits.shape, generator=torch.Generator().manual_seed(seed + 100))
    assert not has_ties(logits)
    return logits, target, user


def accumulate(logits, target, user, batch_size, loss=True):
    acc = MetricAccumulator()
    for i in range(0, len(target), batch_size):
        part = slice(i, i + batch_size)
        batch_loss = F.cross_entropy(logits[part], target[part]) if loss else None
        acc.update(logits[part], target[part], user[part], batch_loss)
    return acc


def untied_metrics(rank, prediction, target):
    """ranking_metrics of untied samples given their plain ranks and top-1 predictions."""
    rank, prediction, target = np.asarray(rank), np.asarray(prediction), np.asarray(target)
    return ranking_metrics(rank - 1, np.zeros_like(rank), target, np.bincount(prediction))


class TestRankCounts:
    def test_target_ranked_second_has_one_above_and_no_tie(self):
        """Logits (0.1, 0.5, 0.2), target class 2: only class 1 is higher."""
        g, e = rank_counts(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([2]))
        assert (g.tolist(), e.tolist()) == ([1], [0])

    def test_all_equal_logits_tie_the_target_with_every_other_class(self):
        g, e = rank_counts(torch.zeros(3, 4), torch.tensor([0, 2, 3]))
        assert (g.tolist(), e.tolist()) == ([0, 0, 0], [3, 3, 3])

    def test_greater_classes_push_the_target_down_and_equal_ones_tie(self):
        """Logits (2, 1, 2, 3), target 0: class 3 is greater, class 2 ties, class 1 is below."""
        g, e = rank_counts(torch.tensor([[2.0, 1.0, 2.0, 3.0]]), torch.tensor([0]))
        assert (g.tolist(), e.tolist()) == ([1], [1])

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_brute_force_on_tied_integer_logits(self, seed):
        logits, target, _ = tied_batch(seed)
        g, e = rank_counts(logits, target)
        expected_g, expected_e = slow_counts(logits, target)
        np.testing.assert_array_equal(g.numpy(), expected_g)
        np.testing.assert_array_equal(e.numpy(), expected_e)
        assert (e > 0).float().mean() > 0.9  # the data really is tied


    def test_counts_are_exact_in_the_thousands(self):
        """DIY-sized rows of integer scores 0..9: g and e run into the thousands and must be exact."""
        g_ = torch.Generator().manual_seed(3)
        scores = torch.randint(0, 10, (16, 7038), generator=g_).float()
        target = torch.randint(0, 7038, (16,), generator=g_)
        g, e = rank_counts(scores, target)
        target_score = scores.gather(1, target[:, None])
        assert torch.equal(g, (scores > target_score).long().sum(1))
        assert torch.equal(e, (scores == target_score).long().sum(1) - 1)
        assert e.min() > 500 and g.max() > 5000
        _, m, _ = top_ties(scores)
        assert torch.equal(m, (scores == 9).long().sum(1))


class TestTopTies:
    def test_counts_the_tied_maxima(self):
        scores = torch.tensor([[0.1, 0.5, 0.5], [3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        prediction, m, is_max = top_ties(scores)
        assert m.tolist() == [2, 1, 3]
        assert prediction.tolist() == [-1, 0, -1]
        assert is_max.tolist() == [[0, 1, 1], [1, 0, 0], [1, 1, 1]]

    def test_nan_scores_are_never_among_the_maxima(self):
        """A NaN does not win the argmax (torch's max would pick it) and does not tie with -inf."""
        nan, inf = float("nan"), float("inf")
        prediction, m, is_max = top_ties(torch.tensor([[nan, 1.0, 0.0], [nan, -inf, nan], [nan, nan, nan]]))
        assert prediction.tolist() == [1, 1, -1]
        assert m.tolist() == [1, 1, 3]  # a row of NaN only: every class is a maximum
        assert is_max.tolist() == [[0, 1, 0], [0, 1, 0], [1, 1, 1]]

    @pytest.mark.parametrize("seed", [0, 1])
    def test_matches_brute_force_on_tied_integer_logits(self, seed):
        logits, _, _ = tied_batch(seed)
        prediction, m, is_max = top_ties(logits)
        expected = [[float(z == max(row)) for z in row] for row in logits.tolist()]
        assert is_max.tolist() == expected
        assert m.tolist() == [sum(row) for row in expected]
        assert prediction.tolist() == [row.index(1.0) if sum(row) == 1 else -1 for row in expected]
        assert (m == 1).any() and (m > 1).any()

    @pytest.mark.parametrize("classes", [1, 255, 256, 257, 7038, 70_000])
    def test_the_argmax_is_exact_for_any_number_of_classes(self, classes):
        """The argmax comes from a matrix product with the class ids' digits: exact at every size."""
        g = torch.Generator().manual_seed(classes)
        scores = torch.randn(64, classes, generator=g)
        scores[:4, -1] = 10.0  # the last class, where an inexact product would be off first
        scores[4, 0] = 10.0
        prediction, m, _ = top_ties(scores)
        assert (m == 1).all()
        assert torch.equal(prediction, scores.argmax(dim=1))

    def test_the_argmax_stays_exact_when_matrix_products_may_use_bfloat16(self):
        before = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("medium")
            scores = torch.randn(32, 7038, generator=torch.Generator().manual_seed(0))
            scores[:8, 7037] = 10.0
            assert torch.equal(top_ties(scores)[0], scores.argmax(dim=1))
        finally:
            torch.set_float32_matmul_precision(before)


class TestRankingMetrics:
    def test_target_ranked_second_gives_hand_worked_values(self):
        """Rank 2: mrr 50, acc@1 0, acc@5 100, ndcg 100 / log2(3)."""
        result = untied_metrics([2], [1], [2])
        assert result["mrr"] == pytest.approx(50.0)
        assert result["acc@1"] == 0.0
        assert result["correct@3"] == 1
        assert result["acc@5"] == 100.0
        assert result["ndcg"] == pytest.approx(100 / math.log2(3))

    def test_ndcg_counts_rank_ten_but_not_rank_eleven(self):
        """Ranks 10 and 11: ndcg = (1/log2(11) + 0) / 2 in percent; acc@10 = 50."""
        result = untied_metrics([10, 11], [5, 5], [3, 4])
        assert result["ndcg"] == pytest.approx(50 / math.log2(11))
        assert result["acc@10"] == 50.0
        assert result["rr"] == pytest.approx(1 / 10 + 1 / 11)

    def test_target_tied_with_one_other_class_at_the_top(self):
        """g = 0, e = 1: rank 1 or 2 with probability 1/2 each."""
        result = ranking_metrics(np.array([0]), np.array([1]), np.array([2]), np.array([0, 0, 0.5, 0.5]))
        assert result["correct@1"] == 0.5 and result["acc@1"] == 50.0
        assert result["correct@3"] == 1.0
        assert result["rr"] == pytest.approx(0.75)
        assert result["ndcg"] == pytest.approx(100 * (1 + 1 / math.log2(3)) / 2)

    def test_ties_across_the_cut_at_ten(self):
        """g = 8, e = 3: rank uniform on 9..12, so acc@10 = 2/4, acc@5 = 0,
        ndcg = (1/log2(10) + 1/log2(11)) / 4 and rr = (1/9 + 1/10 + 1/11 + 1/12) / 4."""
        result = ranking_metrics(np.array([8]), np.array([3]), np.array([2]), np.array([0, 0, 0, 1.0]))
        assert (result["acc@10"], result["acc@5"], result["correct@10"]) == (50.0, 0.0, 0.5)
        assert result["ndcg"] == pytest.approx(100 * (1 / math.log2(10) + 1 / math.log2(11)) / 4, rel=1e-12)
        assert result["rr"] == pytest.approx((1 / 9 + 1 / 10 + 1 / 11 + 1 / 12) / 4, rel=1e-12)
        assert result["f1"] == 0.0

    def test_partial_overlap_with_top_k(self):
        """g = 2, e = 4: rank uniform on 3..7, so acc@3 = 1/5, acc@5 = 3/5, acc@1 = 0."""
        result = ranking_metrics(np.array([2]), np.array([4]), np.array([2]), np.array([0, 0, 0, 1.0]))
        assert result["correct@1"] == 0.0
        assert result["correct@3"] == pytest.approx(1 / 5)
        assert result["correct@5"] == pytest.approx(3 / 5)
        assert result["correct@10"] == 1.0

    def test_reciprocal_rank_is_exact_for_long_ties(self):
        """Harmonic-number differences far out (g = 5000, e = 2000) are exact to 1e-9."""
        g, e = np.array([5000, 0]), np.array([2000, 6999])
        result = ranking_metrics(g, e, np.array([2, 3]), np.zeros(4))
        expected = sum(1 / r for r in range(5001, 7002)) / 2001 + harmonic(7000) / 7000
        assert result["rr"] == pytest.approx(expected, rel=1e-9)

    def test_f1_is_sklearn_weighted_f1_in_percent(self):
        """Targets (2, 2, 3, 4), predictions (2, 3, 3, 4): weighted F1 = (2*2/3 + 2/3 + 1) / 4."""
        prediction, target = np.array([2, 3, 3, 4]), np.array([2, 2, 3, 4])
        result = untied_metrics([1, 2, 1, 1], prediction, target)
        assert result["f1"] == pytest.approx(100 * f1_score(target, prediction, average="weighted"))
        assert result["f1"] == pytest.approx(100 * (2 * 2 / 3 + 2 / 3 + 1) / 4)

    def test_known_keys_leave_out_unseen_targets(self):
        """Targets (1, 1, 5, 6) with ranks (1, 1, 2, 4): unseen share 50 %; over the known
        targets 5 and 6, acc@1 = 0, acc@5 = 100, mrr = (1/2 + 1/4) / 2 = 37.5 %."""
        result = untied_metrics([1, 1, 2, 4], [1, 1, 4, 3], [1, 1, 5, 6])
        assert result["unseen_share"] == 50.0
        assert result["total_known"] == 2
        assert result["acc@1_known"] == 0.0
        assert result["acc@5_known"] == 100.0
        assert result["mrr_known"] == pytest.approx(37.5)
        assert result["acc@1"] == 50.0  # class 1 predicted for class 1 counts as correct overall

    def test_known_keys_are_expectations_too(self):
        """Known target 5 tied with 3 others at the top (acc@1 1/4), unseen target 1 at rank 1."""
        result = ranking_metrics(np.array([0, 0]), np.array([0, 3]), np.array([1, 5]), np.array([0, 1, 0, 0, 0, 1]))
        assert result["acc@1_known"] == 25.0
        assert result["acc@5_known"] == 100.0
        assert result["mrr_known"] == pytest.approx(100 * harmonic(4) / 4)
        assert result["acc@1"] == pytest.approx(100 * (1 + 1 / 4) / 2)

    def test_no_known_targets_give_zero_not_an_error(self):
        """Every target is class 1: the _known shares are 0 over 0 samples."""
        result = untied_metrics([1, 3], [1, 2], [1, 1])
        assert (result["total_known"], result["acc@1_known"], result["mrr_known"]) == (0, 0.0, 0.0)


class TestAllEqualScores:
    """A model that scores every class the same must not look perfect."""

    @pytest.mark.parametrize("classes", [10, 37])
    def test_every_metric_is_its_uniform_tie_break_value(self, classes):
        n = 3 * classes
        target = torch.arange(n) % (classes - 2) + 2  # known classes only
        acc = MetricAccumulator()
        acc.update(torch.full((n, classes), 0.25), target, torch.ones(n, dtype=torch.long), None)
        result = acc.compute()
        assert result["acc@1"] == pytest.approx(100 / classes, rel=1e-12)
        assert result["acc@5"] == pytest.approx(500 / classes, rel=1e-12)
        assert result["acc@10"] == pytest.approx(1000 / classes, rel=1e-12)
        assert result["correct@3"] == pytest.approx(3 * n / classes, rel=1e-12)
        assert result["mrr"] == pytest.approx(100 * harmonic(classes) / classes, rel=1e-12)
        assert result["ndcg"] == pytest.approx(100 * sum(discount(r) for r in range(1, 11)) / classes, rel=1e-12)
        # every class is predicted n / L times and hit S_c / L times: F1_c = 2 S_c / (n + L S_c)
        support = np.bincount(target.numpy(), minlength=classes)
        f1 = sum(s * 2 * s / (n + classes * s) for s in support if s) / n
        assert result["f1"] == pytest.approx(100 * f1, rel=1e-12)

    def test_f1_of_a_tiny_tied_case_by_hand(self):
        """Three classes all scored 0, targets (1, 2, 2). Each class is predicted 1/3 of each
        sample's time: predicted mass 1 per class. Class 1: TP 1/3, support 1, F1 = (2/3) / 2 = 1/3.
        Class 2: TP 2/3, support 2, F1 = (4/3) / 3 = 4/9. Weighted: (1 * 1/3 + 2 * 4/9) / 3 = 11/27."""
        acc = MetricAccumulator()
        acc.update(torch.zeros(3, 3), torch.tensor([1, 2, 2]), torch.tensor([7, 7, 8]), None)
        assert acc.compute()["f1"] == pytest.approx(100 * 11 / 27, rel=1e-12)
        confusion = acc.confusion()
        np.testing.assert_allclose(confusion["predicted"], [1, 1, 1])
        np.testing.assert_allclose(confusion["true_positive"], [0, 1 / 3, 2 / 3])
        np.testing.assert_allclose(confusion["support"], [0, 1, 2])

    def test_no_loss_gives_none(self):
        acc = MetricAccumulator()
        acc.update(torch.zeros(2, 3), torch.tensor([1, 2]), torch.tensor([1, 1]), torch.tensor(0.3))
        acc.update(torch.zeros(2, 3), torch.tensor([1, 2]), torch.tensor([1, 1]))
        result = acc.compute()
        assert result["loss"] is None and result["loss_batch_mean"] is None
        assert result["total"] == 4


class TestUntiedScores:
    """Without ties (a trained floating-point model) nothing changes: the plain definitions hold."""

    @pytest.mark.parametrize("seed", [0, 1])
    @pytest.mark.parametrize("batch_size", [96, 13])
    def test_matches_the_plain_definitions(self, seed, batch_size):
        logits, target, user = untied_batch(seed)
        result = accumulate(logits, target, user, batch_size=batch_size).compute()
        expected = slow_metrics(logits, target)
        assert {k: pytest.approx(v, rel=1e-12) for k, v in expected.items()} == {k: result[k] for k in expected}

    def test_f1_equals_sklearn_on_the_argmax(self):
        logits, target, user = untied_batch(7, n=400, classes=12)
        result = accumulate(logits, target, user, batch_size=64).compute()
        sklearn = 100 * f1_score(target.numpy(), logits.argmax(1).numpy(), average="weighted")
        assert result["f1"] == pytest.approx(sklearn, rel=1e-12)

    def test_top1_prediction_is_the_argmax(self):
        """Logits (0, 2, 1), target 2: prediction 1, so f1 is 0 although acc@5 is 100."""
        acc = MetricAccumulator()
        acc.update(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([2]), torch.tensor([1]), torch.tensor(0.5))
        result = acc.compute()
        assert (result["acc@1"], result["acc@5"], result["f1"]) == (0.0, 100.0, 0.0)


@pytest.fixture(scope="module", params=[0, 1])
def draws(request):
    """Of tied data: plain metrics per draw and sample (D, B), confusion counts per draw and class
    (D, C), the accumulator (batches of 25) and the data."""
    seed, n_draws = request.param, 2000
    logits, target, user = tied_batch(seed)
    g = torch.Generator().manual_seed(1000 + seed)
    # noise in [0, 0.5) keeps the order of different integers and breaks every tie uniformly
    noisy = logits + 0.5 * torch.rand((n_draws, *logits.shape), generator=g, dtype=torch.float64)
    rank = 1 + (noisy > noisy.gather(2, target.expand(n_draws, -1)[..., None])).sum(2)  # (D, B)
    rank = rank.double()
    plain = {f"correct@{k}": (rank <= k).double() for k in (1, 3, 5, 10)}
    plain["rr"] = 1 / rank
    plain["ndcg"] = torch.where(rank <= 10, 1 / torch.log2(rank + 1), 0.0)
    prediction = noisy.argmax(2)  # (D, B)
    classes = logits.shape[1]
    one_hot = F.one_hot(prediction, classes).double()  # (D, B, C)
    counts = {
        "predicted": one_hot.sum(1),
        "true_positive": (one_hot * F.one_hot(target, classes).double()).sum(1),
    }
    acc = accumulate(logits, target, user, batch_size=25)
    return plain, counts, acc, (logits, target)


class TestRandomTieBreak:
    """Brute force: break the ties of integer logits at random many times and average the plain metrics."""

    @staticmethod
    def assert_mean_close(per_draw, expected):
        """``per_draw`` (D, ...) averaged over draws equals ``expected`` within 5 Monte-Carlo errors."""
        mean = per_draw.mean(0).numpy()
        error = per_draw.std(0).numpy() / math.sqrt(per_draw.shape[0])
        np.testing.assert_array_less(np.abs(mean - expected), 5 * error + 1e-12)

    @pytest.mark.parametrize("key", ["correct@1", "correct@3", "correct@5", "correct@10", "rr", "ndcg"])
    def test_expected_metric_is_the_average_over_tie_breaks(self, draws, key):
        plain, _, acc, _ = draws
        result = acc.compute()
        per_draw = plain[key].sum(1)  # (D,): the metric's sum over the samples in each draw
        expected = result[key] if key != "ndcg" else result["ndcg"] * result["total"] / 100
        self.assert_mean_close(per_draw, np.array(expected))
        assert plain[key].std(0).max() > 0  # the tie-break matters for this key

    def test_every_sample_expectation_is_its_average_over_tie_breaks(self, draws):
        """Sample by sample: ranking_metrics of one sample's (g, e) against its Monte-Carlo average."""
        plain, _, _, (logits, target) = draws
        g, e = (t.numpy() for t in rank_counts(logits, target))
        target = target.numpy()
        expected = {key: np.empty(len(g)) for key in plain}
        for i in range(len(g)):
            result = ranking_metrics(g[i : i + 1], e[i : i + 1], target[i : i + 1], np.zeros(target[i] + 1))
            for key in plain:
                expected[key][i] = result[key] if key != "ndcg" else result["ndcg"] / 100
        for key in plain:
            self.assert_mean_close(plain[key], expected[key])

    def test_expected_confusion_counts_are_the_average_over_tie_breaks(self, draws):
        """F1 is not linear, so its expectation is not checked; the expected counts it is built on are."""
        _, counts, acc, _ = draws
        confusion = acc.confusion()
        for key in ("predicted", "true_positive"):
            self.assert_mean_close(counts[key], confusion[key])
        assert counts["predicted"].std(0).max() > 0


class TestMetricAccumulator:
    def test_several_batches_equal_one_big_batch(self):
        """Batches of 7 (the last one partial) pool to the metrics of the whole set."""
        logits, target, user = tied_batch(3)
        pooled = accumulate(logits, target, user, batch_size=7).compute()
        whole = accumulate(logits, target, user, batch_size=len(target)).compute()
        assert {k: pytest.approx(whole[k], rel=1e-12) for k in RANK_KEYS} == {k: pooled[k] for k in RANK_KEYS}
        assert pooled["loss"] == pytest.approx(whole["loss"], rel=1e-6)  # float32 batch losses

    def test_loss_is_per_sample_and_loss_batch_mean_weighs_batches_equally(self):
        """Batches of 4, 4, 2 samples with mean losses 1, 2, 4: per sample
        (4*1 + 4*2 + 2*4) / 10 = 2.0; mean of batch means (1 + 2 + 4) / 3."""
        acc = MetricAccumulator()
        for size, loss in ((4, 1.0), (4, 2.0), (2, 4.0)):
            ones = torch.ones(size, dtype=torch.long)
            acc.update(torch.zeros(size, 3), torch.full((size,), 2), ones, torch.tensor(loss))
        result = acc.compute()
        assert result["loss"] == pytest.approx(2.0)
        assert result["loss_batch_mean"] == pytest.approx(7 / 3)

    def test_f1_is_the_weighted_f1_of_the_expected_confusion(self):
        """Tied data: f1 = sum_c S_c * 2 TP_c / (P_c + S_c) / N from the counts confusion() reports."""
        logits, target, user = tied_batch(8)
        acc = accumulate(logits, target, user, batch_size=10)
        c = acc.confusion()
        assert c["predicted"].sum() == pytest.approx(len(target))
        some = c["support"] > 0
        f1 = (c["support"][some] * 2 * c["true_positive"][some] / (c["predicted"][some] + c["support"][some])).sum()
        assert acc.compute()["f1"] == pytest.approx(100 * f1 / len(target), rel=1e-12)
        assert c["true_positive"].sum() == pytest.approx(acc.compute()["correct@1"], rel=1e-12)

    def test_per_user_rows_add_up_to_the_totals(self):
        logits, target, user = tied_batch(4)
        acc = accumulate(logits, target, user, batch_size=10)
        per_user, total = acc.per_user(), acc.compute()
        assert per_user["user_id"].tolist() == sorted(set(user.tolist()))
        for key in COUNT_KEYS:
            assert per_user[key].sum() == pytest.approx(total[key], rel=1e-12), key

    def test_per_user_row_equals_the_metrics_of_that_users_samples_alone(self):
        """Tied data: the per-user F1 uses that user's own predicted mass, not the global one."""
        logits, target, user = tied_batch(5)
        rows = accumulate(logits, target, user, batch_size=10).per_user().set_index("user_id")
        for u in (1, 2):
            mine = user == u
            alone = accumulate(logits[mine], target[mine], user[mine], batch_size=10).compute()
            assert {k: pytest.approx(alone[k], rel=1e-12) for k in RANK_KEYS} == {k: rows.loc[u, k] for k in RANK_KEYS}
        everyone = accumulate(logits, target, user, batch_size=10).compute()
        assert rows.loc[2, "f1"] != pytest.approx(everyone["f1"])

    def test_per_user_row_equals_the_plain_metrics_without_ties(self):
        logits, target, user = untied_batch(5)
        row = accumulate(logits, target, user, batch_size=10).per_user().set_index("user_id").loc[2]
        mine = user == 2
        expected = slow_metrics(logits[mine], target[mine])
        assert {k: pytest.approx(v) for k, v in expected.items()} == {k: row[k] for k in expected}

    def test_no_sort_over_the_classes(self, monkeypatch):
        """Only comparisons and sums: update and compute never sort, argsort or topk the scores."""

        def forbidden(*args, **kwargs):
            raise AssertionError("sorted the scores")

        for name in ("sort", "argsort", "topk", "kthvalue", "msort"):
            monkeypatch.setattr(torch, name, forbidden)
            monkeypatch.setattr(torch.Tensor, name, forbidden)
        logits, target, user = tied_batch(6)
        acc = accumulate(logits, target, user, batch_size=10)
        acc.compute()
        acc.per_user()

    def test_empty_accumulator_gives_zeros(self):
        result = MetricAccumulator().compute()
        assert (result["total"], result["acc@1"], result["f1"], result["mrr"]) == (0, 0.0, 0.0, 0.0)


class TestNonFiniteScores:
    def test_a_nan_target_score_ranks_last(self):
        """NaN compares false with everything; counted naively it would rank first."""
        g, e = rank_counts(torch.tensor([[float("nan"), 1.0, 2.0]]), torch.tensor([0]))
        assert (g.tolist(), e.tolist()) == ([2], [0])
        acc = MetricAccumulator()
        acc.update(torch.tensor([[float("nan"), 1.0, 2.0, 0.0]]), torch.tensor([0]), torch.tensor([1]), None)
        result = acc.compute()
        assert (result["acc@1"], result["acc@10"], result["rr"], result["f1"]) == (0.0, 100.0, 0.25, 0.0)

    def test_nan_scores_of_other_classes_neither_push_down_nor_tie(self):
        """Scores (1, NaN, 1, 2), target 0: class 3 above, class 2 tied, the NaN neither."""
        g, e = rank_counts(torch.tensor([[1.0, float("nan"), 1.0, 2.0]]), torch.tensor([0]))
        assert (g.tolist(), e.tolist()) == ([1], [1])

    def test_infinite_scores_compare_as_numbers(self):
        """+inf target: first (tied with the other +inf); -inf target: below every number."""
        inf = float("inf")
        g, e = rank_counts(torch.tensor([[inf, 1.0, inf], [-inf, 1.0, -inf]]), torch.tensor([0, 0]))
        assert (g.tolist(), e.tolist()) == ([0, 1], [1, 1])
