import numpy as np
import pandas as pd
import pytest

from nextloc.data.samples import SPLITS, generate_samples, history_windows
from nextloc.errors import DataError


def slow_generate_samples(sp, previous_day, train_fraction, validation_fraction, min_history):
    """docs/reference.md written as plainly as possible: loops over users and rows.

    Returns {split: [(user, [history raw locations], target raw location)]}.
    """

    def build(sp):
        out = {s: [] for s in SPLITS}
        for user in sorted(sp["user_id"].unique()):
            rows = sp[sp["user_id"] == user].sort_values(["start_day", "start_min"], kind="stable")
            max_day = rows["start_day"].max()
            for s, name in enumerate(SPLITS):
                if s == 0:
                    part = rows[rows["start_day"] < train_fraction * max_day]
                elif s == 1:
                    part = rows[(rows["start_day"] >= train_fraction * max_day) & (rows["start_day"] < validation_fraction * max_day)]
                else:
                    part = rows[rows["start_day"] >= validation_fraction * max_day]
                records = list(part.itertuples())
                first_day = records[0].start_day if records else 0
                for t, rec in enumerate(records):
                    if rec.start_day - first_day < previous_day:
                        continue
                    history = [r for r in records[:t] if r.start_day >= rec.start_day - previous_day]
                    if len(history) < min_history:
                        continue
                    out[name].append((user, [r.location_id for r in history], rec.location_id))
        return out

    samples = build(sp)
    keep = set.intersection(*({u for u, _, _ in samples[s]} for s in SPLITS))
    return build(sp[sp["user_id"].isin(keep)]), keep


def random_staypoints(rng, n_users=12):
    """Users with gaps, busy days, short spans (fewer days than previous_day) and few records."""
    frames = []
    for user in range(n_users):
        n_days = int(rng.choice([5, 20, 40, 90]))
        days = np.sort(rng.choice(n_days, size=rng.integers(3, n_days + 1), replace=True))
        n = len(days)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": f"u{user:02d}",
                    "location_id": rng.integers(100, 100 + rng.integers(2, 15), size=n),
                    "start_day": days - days.min(),
                    "start_min": rng.integers(0, 1440, size=n),
                    "weekday": rng.integers(0, 7, size=n),
                    "duration": rng.integers(26, 2880, size=n),
                }
            )
        )
    return pd.concat(frames).sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)


def decode(sample_set, split):
    """The samples of a split as (raw user, [history encoded locations], encoded target)."""
    sp, samples = sample_set.staypoints[split], sample_set.samples[split]
    loc = sp["location_id"].to_numpy()
    users = sample_set.users[sp["user_id"].to_numpy() - 1]
    return [
        (users[t], list(loc[s:e]), loc[t])
        for s, e, t in samples[["history_start", "history_end", "target_index"]].itertuples(index=False)
    ]


class TestGenerateSamples:
    @pytest.mark.parametrize("seed", range(8))
    def test_matches_the_plain_loop_version_on_random_tables(self, seed):
        rng = np.random.default_rng(seed)
        sp = random_staypoints(rng)
        params = dict(previous_day=int(rng.choice([3, 7])), train_fraction=0.6, validation_fraction=0.8, min_history=3)
        try:
            fast = generate_samples(sp, **params)
        except DataError:
            expected, keep = slow_generate_samples(sp, **params)
            assert not keep
            return
        expected, keep = slow_generate_samples(sp, **params)
        assert set(fast.users) == keep
        known = {loc: i + 2 for i, loc in enumerate(fast.known_locations)}
        for split in SPLITS:
            want = [(u, [known.get(x, 1) for x in h], known.get(y, 1)) for u, h, y in expected[split]]
            assert decode(fast, split) == want, split

    def test_users_without_a_sample_in_every_split_are_dropped(self):
        """u2 has 3 days of data: no day is 7 days into any split, so it has no sample."""
        rows = [("u1", d % 4, d, 600, d % 7, 60) for d in range(0, 100)]
        rows += [("u2", 9, d, 600, d % 7, 60) for d in range(3)]
        sp = pd.DataFrame(rows, columns=["user_id", "location_id", "start_day", "start_min", "weekday", "duration"])
        result = generate_samples(sp)
        assert list(result.users) == ["u1"]
        assert result.dropped_users == 1

    def test_vocabulary_is_fit_on_train_only(self):
        """Location 99 appears only in the test days: it is encoded as 1 (unseen)."""
        rows = [("u1", d % 3, d, 600, d % 7, 60) for d in range(0, 100)]
        rows[95] = ("u1", 99, 95, 600, 95 % 7, 60)
        sp = pd.DataFrame(rows, columns=["user_id", "location_id", "start_day", "start_min", "weekday", "duration"])
        result = generate_samples(sp)
        assert list(result.known_locations) == [0, 1, 2]
        test = result.staypoints["test"]
        assert test.loc[test["raw_location_id"] == 99, "location_id"].tolist() == [1]
        assert set(result.staypoints["train"]["location_id"]) == {2, 3, 4}

    def test_target_is_never_in_its_own_history(self):
        sp = random_staypoints(np.random.default_rng(3), n_users=30)
        result = generate_samples(sp)
        for split in SPLITS:
            s = result.samples[split]
            assert (s["history_end"] <= s["target_index"]).all()
            assert (s["history_end"] - s["history_start"] >= 3).all()

    def test_input_frame_is_not_modified(self):
        sp = random_staypoints(np.random.default_rng(3), n_users=30)
        before = sp.copy()
        generate_samples(sp)
        pd.testing.assert_frame_equal(sp, before)

    def test_missing_columns_are_named(self):
        with pytest.raises(DataError, match="duration"):
            generate_samples(pd.DataFrame({"user_id": [1], "location_id": [1], "start_day": [0], "start_min": [0], "weekday": [0]}))


class TestHistoryWindows:
    def test_window_spans_previous_days_of_the_same_user(self):
        """Rows of user 0 on days 0,1,8,9 and user 1 on days 0,9: with previous_day 7,
        day 8 looks back to day 1 and day 9 to day 2."""
        users = np.array([0, 0, 0, 0, 1, 1])
        days = np.array([0, 1, 8, 9, 0, 9])
        start, is_target = history_windows(users, days, previous_day=7, min_history=1)
        assert start.tolist() == [0, 0, 1, 2, 4, 5]
        assert is_target.tolist() == [False, False, True, True, False, False]
