"""Raw GPS -> processed data on the real GeoLife sample and on broken inputs."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import trackintel as ti

from nextloc.config import DatasetConfig, PreprocessConfig
from nextloc.data import raw
from nextloc.data.datasets import prepare_dataset
from nextloc.data.samples import SPLITS
from nextloc.data.staypoints import CRS, generate_user_staypoints
from nextloc.data.store import read_processed
from nextloc.data.time_features import staypoint_time_features
from nextloc.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "fixtures" / "geolife_sample" / "Data"  # real, unmodified GeoLife files

# The sample holds a few days per user: every filter is loosened so that one user yields samples.
LOOSE = dict(min_tracked_days=0, eps=100.0, num_samples=1, previous_day=0, min_history=1,
             train_fraction=0.3, validation_fraction=0.6, n_jobs=2)


def geolife(tmp_path, raw_dir=SAMPLE, **overrides) -> DatasetConfig:
    return DatasetConfig(name="geolife", source="geolife", processed_dir=str(tmp_path / "processed"), batch_size=2,
                         preprocess=PreprocessConfig(raw_dir=str(raw_dir), **(LOOSE | overrides)))


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    config = geolife(tmp_path_factory.mktemp("geolife"))
    path = prepare_dataset(config)
    return config, path, read_processed(path)


class TestPrepareDatasetOnTheRealSample:
    def test_every_target_has_its_minimum_history(self, processed):
        config, _, data = processed
        for split in SPLITS:
            s = data.samples[split]
            assert len(s) > 0, split
            assert ((s["history_end"] - s["history_start"]) >= config.preprocess.min_history).all()

    def test_splits_follow_each_users_days(self, processed):
        _, _, data = processed
        last_train = data.staypoints["train"].groupby("user_id")["start_day"].max()
        first_validation = data.staypoints["validation"].groupby("user_id")["start_day"].min()
        last_validation = data.staypoints["validation"].groupby("user_id")["start_day"].max()
        first_test = data.staypoints["test"].groupby("user_id")["start_day"].min()
        assert (last_train < first_validation).all() and (last_validation < first_test).all()

    def test_statistics_agree_with_the_data(self, processed):
        _, _, data = processed
        stats = data.metadata["extra"]["statistics"]
        assert stats["users_raw"] == 5
        assert stats["users"] == data.num_users - 1
        assert stats["locations"] == data.num_locations - 2
        for split in SPLITS:
            assert stats[f"{split}_samples"] == len(data.samples[split])
            assert stats[f"{split}_staypoints"] == len(data.staypoints[split])
        removed_users = (stats["users_removed_by_tracked_days"] + stats["users_removed_by_coverage"]
                         + stats["users_dropped_without_samples"])
        assert stats["users_raw"] - removed_users == stats["users"]

    def test_location_table_links_encoded_ids_to_coordinates(self, processed):
        _, _, data = processed
        known = data.locations[data.locations["location_id"] >= 2]
        assert sorted(known["location_id"]) == list(range(2, data.num_locations))
        assert known["latitude"].between(18, 54).all() and known["longitude"].between(73, 135).all()  # China

    def test_parameters_are_recorded_and_variants_get_their_own_folder(self, processed, tmp_path):
        config, path, data = processed
        assert data.metadata["parameters"]["preprocess"]["eps"] == 100.0
        other = replace(config, preprocess=replace(config.preprocess, eps=150.0))
        assert prepare_dataset(other) != path
        assert path.exists()

    def test_train_py_trains_on_it(self, processed, tmp_path):
        config, path, _ = processed
        run = subprocess.run(
            [sys.executable, "train.py", "dataset=geolife", f"dataset.processed_dir={path}", "dataset.batch_size=2",
             "max_epochs=1", "threads=1", f"hydra.run.dir={tmp_path}"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads((tmp_path / "test_results.json").read_text())["dataset"] == "geolife"


class TestStreamingMatchesWholeFrame:
    def test_per_user_staypoints_equal_one_trackintel_call_on_all_users(self):
        params = PreprocessConfig()
        per_user = [generate_user_staypoints(raw.read_geolife_user(u)[0], params)[0] for u in raw.geolife_users(SAMPLE)]
        streamed = pd.concat([p for p in per_user if len(p)], ignore_index=True)
        fixes = pd.concat([raw.read_geolife_user(u)[0] for u in raw.geolife_users(SAMPLE)], ignore_index=True)
        pfs = ti.Positionfixes(gpd.GeoDataFrame(fixes[["user_id", "tracked_at"]], crs=CRS,
                                                geometry=gpd.points_from_xy(fixes["longitude"], fixes["latitude"])))
        _, whole = pfs.generate_staypoints(method="sliding", distance_metric="haversine", dist_threshold=200,
                                           time_threshold=30, gap_threshold=1440, include_last=True, n_jobs=1)
        whole = whole.sort_values(["user_id", "started_at"])
        assert len(streamed) == len(whole) == 28
        assert (streamed["started_at"].to_numpy() == pd.to_datetime(whole["started_at"], utc=True).to_numpy()).all()
        assert np.allclose(streamed["latitude"], whole.geometry.y) and np.allclose(streamed["longitude"], whole.geometry.x)


class TestBadInput:
    def test_missing_raw_folder_says_where_to_download(self, tmp_path):
        config = geolife(tmp_path, raw_dir=tmp_path / "nowhere")
        with pytest.raises(DataError, match="no raw data in"):
            prepare_dataset(config)

    def test_geolife_reader_explains_missing_folder(self, tmp_path):
        with pytest.raises(DataError, match="microsoft.com"):
            raw.geolife_users(tmp_path / "nowhere")

    def test_tree_without_plt_files_is_refused(self, tmp_path):
        (tmp_path / "Data" / "000" / "Trajectory").mkdir(parents=True)
        with pytest.raises(DataError, match="no user folders with Trajectory"):
            prepare_dataset(geolife(tmp_path, raw_dir=tmp_path / "Data"))
        assert visible(tmp_path / "processed") == []

    def test_empty_user_folder_is_named(self, tmp_path):
        shutil.copytree(SAMPLE / "000", tmp_path / "Data" / "000")
        (tmp_path / "Data" / "001" / "Trajectory").mkdir(parents=True)
        with pytest.raises(DataError, match="001: user folder without"):
            prepare_dataset(geolife(tmp_path, raw_dir=tmp_path / "Data"))
        assert visible(tmp_path / "processed") == []

    def test_filters_that_leave_no_user_name_the_filter(self, tmp_path):
        with pytest.raises(DataError, match="min_tracked_days=50.*removed all 5 users"):
            prepare_dataset(geolife(tmp_path, min_tracked_days=50))
        assert visible(tmp_path / "processed") == []

    def test_malformed_plt_lines_are_skipped_and_counted(self, tmp_path):
        user = tmp_path / "Data" / "010"
        shutil.copytree(SAMPLE / "010", user)
        plt = sorted((user / "Trajectory").glob("*.plt"))[0]
        lines = plt.read_text().splitlines()
        lines[10] = lines[10][:12]  # truncated
        lines[11] = "39.9,not-a-number,0,492,39744.1,2008-10-23,02:53:10"
        plt.write_text("\n".join(lines) + "\n")
        fixes, malformed = raw.read_geolife_user(user)
        assert malformed == 2
        assert len(fixes) == sum(len(p.read_text().splitlines()) - 6 for p in (user / "Trajectory").glob("*.plt")) - 2

    def test_a_plt_shorter_than_its_header_counts_no_malformed_line(self, tmp_path):
        user = tmp_path / "Data" / "010"
        shutil.copytree(SAMPLE / "010", user)
        (user / "Trajectory" / "20990101000000.plt").write_text("Geolife trajectory\nWGS 84\n")
        fixes, malformed = raw.read_geolife_user(user)
        assert malformed == 0 and len(fixes) > 0

    def test_a_binary_plt_file_is_named_in_one_line(self, tmp_path):
        shutil.copytree(SAMPLE / "000", tmp_path / "Data" / "000")
        bad = tmp_path / "Data" / "000" / "Trajectory" / "20990101000000.plt"
        bad.write_bytes(b"\xff\xfe\x00\x81" * 400)
        with pytest.raises(DataError, match=f"{bad}: not a readable PLT text file"):
            prepare_dataset(geolife(tmp_path, raw_dir=tmp_path / "Data"))
        assert visible(tmp_path / "processed") == []

    @pytest.mark.parametrize(
        "rows, message",
        [
            ("user_id,lat,lon,tracked_at\nu1,1,2,2024-01-01T00:00:00+07:00\n", "lacks columns"),
            ("user_id,latitude,longitude,tracked_at\nu1,-7.8,110.4,2024-01-01T00:00:00\n", "has no time zone"),
            ("user_id,latitude,longitude,tracked_at\nu1,-7.8,east,2024-01-01T00:00:00+07:00\n", ":2: unparseable coordinates -7.8, east; give latitude and longitude in decimal degrees"),
            ("user_id,latitude,longitude,tracked_at\nu1,110.4,-7.8,2024-01-01T00:00:00+07:00\n",
             r":2: coordinates 110.4, -7.8 out of range"),
            ("user_id,latitude,longitude,tracked_at\nu1,-7.8,110.4,2024-01-01T00:00:00+07:00\n,-7.8,110.4,2024\n",
             ":3: no user_id"),
            ("", r"part.csv: empty \(0 bytes"),
            ("user_id,latitude,longitude,tracked_at\n", r"raw: its CSV files hold no rows, only headers"),
            ("user_id,latitude,longitude,tracked_at\nu1,-7.8,110.4,yesterday at noon\n",
             r":2: tracked_at 'yesterday at noon' is not an ISO 8601 time"),
            (b"user_id,latitude,longitude,tracked_at\nu\xe9,-7.8,110.4,2024-01-01T00:00:00+07:00\n",
             r"part.csv:2: not UTF-8 text \(byte b'\\xe9'\)"),
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "part.csv:1: not UTF-8 text"),
        ],
    )
    def test_broken_diy_csv_is_refused_with_its_file(self, tmp_path, rows, message):
        (tmp_path / "raw").mkdir()
        (tmp_path / "raw" / "part.csv").write_bytes(rows if isinstance(rows, bytes) else rows.encode())
        config = DatasetConfig(name="diy", source="diy", processed_dir=str(tmp_path / "processed"),
                               preprocess=PreprocessConfig(raw_dir=str(tmp_path / "raw")))
        with pytest.raises(DataError, match=message):
            prepare_dataset(config)
        assert not (tmp_path / "processed").exists(), "a failed creation left something behind"

    def test_script_reports_one_line_and_exit_code_2(self, tmp_path):
        run = subprocess.run(
            [sys.executable, "scripts/preprocess.py", "dataset=geolife",
             f"dataset.preprocess.raw_dir={tmp_path / 'nowhere'}", f"dataset.processed_dir={tmp_path}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 2
        assert "scripts/preprocess.py dataset=geolife" in run.stderr and "Traceback" not in run.stderr


class TestStaypointTimeFeatures:
    def frame(self):
        """One user: a stay from 2024-01-01 23:30 GMT for 90 minutes, and one on the next GMT day."""
        return pd.DataFrame({
            "user_id": ["7", "7"], "location_id": [3, 4],
            "started_at": pd.to_datetime(["2024-01-01 23:30", "2024-01-02 10:00"], utc=True),
            "finished_at": pd.to_datetime(["2024-01-02 01:00", "2024-01-05 10:00"], utc=True),
        })

    def test_gmt_clock_by_default(self):
        features = staypoint_time_features(self.frame(), None)
        assert features["start_min"].tolist() == [23 * 60 + 30, 600]
        assert features["start_day"].tolist() == [0, 1]
        assert features["weekday"].tolist() == [0, 1]  # 2024-01-01 is a Monday
        assert features["duration"].tolist() == [90, 2879]  # capped at 2 days - 1 minute

    def test_timezone_gives_local_time(self):
        """Asia/Shanghai is GMT+8: the first stay starts at 07:30 on Tuesday, the second at 18:00 the same day."""
        features = staypoint_time_features(self.frame(), "Asia/Shanghai")
        assert features["start_min"].tolist() == [7 * 60 + 30, 18 * 60]
        assert features["start_day"].tolist() == [0, 0]
        assert features["weekday"].tolist() == [1, 1]
