"""Tests for synthetic raw GPS tracks and their GeoLife / DIY writers."""

import re
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import trackintel as ti

from nextloc.data import raw_synthetic
from nextloc.data.raw_synthetic import (
    DIY_COLUMNS,
    diy_user_id,
    generate_positionfixes,
    move_places,
    write_diy,
    write_geolife,
)
from nextloc.data.synthetic_mobility import generate_staypoints

REPO = Path(__file__).resolve().parents[2]
GEOLIFE_SAMPLE = REPO / "tests" / "fixtures" / "geolife_sample" / "Data"  # real, unmodified GeoLife files
# A GeoLife row as it occurs in every file of the real sample: lat,lon,0,altitude_ft,days,date,time
PLT_ROW = re.compile(r"-?\d+(\.\d+)?,-?\d+(\.\d+)?,0,-?\d+(\.\d+)?,\d+(\.\d+)?,\d{4}-\d\d-\d\d,\d\d:\d\d:\d\d")
INTERVAL = 30


@pytest.fixture(scope="module")
def truth():
    """3 users x 20 days: ~160 stays at ~20 places, a few gaps over 6 h (untracked days)."""
    return generate_staypoints(n_users=3, n_days=20, seed=0)


@pytest.fixture(scope="module")
def fixes(truth):
    """About 100,000 fixes, one every 30 s."""
    return generate_positionfixes(*truth, interval_s=INTERVAL)


@pytest.fixture(scope="module")
def geolife_root(fixes, tmp_path_factory):
    root = tmp_path_factory.mktemp("geolife")
    write_geolife(fixes, root)
    return root


@pytest.fixture(scope="module", params=[(100, 50), (200, 20)], ids=["diy-params", "geolife-params"])
def detected(request, truth, fixes):
    """Trackintel staypoints and dataset-level locations with the DIY and the GeoLife parameters."""
    dist_threshold, epsilon = request.param
    gdf = gpd.GeoDataFrame(fixes, geometry=gpd.points_from_xy(fixes["longitude"], fixes["latitude"]), crs="EPSG:4326")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, sp = ti.Positionfixes(gdf).generate_staypoints(
            method="sliding", dist_threshold=dist_threshold, time_threshold=30, gap_threshold=24 * 60
        )
        sp, locs = sp.generate_locations(
            method="dbscan", epsilon=epsilon, num_samples=2, distance_metric="haversine", agg_level="dataset"
        )
    return sp, locs


def _haversine_m(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * np.arcsin(np.sqrt(a))


def _ns(times) -> np.ndarray:
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def _fixes_per_stay(staypoints: pd.DataFrame, fixes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each stay (sorted by user, start): its first fix row and the number of fixes in [start, finish]."""
    sp = staypoints.sort_values(["user_id", "started_at"])
    first, count = [], []
    for user, stays in sp.groupby("user_id", sort=True):
        rows = np.flatnonzero(fixes["user_id"].to_numpy() == user)
        times = _ns(fixes["tracked_at"].iloc[rows])
        lo = np.searchsorted(times, _ns(stays["started_at"]), side="left")
        hi = np.searchsorted(times, _ns(stays["finished_at"]), side="right")
        first.append(rows[0] + lo)
        count.append(hi - lo)
    return np.concatenate(first), np.concatenate(count)


def _travel_gaps(staypoints: pd.DataFrame) -> pd.DataFrame:
    """Gaps between consecutive stays of a user: user, from/to place, finish, next start."""
    sp = staypoints.sort_values(["user_id", "started_at"]).reset_index(drop=True)
    nxt = sp.shift(-1)
    same = sp["user_id"].eq(nxt["user_id"])
    return pd.DataFrame(
        {
            "user_id": sp["user_id"][same].astype(np.int64),
            "from_loc": sp["location_id"][same],
            "to_loc": nxt["location_id"][same].astype(np.int64),
            "begin": sp["finished_at"][same],
            "end": nxt["started_at"][same],
        }
    ).reset_index(drop=True)


def _fixes_between(fixes: pd.DataFrame, user, begin, end) -> pd.DataFrame:
    """Fixes of ``user`` strictly inside ``(begin, end)``."""
    mine = fixes[fixes["user_id"] == user]
    return mine[(mine["tracked_at"] > begin) & (mine["tracked_at"] < end)]


def _read_all_diy(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f, dtype={"user_id": str, "tracked_at": str}) for f in sorted(folder.glob("*.csv"))],
                     ignore_index=True)


class TestGeneratePositionfixes:
    def test_columns_dtypes_and_utc_clock(self, fixes):
        assert list(fixes.columns) == ["user_id", "tracked_at", "latitude", "longitude"]
        assert str(fixes["tracked_at"].dtype) == "datetime64[ns, UTC]"
        assert fixes["user_id"].dtype == np.int64
        assert fixes["latitude"].dtype == fixes["longitude"].dtype == np.float64

    def test_sorted_by_user_then_strictly_increasing_time(self, fixes):
        users, times = fixes["user_id"].to_numpy(), _ns(fixes["tracked_at"])
        assert (np.diff(users) >= 0).all()
        same_user = users[1:] == users[:-1]
        assert (np.diff(times)[same_user] > 0).all()

    def test_each_stay_has_a_fix_every_interval_from_start_to_finish(self, truth, fixes):
        sp = truth[0].sort_values(["user_id", "started_at"])
        first, count = _fixes_per_stay(sp, fixes)
        duration_s = (sp["finished_at"] - sp["started_at"]).dt.total_seconds().to_numpy()
        np.testing.assert_array_equal(count, duration_s // INTERVAL + 1)
        np.testing.assert_array_equal(_ns(fixes["tracked_at"].iloc[first]), _ns(sp["started_at"]))
        inside = np.concatenate([np.arange(f, f + c - 1) for f, c in zip(first, count)])
        steps = _ns(fixes["tracked_at"].iloc[inside + 1]) - _ns(fixes["tracked_at"].iloc[inside])
        assert (steps == INTERVAL * 10**9).all()

    def test_stay_fixes_lie_at_their_place_with_the_requested_noise(self, truth, fixes):
        """RMS distance from the place is stay_noise_m (10 m); none is beyond 40 m."""
        sp, places = truth
        sp = sp.sort_values(["user_id", "started_at"])
        first, count = _fixes_per_stay(sp, fixes)
        rows = np.concatenate([np.arange(f, f + c) for f, c in zip(first, count)])
        place = places.set_index("location_id").loc[np.repeat(sp["location_id"].to_numpy(), count)]
        dist = _haversine_m(fixes["latitude"].to_numpy()[rows], fixes["longitude"].to_numpy()[rows],
                            place["latitude"].to_numpy(), place["longitude"].to_numpy())
        assert np.sqrt(np.mean(dist**2)) == pytest.approx(10.0, rel=0.05)
        assert dist.max() < 40.0

    def test_zero_noise_puts_stay_fixes_exactly_at_the_place(self, truth):
        sp, places = truth
        fixes = generate_positionfixes(sp.iloc[:5], places, stay_noise_m=0.0, travel_noise_m=0.0)
        first, count = _fixes_per_stay(sp.iloc[:5], fixes)
        place = places.set_index("location_id").loc[sp["location_id"].iloc[0]]
        stay = fixes.iloc[first[0] : first[0] + count[0]]
        assert (stay["latitude"] == place["latitude"]).all() and (stay["longitude"] == place["longitude"]).all()

    def test_travel_fixes_move_along_the_straight_line_at_uniform_pace(self, truth):
        """Without noise, a travel fix at share s of the gap lies at from + s * (to - from)."""
        sp, places = truth
        fixes = generate_positionfixes(sp, places, interval_s=INTERVAL, stay_noise_m=0.0, travel_noise_m=0.0)
        coords = places.set_index("location_id")
        checked = 0
        for gap in _travel_gaps(sp).itertuples():
            between = _fixes_between(fixes, gap.user_id, gap.begin, gap.end)
            if gap.end - gap.begin > pd.Timedelta(hours=6):
                continue
            share = ((between["tracked_at"] - gap.begin) / (gap.end - gap.begin)).to_numpy()
            a, b = coords.loc[gap.from_loc], coords.loc[gap.to_loc]
            for col in ("latitude", "longitude"):
                np.testing.assert_allclose(between[col], a[col] + share * (b[col] - a[col]), rtol=0, atol=1e-9)
            checked += len(between)
        assert checked > 1000

    def test_travel_gaps_are_tracked_every_interval_up_to_max_gap(self, truth, fixes):
        """A gap of g seconds holds ceil(g / 30) - 1 fixes if g <= 6 h, else none."""
        gaps = _travel_gaps(truth[0])
        long_gaps = 0
        for gap in gaps.itertuples():
            seconds = (gap.end - gap.begin).total_seconds()
            expected = int(np.ceil(seconds / INTERVAL)) - 1 if seconds <= 6 * 3600 else 0
            long_gaps += seconds > 6 * 3600
            assert len(_fixes_between(fixes, gap.user_id, gap.begin, gap.end)) == expected, gap
        assert long_gaps > 0  # the fixture has untracked days

    def test_travel_fixes_stay_near_the_segment(self, truth, fixes):
        """With the default 5 m travel noise no travel fix is more than 25 m off the line."""
        coords = truth[1].set_index("location_id")
        for gap in _travel_gaps(truth[0]).head(30).itertuples():
            between = _fixes_between(fixes, gap.user_id, gap.begin, gap.end)
            a, b = coords.loc[gap.from_loc], coords.loc[gap.to_loc]
            via = _haversine_m(a["latitude"], a["longitude"], between["latitude"], between["longitude"]) + _haversine_m(
                between["latitude"], between["longitude"], b["latitude"], b["longitude"])
            direct = _haversine_m(a["latitude"], a["longitude"], b["latitude"], b["longitude"])
            assert (via - direct < 50.0).all()  # a point d off the line adds at most 2d

    def test_same_seed_same_fixes_other_seed_other_noise(self, truth):
        sp, places = truth[0].iloc[:20], truth[1]
        one, again = generate_positionfixes(sp, places, seed=1), generate_positionfixes(sp, places, seed=1)
        other = generate_positionfixes(sp, places, seed=2)
        pd.testing.assert_frame_equal(one, again)
        pd.testing.assert_series_equal(one["tracked_at"], other["tracked_at"])
        assert not np.allclose(one["latitude"], other["latitude"], rtol=0, atol=1e-9)

    def test_no_stays_give_no_fixes(self, truth):
        empty = generate_positionfixes(truth[0].iloc[:0], truth[1])
        assert len(empty) == 0 and list(empty.columns) == ["user_id", "tracked_at", "latitude", "longitude"]

    def test_overlapping_stays_are_rejected(self, truth):
        sp = truth[0].iloc[:3].copy()
        sp.loc[sp.index[1], "started_at"] = sp["started_at"].iloc[0]
        with pytest.raises(ValueError, match="overlaps the next stay"):
            generate_positionfixes(sp, truth[1])

    def test_unknown_place_is_rejected(self, truth):
        sp = truth[0].iloc[:3].copy()
        sp["location_id"] = 10_000
        with pytest.raises(ValueError, match="not in places"):
            generate_positionfixes(sp, truth[1])


class TestWriteGeolife:
    def test_trackintel_reads_back_the_same_fixes(self, fixes, geolife_root):
        """Same count, times to the second, coordinates to 1e-6 degrees (6 decimals written)."""
        pfs, labels = ti.io.read_geolife(geolife_root / "Data")
        pfs = pfs.sort_values(["user_id", "tracked_at"]).reset_index(drop=True)
        assert labels == {}
        assert len(pfs) == len(fixes)
        np.testing.assert_array_equal(pfs["user_id"], fixes["user_id"])
        np.testing.assert_array_equal(_ns(pfs["tracked_at"]), _ns(fixes["tracked_at"]))
        np.testing.assert_allclose(pfs.geometry.y, fixes["latitude"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(pfs.geometry.x, fixes["longitude"], rtol=0, atol=1e-6)

    def test_header_is_the_real_geolife_header(self, geolife_root):
        real = sorted(GEOLIFE_SAMPLE.glob("*/Trajectory/*.plt"))
        assert real, f"real sample missing at {GEOLIFE_SAMPLE}"
        expected = real[0].read_bytes().split(b"\n")[:6]
        for plt in sorted((geolife_root / "Data").glob("*/Trajectory/*.plt")):
            assert plt.read_bytes().split(b"\n")[:6] == expected, plt

    def test_rows_have_the_format_of_the_real_rows(self, geolife_root):
        real = next(iter(sorted(GEOLIFE_SAMPLE.glob("*/Trajectory/*.plt"))))
        assert all(PLT_ROW.fullmatch(line) for line in real.read_text().splitlines()[6:])
        for plt in sorted((geolife_root / "Data").glob("*/Trajectory/*.plt"))[:10]:
            rows = plt.read_text().splitlines()[6:]
            assert rows and all(PLT_ROW.fullmatch(row) for row in rows), plt

    def test_day_count_agrees_with_the_gmt_date_and_time(self, geolife_root):
        plt = sorted((geolife_root / "Data" / "001" / "Trajectory").glob("*.plt"))[1]
        rows = pd.read_csv(plt, skiprows=6, header=None, names=["lat", "lon", "zero", "alt", "days", "date", "time"])
        gmt = pd.to_datetime(rows["date"] + " " + rows["time"])
        expected = (gmt - pd.Timestamp("1899-12-30")) / pd.Timedelta(days=1)
        np.testing.assert_allclose(rows["days"], expected, rtol=0, atol=6e-11)  # 10 decimals, rounded

    def test_one_file_per_user_and_gmt_day_named_after_its_first_fix(self, fixes, geolife_root):
        users = sorted(p.name for p in (geolife_root / "Data").iterdir())
        assert users == ["000", "001", "002"]
        days = fixes.assign(day=fixes["tracked_at"].dt.floor("D")).groupby("user_id")["day"].nunique().sum()
        files = sorted((geolife_root / "Data").glob("*/Trajectory/*.plt"))
        assert len(files) == days
        for plt in files[:10]:
            rows = pd.read_csv(plt, skiprows=6, header=None, usecols=[5, 6], names=["date", "time"])
            assert rows["date"].nunique() == 1
            assert plt.stem == (rows["date"][0] + rows["time"][0]).replace("-", "").replace(":", "")

    def test_negative_user_ids_are_rejected(self, fixes, tmp_path):
        with pytest.raises(ValueError, match="integers >= 0"):
            write_geolife(fixes.head(3).assign(user_id=-1), tmp_path)


class TestWriteDiy:
    def test_reads_back_with_pandas_as_the_same_instants_and_coordinates(self, fixes, tmp_path):
        write_diy(fixes, tmp_path)
        back = _read_all_diy(tmp_path)
        assert list(back.columns) == DIY_COLUMNS
        assert back["tracked_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00").all()
        instants = pd.to_datetime(back["tracked_at"], format="ISO8601")
        np.testing.assert_array_equal(_ns(instants), _ns(fixes["tracked_at"]))
        np.testing.assert_allclose(back["latitude"], fixes["latitude"], rtol=0, atol=1e-7)
        np.testing.assert_allclose(back["longitude"], fixes["longitude"], rtol=0, atol=1e-7)

    def test_user_ids_are_stable_uuid_strings(self, fixes, tmp_path):
        write_diy(fixes, tmp_path)
        back = _read_all_diy(tmp_path)
        pairs = pd.DataFrame({"int": fixes["user_id"], "diy": back["user_id"]}).drop_duplicates()
        assert len(pairs) == fixes["user_id"].nunique() == back["user_id"].nunique()
        assert all(diy_user_id(i) == s for i, s in zip(pairs["int"], pairs["diy"]))
        assert all(uuid.UUID(s) for s in pairs["diy"])

    def test_rows_are_split_in_order_over_n_files(self, fixes, tmp_path):
        write_diy(fixes, tmp_path, n_files=3)
        files = sorted(tmp_path.glob("*.csv"))
        assert [f.name for f in files] == ["part-000.csv", "part-001.csv", "part-002.csv"]
        sizes = [len(pd.read_csv(f)) for f in files]
        assert sum(sizes) == len(fixes) and max(sizes) - min(sizes) <= 1
        np.testing.assert_array_equal(_ns(pd.to_datetime(_read_all_diy(tmp_path)["tracked_at"], format="ISO8601")),
                                      _ns(fixes["tracked_at"]))

    def test_chunked_writing_gives_the_same_bytes(self, fixes, tmp_path, monkeypatch):
        write_diy(fixes, tmp_path / "whole")
        monkeypatch.setattr(raw_synthetic, "_CHUNK_ROWS", 7_777)
        write_diy(fixes, tmp_path / "chunked")
        whole, chunked = (tmp_path / name / "part-000.csv" for name in ("whole", "chunked"))
        assert whole.read_bytes() == chunked.read_bytes()

    def test_negative_coordinates_and_other_zones_are_written_correctly(self, tmp_path):
        """-7.8 S, 110.37 E in UTC-03:00 read back unchanged."""
        times = pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:30"], utc=True)
        fixes = pd.DataFrame(
            {"user_id": [5, 5], "tracked_at": times, "latitude": [-7.8, -0.0000123], "longitude": [110.37, -0.5]}
        )
        write_diy(fixes, tmp_path, timezone="America/Sao_Paulo")
        back = _read_all_diy(tmp_path)
        assert back["tracked_at"].tolist() == ["2023-12-31T21:00:00-03:00", "2023-12-31T21:00:30-03:00"]
        np.testing.assert_allclose(back[["latitude", "longitude"]], fixes[["latitude", "longitude"]], atol=1e-7)


class TestDiyUserId:
    def test_deterministic_distinct_uuids(self):
        ids = [diy_user_id(i) for i in range(100)]
        assert ids == [diy_user_id(i) for i in range(100)]
        assert len(set(ids)) == 100
        assert str(uuid.UUID(ids[0])) == ids[0]


class TestMovePlaces:
    def test_mean_moves_to_the_target_and_distances_are_kept(self, truth):
        places = truth[1]
        moved = move_places(places, -7.8, 110.37)
        assert moved["latitude"].mean() == pytest.approx(-7.8)
        assert moved["longitude"].mean() == pytest.approx(110.37)
        i, j = np.triu_indices(len(places), k=1)
        before = _haversine_m(places["latitude"].to_numpy()[i], places["longitude"].to_numpy()[i],
                              places["latitude"].to_numpy()[j], places["longitude"].to_numpy()[j])
        after = _haversine_m(moved["latitude"].to_numpy()[i], moved["longitude"].to_numpy()[i],
                             moved["latitude"].to_numpy()[j], moved["longitude"].to_numpy()[j])
        np.testing.assert_allclose(after, before, rtol=0.01)
        assert places["latitude"].mean() > 39  # input unchanged


class TestTrackintelPipeline:
    """Raw fixes -> trackintel staypoints -> DBSCAN locations recover the generating places (docs/reference.md)."""

    def test_one_location_per_place_visited_at_least_twice(self, truth, detected):
        """DBSCAN with min samples 2 can only find places with 2+ stays; it finds about those."""
        visits = truth[0]["location_id"].value_counts()
        n_locations = detected[1].index.nunique()  # agg_level="dataset" repeats a location per user
        assert abs(n_locations - (visits >= 2).sum()) <= 0.2 * (visits >= 2).sum()

    def test_most_staypoints_land_at_their_generating_place(self, truth, detected):
        """>= 80 % of staypoints are in a location centred within 50 m of the stay they overlap most."""
        stays, places = truth
        sp, locs = detected
        centres = locs[~locs.index.duplicated()]["center"]
        hits = []
        for user, found in sp.groupby("user_id"):
            mine = stays[stays["user_id"] == user]
            overlap = np.minimum(_ns(found["finished_at"])[:, None], _ns(mine["finished_at"])[None]) - np.maximum(
                _ns(found["started_at"])[:, None], _ns(mine["started_at"])[None])  # (found, stays)
            place = places.set_index("location_id").loc[mine["location_id"].to_numpy()[overlap.argmax(axis=1)]]
            centre = centres.reindex(found["location_id"].fillna(-1).astype(np.int64))
            dist = _haversine_m(place["latitude"].to_numpy(), place["longitude"].to_numpy(),
                                centre.y.to_numpy(), centre.x.to_numpy())
            hits.append((overlap.max(axis=1) > 0) & (dist <= 50))  # NaN distance (noise) is a miss
        assert len(sp) > 0.8 * len(stays)
        assert np.concatenate(hits).mean() >= 0.8


class TestMakeRaw:
    @staticmethod
    def _run(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "make_raw.py"), *args],
                              capture_output=True, text=True, timeout=60)

    def test_writes_a_geolife_tree_with_its_truth_beside_data(self, tmp_path):
        out = tmp_path / "raw" / "geolife"
        done = self._run("--layout", "geolife", "--users", "2", "--days", "3", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["Data", "places.csv", "staypoints.csv"]
        assert sorted(p.name for p in (out / "Data").iterdir()) == ["000", "001"]
        assert list((out / "Data" / "000" / "Trajectory").glob("*.plt"))
        truth = pd.read_csv(out / "staypoints.csv")
        assert list(truth.columns) == ["user_id", "location_id", "started_at", "finished_at"]
        assert truth["location_id"].isin(pd.read_csv(out / "places.csv")["location_id"]).all()
        assert [p.name for p in out.parent.iterdir()] == ["geolife"]  # no temporary folder left

    def test_writes_diy_csvs_with_truth_out_of_the_csv_glob(self, tmp_path):
        out = tmp_path / "diy"
        done = self._run("--layout", "diy", "--users", "2", "--days", "3", "--files", "2", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert [p.name for p in sorted(out.glob("*.csv"))] == ["part-000.csv", "part-001.csv"]
        data = _read_all_diy(out)
        truth = pd.read_csv(out / "truth" / "staypoints.csv")
        assert set(truth["user_id"]) == set(data["user_id"])
        assert data["latitude"].between(-8.0, -7.6).all()  # moved to Yogyakarta
        assert pd.read_csv(out / "truth" / "places.csv")["latitude"].between(-8.0, -7.6).all()

    def test_refuses_an_existing_output(self, tmp_path):
        out = tmp_path / "geolife"
        out.mkdir()
        done = self._run("--layout", "geolife", "--users", "1", "--days", "2", "--out", str(out))
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "already exists" in done.stderr
        assert list(out.iterdir()) == []
