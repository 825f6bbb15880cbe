"""Check-in CSVs -> processed data: a hand-made file with every awkward case, and rows of the real NYC file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextloc.config import CheckinConfig, DatasetConfig, PreprocessConfig, compose_run_config
from nextloc.data.checkins import clean_checkins, grid_cells, read_checkins, venue_table
from nextloc.data.datasets import load_dataset
from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
NYC = ROOT / "tests" / "fixtures" / "foursquare_nyc"  # 374 real check-ins of four users

HAND_MADE = """\
who,venue,when,lat,lon,kind
u1,10,2024-03-01T08:00:00,40.70,-74.00,Cafe
u1,10,2024-03-01T08:00:00,40.70,-74.00,Cafe
u1,11,2024-03-01T12:30:00-05:00,,,Office
u1,10,2024-03-01T18:00:00Z,40.72,-74.02,Coffee Shop
u1,10,2024-03-02T09:00:00,40.71,-74.01,Coffee Shop
u2,10,2024-03-02T07:00:00,,,Cafe
u2,12,2024-03-03T23:30:00,40.80,-73.95,Bar
"""


def columns(**changes) -> CheckinConfig:
    return CheckinConfig(**({"user": "who", "place": "venue", "time": "when", "latitude": "lat", "longitude": "lon",
                             "category": "kind", "grid_cells": [1000.0]} | changes))


@pytest.fixture
def hand_made(tmp_path):
    (tmp_path / "checkins.csv").write_text(HAND_MADE)
    return read_checkins([tmp_path / "checkins.csv"], columns(), "America/New_York")


class TestHandMadeFile:
    def test_times_without_offset_are_local_and_those_with_one_keep_it(self, hand_made):
        times = hand_made["time"].dt.strftime("%Y-%m-%d %H:%M").tolist()
        assert times[:5] == ["2024-03-01 13:00", "2024-03-01 13:00", "2024-03-01 17:30", "2024-03-01 18:00",
                             "2024-03-02 14:00"]  # 08:00 in New York is 13:00 UTC; -05:00 and Z as given

    def test_a_repeated_checkin_is_dropped_and_counted(self, hand_made):
        visits, stats = clean_checkins(hand_made)
        assert stats["checkins_raw"] == 7 and stats["checkins_removed_duplicate"] == 1 and len(visits) == 6
        assert visits.groupby("user")["time"].apply(lambda t: t.is_monotonic_increasing).all()

    def test_a_venue_gets_its_most_frequent_category_and_ties_go_alphabetically(self, hand_made):
        """Venue 10: Cafe twice (after the repeat is dropped), Coffee Shop twice: a tie, Cafe comes first."""
        visits, _ = clean_checkins(hand_made)
        venues = venue_table(visits, columns()).set_index("location_id")
        assert venues.loc[10, "category_name"] == "Cafe"
        one_more = pd.concat([visits, visits.iloc[[3]]], ignore_index=True)  # a third Coffee Shop
        assert venue_table(one_more, columns()).set_index("location_id").loc[10, "category_name"] == "Coffee Shop"
        codes = venues["category"].to_dict()
        assert sorted(codes.values()) == [1, 2, 3] and codes[10] < codes[11]  # Bar 1, Cafe 2, Office 3

    def test_missing_coordinates_leave_the_centroid_to_the_others_or_unknown(self, hand_made):
        visits, _ = clean_checkins(hand_made)
        venues = venue_table(visits, columns()).set_index("location_id")
        assert venues.loc[10, "latitude"] == pytest.approx((40.70 + 40.72 + 40.71) / 3)
        assert np.isnan(venues.loc[11, "latitude"]) and venues.loc[11, "cell_1000m"] == 0
        assert venues.loc[10, "cell_1000m"] > 0 and venues.loc[12, "cell_1000m"] not in (0, venues.loc[10, "cell_1000m"])

    def test_an_empty_or_unreadable_time_names_file_row_and_column(self, tmp_path):
        for bad, message in (("u1,10,,40.7,-74.0,Cafe", "row 2, column time: empty"),
                             ("u1,10,yesterday,40.7,-74.0,Cafe", "row 2, column time: 'yesterday' is not a time")):
            (tmp_path / "c.csv").write_text(HAND_MADE.splitlines()[0] + "\n" + HAND_MADE.splitlines()[1] + "\n" + bad)
            with pytest.raises(DataError, match=f"c.csv: {message}"):
                read_checkins([tmp_path / "c.csv"], columns(), None)

    def test_a_missing_column_is_named_with_its_config_key(self, tmp_path):
        (tmp_path / "c.csv").write_text(HAND_MADE)
        with pytest.raises(DataError, match=r"no column category \(dataset.checkins.category\)"):
            read_checkins([tmp_path / "c.csv"], columns(category="category"), None)


def test_grid_cells_are_squares_of_the_given_size():
    """A 10 km line, east-west or north-south, at latitude 40 crosses 10 or 11 cells of 1 km; no coordinates: 0."""
    metres = np.arange(0, 10_000, 10.0)
    east = -74.0 + metres / (111_320 * np.cos(np.radians(40.0)))
    north = 40.0 + metres / 111_320
    for latitude, longitude in ((np.full_like(east, 40.0), east), (north, np.full_like(north, -74.0))):
        assert len(np.unique(grid_cells(latitude, longitude, 1000.0))) in (10, 11)
    codes = grid_cells(np.array([40.0, np.nan]), np.array([-74.0, -74.0]), 1000.0)
    assert codes.tolist() == [1, 0]


def test_checkin_columns_are_refused_with_another_source():
    with pytest.raises(ConfigError, match="belongs to dataset.source=checkins"):
        DatasetConfig(name="x", source="diy", checkins=CheckinConfig())
    with pytest.raises(ConfigError, match="time_unit"):
        CheckinConfig(time_unit="days")


@pytest.fixture(scope="module")
def nyc(tmp_path_factory):
    """The real rows through the shipped dataset=foursquare_nyc config (its columns, time zone and sample rules)."""
    config = compose_run_config(["dataset=foursquare_nyc"]).dataset
    config.processed_dir = str(tmp_path_factory.mktemp("processed"))
    config.preprocess = PreprocessConfig(**(vars(config.preprocess) | {"raw_dir": str(NYC)}))
    return config, load_dataset(config), pd.read_csv(NYC / "checkins_sample.csv")


class TestRealNYCRows:
    def test_every_checkin_becomes_a_visit_of_its_users(self, nyc):
        config, data, raw = nyc
        statistics = data.metadata["extra"]["statistics"]
        assert statistics["checkins_raw"] == len(raw) == 374 and statistics["checkins_removed_duplicate"] == 0
        visits = sum(len(data.staypoints[s]) for s in ("train", "validation", "test"))
        assert visits == len(raw) and data.num_users == 5  # four users + the padding row

    def test_local_hour_and_weekday_agree_with_the_publishers(self, nyc):
        """The file's own hour and weekday columns (derived by its publisher in New York time)."""
        _, data, raw = nyc
        sp = pd.concat([data.staypoints[s] for s in ("train", "validation", "test")])
        assert (np.sort(sp["start_min"].to_numpy() // 60) == np.sort(raw["hour"].to_numpy())).all()
        local = pd.to_datetime(raw["unix_s"], unit="s", utc=True).dt.tz_convert("America/New_York")
        assert (local.dt.weekday.to_numpy() == raw["dow"].to_numpy()).mean() > 0.99

    def test_categories_and_grid_cells_are_location_attributes(self, nyc):
        _, data, raw = nyc
        info = DataInfo.from_tables(data.num_locations, data.num_users, data.locations)
        assert set(info.location_attributes) == {"category", "cell_500m", "cell_2000m"}
        known = data.locations[data.locations["location_id"] > 1]
        counts = raw.groupby("poi_idx")["cat"].value_counts()
        names = counts.groupby(level=0).apply(lambda c: sorted(c[c == c.max()].index.get_level_values(1))[0])
        assert (raw.groupby("poi_idx")["cat"].nunique() > 1).any(), "the sample should hold a venue with two names"
        assert (known["category_name"].to_numpy() == names.reindex(known["raw_location_id"]).to_numpy()).all()
        codes = info.location_attributes["category"][known["location_id"].to_numpy()]
        assert (codes > 0).all() and info.location_attributes["cell_500m"][:2].tolist() == [0, 0]

    def test_train_py_trains_a_model_without_duration_on_it(self, nyc, tmp_path):
        config, _, _ = nyc
        run = subprocess.run(
            [sys.executable, "train.py", "dataset=foursquare_nyc", f"dataset.processed_dir={config.processed_dir}",
             f"dataset.preprocess.raw_dir={NYC}", "model=pointer", "model.use_duration=false", "model.embed_dim=16",
             "model.num_heads=2", "max_epochs=1", "threads=1", "progress=false", f"hydra.run.dir={tmp_path}"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads((tmp_path / "test_results.json").read_text())["dataset"] == "foursquare_nyc"


def test_the_readme_example_reads_with_the_columns_it_names(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```\nuser,venue,time")[1].split("```")[0]
    (tmp_path / "checkins.csv").write_text("user,venue,time" + block)
    frame = read_checkins([tmp_path / "checkins.csv"], CheckinConfig(
        user="user", place="venue", time="time", latitude="lat", longitude="lon", category="category",
        grid_cells=[500.0]), "America/New_York")
    visits, stats = clean_checkins(frame)
    venues = venue_table(visits, CheckinConfig(category="category", latitude="lat", longitude="lon",
                                               grid_cells=[500.0]))
    assert stats["checkins_raw"] == 9 and len(venues) == 6 and (venues["category"] > 0).all()
