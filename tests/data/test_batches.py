import numpy as np
import pandas as pd
import pytest
import torch

from nextloc.errors import DataError
from nextloc.data.batches import SplitTensors

HISTORY_FIELDS = ("location", "time_slot", "weekday", "duration", "diff")
ALL_FIELDS = (*HISTORY_FIELDS, "length", "user", "target")


def split_frames(n_samples=10, seed=0):
    """A split of 30 staypoints and ``n_samples`` samples whose histories hold 1..6 rows.

    Every stored value is non-zero at a valid step (location = row + 2, start_min >= 15,
    weekday 1..6, duration >= 30, start_day strictly increasing so diff >= 1), so a
    0 in a batch can only be padding. Targets are distinct rows, so a batch's
    ``target`` names its samples.
    """
    rng = np.random.default_rng(seed)
    n = 30
    sp = pd.DataFrame({
        "user_id": rng.integers(1, 4, n),
        "location_id": np.arange(n) + 2,
        "start_day": np.cumsum(rng.integers(1, 3, n)),
        "start_min": rng.integers(15, 1440, n),
        "weekday": rng.integers(1, 7, n),
        "duration": rng.integers(30, 2880, n),
    })
    target = np.sort(rng.choice(np.arange(6, n), n_samples, replace=False))
    start = target - rng.integers(1, 7, n_samples)
    samples = pd.DataFrame({"history_start": start, "history_end": target, "target_index": target})
    return sp, samples


def slow_batch(sp, samples, index):
    """docs/reference.md, samples step 5, one sample at a time: per-step features, padded with 0 to the longest."""
    rows = []
    for i in index:
        start, end, target = samples.iloc[i][["history_start", "history_end", "target_index"]]
        history = sp.iloc[start:end]
        rows.append({
            "location": history["location_id"].tolist(),
            "time_slot": [m // 15 for m in history["start_min"]],
            "weekday": history["weekday"].tolist(),
            "duration": [d // 30 for d in history["duration"]],
            "diff": [sp["start_day"].iloc[target] - d for d in history["start_day"]],
            "length": end - start,
            "user": sp["user_id"].iloc[target],
            "target": sp["location_id"].iloc[target],
        })
    longest = max(r["length"] for r in rows)
    out = {k: torch.tensor([r[k] + [0] * (longest - r["length"]) for r in rows]) for k in HISTORY_FIELDS}
    out |= {k: torch.tensor([r[k] for r in rows]) for k in ("length", "user", "target")}
    return out


@pytest.fixture
def split():
    return SplitTensors(*split_frames())


class TestSplitTensorsBatch:
    @pytest.mark.parametrize("index", [[0], [3, 0, 7, 7, 9, 1], list(range(10))])
    def test_every_field_equals_a_per_sample_construction(self, index):
        sp, samples = split_frames()
        batch = SplitTensors(sp, samples).batch(torch.tensor(index))
        expected = slow_batch(sp, samples, index)
        assert {"location", "length", "user", "target", *batch.features} == set(expected)
        for name, value in expected.items():
            got = getattr(batch, name)
            assert got.dtype == torch.long, name
            assert torch.equal(got, value), name

    def test_time_slot_is_quarter_hours_and_duration_half_hours(self):
        """start_min 29 -> slot 1, 1439 -> 95; duration 59 -> bucket 1, 2879 -> 95."""
        sp = pd.DataFrame({"user_id": [1, 1, 1], "location_id": [2, 3, 4], "start_day": [0, 0, 1],
                           "start_min": [29, 1439, 0], "weekday": [0, 0, 1], "duration": [59, 2879, 30]})
        samples = pd.DataFrame({"history_start": [0], "history_end": [2], "target_index": [2]})
        batch = SplitTensors(sp, samples).batch(torch.tensor([0]))
        assert batch.time_slot.tolist() == [[1, 95]]
        assert batch.duration.tolist() == [[1, 95]]
        assert batch.diff.tolist() == [[1, 1]]

    def test_padding_is_zero_and_only_padding_is_zero(self, split):
        batch = split.batch(torch.arange(10))
        valid = torch.arange(batch.location.shape[1]) < batch.length[:, None]
        assert not valid.all()  # the fixture's lengths vary
        for name in HISTORY_FIELDS:
            values = getattr(batch, name)
            assert values[~valid].eq(0).all(), name
            assert values[valid].ne(0).all(), name

    def test_width_is_the_longest_history_in_the_batch(self, split):
        batch = split.batch(torch.tensor([2, 5]))
        assert batch.location.shape == (2, int(batch.length.max()))


class TestOpenSchema:
    def test_only_the_requested_features_are_carried_and_diff_only_when_asked(self):
        sp, samples = split_frames()
        batch = SplitTensors(sp, samples, inputs=("weekday",)).batch(torch.arange(4))
        assert set(batch.features) == {"weekday"}
        with pytest.raises(AttributeError, match="diff"):
            _ = batch.diff

    def test_extra_staypoint_and_sample_columns_travel_to_the_batch(self):
        """A staypoint column ``mode`` (row + 100) is a per-step feature; a sample column ``weight`` a per-sample one."""
        sp, samples = split_frames()
        sp["mode"] = np.arange(len(sp)) + 100
        samples["weight"] = np.arange(len(samples)) * 3
        index = torch.tensor([4, 1])
        batch = SplitTensors(sp, samples, inputs=("mode",)).batch(index)
        expected = slow_batch(sp, samples, [4, 1])
        assert torch.equal(batch.mode, torch.where(expected["location"] > 0, expected["location"] - 2 + 100, 0))
        assert batch.weight.tolist() == [12, 3]

    def test_a_sample_column_named_like_a_step_feature_is_refused(self):
        sp, samples = split_frames()
        samples["weekday"] = 1
        with pytest.raises(DataError, match="weekday"):
            SplitTensors(sp, samples, inputs=("weekday",))

    def test_an_unknown_feature_is_refused_naming_what_the_data_has(self):
        sp, samples = split_frames()
        with pytest.raises(DataError, match="'speed'.*time_slot"):
            SplitTensors(sp, samples, inputs=("speed",))


class TestSplitTensorsBatches:
    def test_in_order_batches_cover_every_sample_once_with_a_partial_last(self, split):
        """10 samples in batches of 4: sizes 4, 4, 2, equal to batch(0..3), batch(4..7), batch(8..9)."""
        batches = list(split.batches(4, shuffle=False, drop_last=False))
        assert [len(b.target) for b in batches] == [4, 4, 2]
        assert split.num_batches(4, drop_last=False) == 3
        for b, index in zip(batches, (range(0, 4), range(4, 8), range(8, 10))):
            expected = split.batch(torch.tensor(list(index)))
            assert all(torch.equal(getattr(b, name), getattr(expected, name)) for name in ALL_FIELDS)

    def test_drop_last_drops_the_partial_batch(self, split):
        batches = list(split.batches(4, shuffle=False, drop_last=True))
        assert [len(b.target) for b in batches] == [4, 4]
        assert split.num_batches(4, drop_last=True) == 2
        assert torch.equal(torch.cat([b.target for b in batches]), split.batch(torch.arange(8)).target)

    def test_exact_multiple_keeps_every_batch_full(self):
        split = SplitTensors(*split_frames(n_samples=8))
        assert [len(b.target) for b in split.batches(4, shuffle=False, drop_last=False)] == [4, 4]

    def test_shuffled_batches_cover_every_sample_once(self, split):
        targets = torch.cat([b.target for b in split.batches(3, shuffle=True, drop_last=False,
                                                             generator=torch.Generator().manual_seed(1))])
        everything = split.batch(torch.arange(10)).target
        assert torch.equal(targets.sort().values, everything.sort().values)
        assert not torch.equal(targets, everything)

    def test_same_generator_seed_gives_the_same_order(self, split):
        def order(seed):
            g = torch.Generator().manual_seed(seed)
            return [b.target.tolist() for b in split.batches(3, shuffle=True, drop_last=True, generator=g)]

        assert order(7) == order(7)
        assert order(7) != order(8)
        assert [len(t) for t in order(7)] == [3, 3, 3]
