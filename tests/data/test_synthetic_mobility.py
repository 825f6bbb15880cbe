"""Tests for the synthetic staypoint generator."""

import numpy as np
import pandas as pd
import pytest

from nextloc.data.synthetic_mobility import generate_staypoints

EXPECTED_DTYPES = {
    "user_id": "int64",
    "location_id": "int64",
    "started_at": "datetime64[ns, Asia/Shanghai]",
    "finished_at": "datetime64[ns, Asia/Shanghai]",
    "start_day": "int64",
    "start_min": "int64",
    "weekday": "int64",
    "duration": "int64",
    "oracle_p": "float64",
}


@pytest.fixture(scope="module")
def default_data():
    return generate_staypoints()


@pytest.fixture(scope="module")
def staypoints(default_data):
    return default_data[0]


@pytest.fixture(scope="module")
def places(default_data):
    return default_data[1]


def _work_place_per_user(sp: pd.DataFrame) -> pd.Series:
    """Infer work places: the most common place of long weekday stays starting 5-11 h."""
    long_day = sp[(sp["weekday"] < 5) & (sp["duration"] >= 300) & sp["start_min"].between(300, 659)]
    counts = long_day.groupby(["user_id", "location_id"]).size()
    counts = counts[counts >= 10].sort_values(ascending=False, kind="stable")
    top = counts.reset_index().drop_duplicates("user_id")
    return top.set_index("user_id")["location_id"].sort_index()


def _haversine_m(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * np.arcsin(np.sqrt(a))


class TestGenerateStaypoints:
    def test_same_seed_gives_identical_frames(self):
        sp1, pl1 = generate_staypoints(n_users=5, n_days=20, seed=3)
        sp2, pl2 = generate_staypoints(n_users=5, n_days=20, seed=3)
        pd.testing.assert_frame_equal(sp1, sp2)
        pd.testing.assert_frame_equal(pl1, pl2)

    def test_different_seed_gives_different_frames(self):
        sp1, pl1 = generate_staypoints(n_users=5, n_days=20, seed=3)
        sp2, pl2 = generate_staypoints(n_users=5, n_days=20, seed=4)
        assert not sp1.equals(sp2)
        assert not pl1.equals(pl2)

    def test_columns_and_dtypes(self, staypoints, places):
        assert {c: str(t) for c, t in staypoints.dtypes.items()} == EXPECTED_DTYPES
        assert list(places.columns) == ["location_id", "latitude", "longitude"]
        assert places["location_id"].dtype == np.int64
        assert places["latitude"].dtype == np.float64
        assert places["longitude"].dtype == np.float64

    def test_default_sizes(self, staypoints, places):
        assert len(places) == 8 * 30 + 50
        assert set(staypoints["user_id"]) == set(range(30))
        assert places["location_id"].tolist() == list(range(len(places)))

    def test_value_ranges(self, staypoints):
        assert staypoints["start_min"].between(0, 1439).all()
        assert staypoints["weekday"].between(0, 6).all()
        assert staypoints["duration"].between(26, 2879).all()
        assert (staypoints["start_day"] >= 0).all()

    def test_each_users_first_start_day_is_zero(self, staypoints):
        assert (staypoints.groupby("user_id")["start_day"].min() == 0).all()

    def test_location_ids_index_into_places(self, staypoints, places):
        assert staypoints["location_id"].between(0, len(places) - 1).all()

    def test_sorted_by_user_and_start_with_range_index(self, staypoints):
        assert isinstance(staypoints.index, pd.RangeIndex)
        expected = staypoints.sort_values(["user_id", "started_at"], kind="stable")
        pd.testing.assert_frame_equal(staypoints, expected.reset_index(drop=True))

    def test_no_consecutive_stays_at_same_place(self, staypoints):
        # Stays are dropped by whole untracked days, so pairs on the same or on
        # adjacent days had nothing dropped in between and must differ in place.
        sp = staypoints
        same_user = sp["user_id"].eq(sp["user_id"].shift())
        contiguous = same_user & (sp["start_day"].diff() <= 1)
        assert contiguous.sum() > 0.8 * len(sp)
        assert not (contiguous & sp["location_id"].eq(sp["location_id"].shift())).any()

    def test_stays_are_positive_and_do_not_overlap(self, staypoints):
        assert (staypoints["started_at"] < staypoints["finished_at"]).all()
        same_user = staypoints["user_id"].eq(staypoints["user_id"].shift())
        after_prev = staypoints["started_at"] > staypoints["finished_at"].shift()
        assert after_prev[same_user].all()

    def test_duration_matches_timestamps(self, staypoints):
        minutes = (staypoints["finished_at"] - staypoints["started_at"]).dt.total_seconds() / 60
        np.testing.assert_array_equal(minutes.to_numpy(), staypoints["duration"].to_numpy())

    def test_weekday_and_start_min_match_started_at(self, staypoints):
        start = staypoints["started_at"].dt
        assert (staypoints["weekday"] == start.dayofweek).all()
        assert (staypoints["start_min"] == start.hour * 60 + start.minute).all()

    def test_start_day_matches_local_date(self, staypoints):
        dates = staypoints["started_at"].dt.tz_localize(None).dt.normalize()
        first = dates.groupby(staypoints["user_id"]).transform("min")
        assert ((dates - first).dt.days == staypoints["start_day"]).all()

    def test_timezone_is_applied(self):
        sp, _ = generate_staypoints(n_users=2, n_days=5, timezone="Europe/Berlin")
        assert str(sp["started_at"].dt.tz) == "Europe/Berlin"
        assert sp["started_at"].min() >= pd.Timestamp("2024-01-01", tz="Europe/Berlin")

    @pytest.mark.parametrize(("share", "low", "high"), [(0.85, 0.65, 0.9), (0.5, 0.35, 0.6)])
    def test_tracked_day_share_roughly_respected(self, share, low, high):
        sp, _ = generate_staypoints(n_days=120, tracked_day_share=share, seed=1)
        per_user = sp.groupby("user_id")["start_day"]
        observed = per_user.nunique().sum() / (per_user.max() + 1).sum()
        assert low < observed < high

    def test_some_users_have_multi_day_gaps(self, staypoints):
        def longest_gap(days):
            return np.diff(np.unique(days)).max(initial=0) - 1

        gaps = staypoints.groupby("user_id")["start_day"].agg(longest_gap)
        assert (gaps >= 3).sum() >= 3

    def test_tracked_periods_differ_between_users(self, staypoints):
        first = staypoints.groupby("user_id")["started_at"].min().dt.normalize()
        assert first.nunique() > 1

    def test_oracle_p_in_unit_interval(self, staypoints):
        assert ((staypoints["oracle_p"] > 0) & (staypoints["oracle_p"] <= 1)).all()

    def test_oracle_p_mean_shows_learnable_data(self, staypoints):
        places_per_user = staypoints.groupby("user_id")["location_id"].nunique().median()
        mean = staypoints["oracle_p"].mean()
        assert mean > max(0.3, 3 / places_per_user)
        assert mean < 0.9

    def test_exploration_adds_new_places_over_time(self):
        short, _ = generate_staypoints(n_days=30, seed=2)
        long, _ = generate_staypoints(n_days=150, seed=2)
        n_short = short.groupby("user_id")["location_id"].nunique().mean()
        n_long = long.groupby("user_id")["location_id"].nunique().mean()
        assert n_long > n_short + 10

    def test_no_exploration_keeps_places_per_user_bounded(self):
        sp, _ = generate_staypoints(n_days=120, explore_prob=0.0)
        assert sp.groupby("user_id")["location_id"].nunique().max() <= 10

    def test_places_are_at_least_100_m_apart(self, places):
        lat, lon = places["latitude"].to_numpy(), places["longitude"].to_numpy()
        dist = _haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        np.fill_diagonal(dist, np.inf)
        assert dist.min() >= 100

    def test_places_lie_in_a_city_box(self, places):
        assert places["latitude"].between(39.7, 40.1).all()
        assert places["longitude"].between(116.1, 116.7).all()

    def test_most_users_have_a_work_place(self, staypoints):
        n_workers = len(_work_place_per_user(staypoints))
        assert 0.6 * 30 <= n_workers < 30

    def test_weekday_mornings_mostly_go_to_work(self, staypoints):
        work = _work_place_per_user(staypoints)
        sp = staypoints[staypoints["user_id"].isin(work.index)]
        morning = sp[(sp["weekday"] < 5) & sp["start_min"].between(360, 659)]
        at_work = morning["location_id"] == morning["user_id"].map(work)
        assert at_work.mean() > 0.5

    def test_weekend_work_visits_are_rare(self, staypoints):
        work = _work_place_per_user(staypoints)
        sp = staypoints[staypoints["user_id"].isin(work.index)]
        at_work = sp["location_id"] == sp["user_id"].map(work)
        weekend = sp["weekday"] >= 5
        assert at_work[weekend].mean() < 0.1
        assert at_work[weekend].mean() < at_work[~weekend].mean() / 3

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"n_users": 0},
            {"n_days": 0},
            {"n_places": 5},
            {"tracked_day_share": 0.0},
            {"explore_prob": 1.0},
        ],
    )
    def test_invalid_arguments_raise(self, kwargs):
        with pytest.raises(ValueError):
            generate_staypoints(**kwargs)
