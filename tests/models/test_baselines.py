"""The count-based models against literal per-sample definitions, on histories of very different lengths."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from nextloc.data.batches import SplitTensors
from nextloc.errors import ConfigError
from nextloc.models import DataInfo, build_model, count_parameters
from nextloc.models.counting import SparseCounts
from nextloc.models.markov import MarkovConfig, MarkovModel
from nextloc.models.mostfreq import MostFreqConfig, MostFreqModel
from nextloc.models.persistent import PersistentModel

L, U = 12, 4  # classes 0 (padding), 1 (unseen), 2..11


def random_split(seed, users, locations, n_rows=400, n_samples=120, max_len=30):
    """Random staypoints of ``users`` at ``locations`` and samples whose histories hold 1..30 rows.

    Histories are contiguous row ranges of one user, ending right before the target, like real samples.
    """
    rng = np.random.default_rng(seed)
    user = np.sort(rng.choice(users, n_rows))
    sp = pd.DataFrame({"user_id": user, "location_id": rng.choice(locations, n_rows), "start_day": np.arange(n_rows),
                       "start_min": 0, "weekday": 0, "duration": 0})
    first = np.searchsorted(user, user)  # each row's user's first row
    rows = [t for t in range(n_rows) if t > first[t]]
    target = np.sort(rng.choice(rows, n_samples, replace=False))
    start = np.maximum(target - rng.integers(1, max_len + 1, n_samples), first[target])
    samples = pd.DataFrame({"history_start": start, "history_end": target, "target_index": target})
    return sp, samples


def histories(sp, samples):
    """Per sample: (user, history locations, target), one at a time."""
    loc, user = sp["location_id"].to_numpy(), sp["user_id"].to_numpy()
    for s, e, t in samples.to_numpy():
        yield user[t], list(loc[s:e]), loc[t]


def dense(counter):
    row = np.zeros(L)
    for c, n in counter.items():
        row[c] = n
    return row


def scores_of(model, split):
    return torch.cat([model(b) for b in split.batches(17, shuffle=False, drop_last=False)]).numpy()


@pytest.fixture(scope="module")
def data():
    """Training data of users 1, 2 at places 1..8; test data of users 1..3 at places 1..11.

    So that every fallback is reached, test samples have (user, place) pairs, users and places
    never seen in training.
    """
    train, test = random_split(0, [1, 2], np.arange(1, 9), n_samples=40), random_split(1, [1, 2, 3], np.arange(1, L))
    return train, test, SplitTensors(*train, inputs=()), SplitTensors(*test, inputs=())


def fitted(model, data):
    model.fit(data[2])
    return model


class TestPersistent:
    def test_scores_one_for_the_last_history_location_only(self, data):
        model = fitted(PersistentModel(DataInfo(L, U)), data)
        expected = np.array([dense({h[-1]: 1}) for _, h, _ in histories(*data[1])])
        np.testing.assert_array_equal(scores_of(model, data[3]), expected)
        assert count_parameters(model) == 0


class TestMostFreq:
    def test_history_scope_counts_the_visits_of_the_history(self, data):
        model = fitted(MostFreqModel(DataInfo(L, U), scope="history"), data)
        expected = np.array([dense(Counter(h)) for _, h, _ in histories(*data[1])])
        np.testing.assert_array_equal(scores_of(model, data[3]), expected)

    def test_user_scope_counts_the_users_training_targets(self, data):
        model = fitted(MostFreqModel(DataInfo(L, U), scope="user"), data)
        per_user = {}
        for u, _, y in histories(*data[0]):
            per_user.setdefault(u, Counter())[y] += 1
        expected = np.array([dense(per_user.get(u, Counter())) for u, _, _ in histories(*data[1])])
        np.testing.assert_array_equal(scores_of(model, data[3]), expected)
        assert count_parameters(model) == sum(len(c) for c in per_user.values())  # stored (user, place) counts

    def test_an_unknown_scope_is_refused(self):
        with pytest.raises(ConfigError, match="model.scope"):
            MostFreqConfig(scope="week")


def slow_markov(train, test, scope, fallback):
    """Markov scores one sample at a time, from the definitions."""
    user_transitions, user_targets, global_transitions, global_targets = {}, {}, {}, Counter()
    for u, h, y in histories(*train):
        user_transitions.setdefault((u, h[-1]), Counter())[y] += 1
        user_targets.setdefault(u, Counter())[y] += 1
        global_transitions.setdefault(h[-1], Counter())[y] += 1
        global_targets[y] += 1
    rows = []
    for u, h, _ in histories(*test):
        if scope == "user":
            counts = user_transitions.get((u, h[-1]), Counter())
        else:
            counts = Counter(b for a, b in zip(h[:-1], h[1:]) if a == h[-1])
        sources = {"history": Counter(h), "user": user_targets.get(u, Counter()),
                   "global_transitions": global_transitions.get(h[-1], Counter()), "global": global_targets}
        for name in fallback:
            if sum(counts.values()):
                break
            counts = sources[name]
        rows.append(dense(counts))
    return np.array(rows)


class TestMarkov:
    @pytest.mark.parametrize("scope", ["user", "history"])
    @pytest.mark.parametrize("fallback", [[], ["history"], ["user", "global_transitions", "global"],
                                          ["global_transitions", "history", "user", "global"]])
    def test_scores_equal_the_per_sample_definition(self, data, scope, fallback):
        model = fitted(MarkovModel(DataInfo(L, U), scope=scope, fallback=fallback), data)
        np.testing.assert_array_equal(scores_of(model, data[3]), slow_markov(data[0], data[1], scope, fallback))

    @pytest.mark.parametrize("scope, chain", [("user", []), ("history", []), ("user", ["user"]),
                                              ("user", ["user", "global_transitions"])])
    def test_the_fixture_reaches_the_end_of_each_chain(self, data, scope, chain):
        """Without this, a fallback that is never reached would pass the test above untested."""
        empty = slow_markov(data[0], data[1], scope, chain).sum(axis=1) == 0
        assert empty.sum() >= 3

    def test_a_fitted_model_loads_into_a_fresh_one(self, data):
        model = fitted(MarkovModel(DataInfo(L, U), scope="user", fallback=["user", "global_transitions", "global"]), data)
        fresh = MarkovModel(DataInfo(L, U), scope="user", fallback=["user", "global_transitions", "global"])
        fresh.load_state_dict(model.state_dict())
        np.testing.assert_array_equal(scores_of(fresh, data[3]), scores_of(model, data[3]))

    @pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")
    def test_loaded_counts_stay_on_the_models_device(self, data):
        """Checkpoints load on the CPU; a model moved to another device (here ``meta``) keeps its counts there."""
        model = fitted(MarkovModel(DataInfo(L, U), scope="user", fallback=["user"]), data)
        fresh = MarkovModel(DataInfo(L, U), scope="user", fallback=["user"]).to("meta")
        fresh.load_state_dict(model.state_dict())
        assert {b.device.type for b in fresh.buffers()} == {"meta"}

    def test_an_unknown_fallback_is_refused(self):
        with pytest.raises(ConfigError, match="model.fallback"):
            MarkovConfig(fallback=["user", "weekly"])


class TestSparseCounts:
    def test_rows_equal_a_dense_table(self):
        g = torch.Generator().manual_seed(0)
        row, cls = torch.randint(0, 9, (300,), generator=g), torch.randint(0, 7, (300,), generator=g)
        table = SparseCounts(num_classes=7)
        table.fit(row, cls)
        full = torch.zeros(10, 7)
        full.index_put_((row, cls), torch.ones(300), accumulate=True)
        query = torch.tensor([3, 0, 9, 3, 8])  # repeated rows and a row never seen
        assert torch.equal(table.rows(query), full[query])


class TestRegistry:
    @pytest.mark.parametrize("config", [MarkovConfig(), MostFreqConfig(), MostFreqConfig(scope="user")])
    def test_count_models_are_built_from_their_config(self, config):
        model = build_model(config, DataInfo(L, U))
        assert model.fits_by_counting and not list(model.parameters())
