import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from nextloc.data.info import DataInfo
from nextloc.data.samples import SAMPLE_COLUMNS, SPLITS, STAYPOINT_COLUMNS, encode_locations, generate_samples
from nextloc.data.store import LOCATION_COLUMNS, read_processed, write_processed
from nextloc.errors import DataError

KEPT_USERS = ("alice", "bob")


def staypoints():
    """Three staypoints a day for 100 days for alice (places 10, 11, 12; place 16 at night
    from day 90, test split only, so encoded 1) and bob (places 12..15); carol has 5 days
    at place 99 and no sample, so she is dropped."""
    rows = []
    for user, places in (("alice", [10, 11, 12]), ("bob", [12, 13, 14, 15])):
        for day in range(100):
            for k, start_min in enumerate((480, 780, 1200)):
                place = 16 if (user == "alice" and day >= 90 and k == 2) else places[(day + k) % len(places)]
                rows.append((user, place, day, start_min, day % 7, 60 + 30 * k))
    rows += [("carol", 99, day, 600, day % 7, 90) for day in range(5)]
    return pd.DataFrame(rows, columns=list(STAYPOINT_COLUMNS))


def locations():
    """Raw ids 10..17 and 99 with coordinates; 17 is never visited."""
    raw = [10, 11, 12, 13, 14, 15, 16, 17, 99]
    return pd.DataFrame({"location_id": raw, "latitude": [39.9 + i / 100 for i in raw], "longitude": [116.3 - i / 100 for i in raw]})


@pytest.fixture(scope="module")
def sample_set():
    return generate_samples(staypoints())


@pytest.fixture
def folder(tmp_path, sample_set):
    """A freshly written processed data set."""
    return write_processed(tmp_path / "processed", sample_set, name="tiny", parameters={"previous_day": 7}, locations=locations())


def rewrite_consistently(folder, file, table):
    """Replace ``file`` and patch its size and checksum in metadata.json, so only later checks can notice."""
    table.to_parquet(folder / file, index=False)
    metadata = json.loads((folder / "metadata.json").read_text())
    data = (folder / file).read_bytes()
    metadata["files"][file] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "metadata.json").write_text(json.dumps(metadata))


def patch_metadata(folder, **changes):
    metadata = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps(metadata | changes))


class TestWriteProcessed:
    def test_round_trip_returns_the_same_tables(self, folder, sample_set):
        data = read_processed(folder)
        for split in SPLITS:
            expected_sp = sample_set.staypoints[split][list(STAYPOINT_COLUMNS)].astype(np.int64)
            pd.testing.assert_frame_equal(data.staypoints[split][list(STAYPOINT_COLUMNS)], expected_sp)
            pd.testing.assert_frame_equal(data.samples[split][list(SAMPLE_COLUMNS)], sample_set.samples[split])
            assert len(data.samples[split]) > 0

    def test_user_table_links_encoded_ids_to_raw_ids(self, folder, sample_set):
        data = read_processed(folder)
        assert data.users["user_id"].tolist() == [1, 2]
        assert data.users["raw_user_id"].tolist() == [str(u) for u in sample_set.users]

    def test_metadata_records_sizes_counts_and_parameters(self, folder, sample_set):
        """Two kept users (U = 3), places 10..15 known (L = 8), carol dropped."""
        data = read_processed(folder)
        assert (data.num_locations, data.num_users) == (8, 3) == (sample_set.num_locations, sample_set.num_users)
        assert data.metadata["dropped_users"] == 1
        assert data.metadata["name"] == "tiny"
        assert data.metadata["parameters"] == {"previous_day": 7}
        assert data.metadata["has_location_table"] is True
        assert data.metadata["splits"] == {
            s: {"staypoints": len(sample_set.staypoints[s]), "samples": len(sample_set.samples[s])} for s in SPLITS
        }

    def test_location_table_has_encoded_ids_coordinates_and_usage_counts(self, folder, sample_set):
        """One row per raw place the kept users visit (not 17, never visited; not 99, carol's)."""
        sp, raw = staypoints(), locations().set_index("location_id")
        kept = sp[sp["user_id"].isin(KEPT_USERS)]
        rows = []
        for place, visits in kept.groupby("location_id"):
            rows.append({
                "location_id": int(encode_locations(np.array([place]), sample_set.known_locations)[0]),
                "raw_location_id": place,
                "latitude": raw.loc[place, "latitude"],
                "longitude": raw.loc[place, "longitude"],
                "n_staypoints": len(visits),
                "n_users": visits["user_id"].nunique(),
            })
        expected = pd.DataFrame(rows).sort_values(["location_id", "raw_location_id"]).reset_index(drop=True)
        table = read_processed(folder).locations
        assert list(table.columns) == list(LOCATION_COLUMNS)
        pd.testing.assert_frame_equal(table, expected, check_dtype=False)

    def test_place_seen_only_after_train_is_encoded_unseen(self, folder):
        """Place 16 appears only in alice's test split: encoded id 1, 10 visits by one user."""
        table = read_processed(folder).locations.set_index("raw_location_id")
        assert table.loc[16, ["location_id", "n_staypoints", "n_users"]].tolist() == [1, 10, 1]
        assert table.loc[12, ["location_id", "n_users"]].tolist() == [4, 2]  # known ids 10..15 -> 2..7

    def test_without_locations_the_metadata_says_so(self, tmp_path, sample_set):
        path = write_processed(tmp_path / "p", sample_set, name="tiny", parameters={}, locations=None)
        data = read_processed(path)
        assert data.locations is None
        assert data.metadata["has_location_table"] is False

    def test_existing_folder_is_refused_and_left_alone(self, tmp_path, sample_set):
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "keep.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="already exists"):
            write_processed(tmp_path / "p", sample_set, name="tiny", parameters={})
        assert [p.name for p in tmp_path.iterdir()] == ["p"]
        assert [p.name for p in (tmp_path / "p").iterdir()] == ["keep.txt"]

    def test_failed_write_leaves_no_temporary_folder(self, tmp_path, sample_set):
        """A location frame without latitude fails after the tables are written."""
        with pytest.raises(KeyError, match="latitude"):
            write_processed(tmp_path / "p", sample_set, name="tiny", parameters={}, locations=locations().drop(columns="latitude"))
        assert list(tmp_path.iterdir()) == []


class TestReadProcessed:
    def test_truncated_parquet_file_is_refused_by_name(self, folder):
        file = folder / "train_samples.parquet"
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        with pytest.raises(DataError, match="train_samples.parquet: size or checksum differs"):
            read_processed(folder)

    def test_unreadable_parquet_with_matching_checksum_is_refused_by_name(self, folder):
        """Truncated, and its checksum patched: only the Parquet reader can notice."""
        file = folder / "test_staypoints.parquet"
        data = file.read_bytes()[:100]
        file.write_bytes(data)
        patch_metadata(folder, files=json.loads((folder / "metadata.json").read_text())["files"]
                       | {file.name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}})
        with pytest.raises(DataError, match="test_staypoints.parquet: cannot be read as Parquet"):
            read_processed(folder)

    def test_changed_byte_is_refused_by_name(self, folder):
        file = folder / "validation_staypoints.parquet"
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
        with pytest.raises(DataError, match="validation_staypoints.parquet: size or checksum differs"):
            read_processed(folder)

    def test_missing_file_is_refused_by_name(self, folder):
        (folder / "locations.parquet").unlink()
        with pytest.raises(DataError, match="locations.parquet: missing"):
            read_processed(folder)

    def test_missing_metadata_is_refused(self, tmp_path):
        with pytest.raises(DataError, match="metadata.json: missing"):
            read_processed(tmp_path)

    def test_invalid_json_metadata_is_refused_by_name(self, folder):
        (folder / "metadata.json").write_text('{"format_version": 1, "files"')
        with pytest.raises(DataError, match="metadata.json: not valid JSON"):
            read_processed(folder)

    def test_other_format_version_is_refused(self, folder):
        patch_metadata(folder, format_version=2)
        with pytest.raises(DataError, match="metadata.json: format version 2, this nextloc reads 1"):
            read_processed(folder)

    def test_location_id_beyond_the_table_is_refused(self, folder, sample_set):
        """A consistently rewritten table with location id L = 8 (valid ids are 1..7)."""
        table = pd.read_parquet(folder / "train_staypoints.parquet")
        table.loc[5, "location_id"] = sample_set.num_locations
        rewrite_consistently(folder, "train_staypoints.parquet", table)
        with pytest.raises(DataError, match=r"train_staypoints.parquet: location_id outside \[1, 8\)"):
            read_processed(folder)

    def test_padding_location_id_is_refused(self, folder):
        table = pd.read_parquet(folder / "test_staypoints.parquet")
        table.loc[0, "location_id"] = 0
        rewrite_consistently(folder, "test_staypoints.parquet", table)
        with pytest.raises(DataError, match=r"test_staypoints.parquet: location_id outside"):
            read_processed(folder)


class TestOpenSchema:
    def test_location_attributes_reach_the_model_by_encoded_id(self, tmp_path, sample_set):
        """Attribute ``category`` = raw id // 2 (places 10..15 -> 5, 5, 6, 6, 7, 7): known ids 2..7 get them,
        padding and "unseen" (place 16) get 0."""
        places = locations().assign(category=lambda t: t["location_id"] // 2)
        path = write_processed(tmp_path / "p", sample_set, name="tiny", parameters={}, locations=places)
        data = read_processed(path)
        info = DataInfo.from_tables(data.num_locations, data.num_users, data.locations)
        assert info.location_attributes["category"].tolist() == [0, 0, 5, 5, 6, 6, 7, 7]

    def test_named_step_features_and_extra_sample_columns_are_stored(self, tmp_path, sample_set):
        """A staypoint column ``mode`` listed as a step feature and a sample column ``weight`` travel to disk."""
        for split in SPLITS:
            sample_set.staypoints[split]["mode"] = np.arange(len(sample_set.staypoints[split])) % 3
            sample_set.samples[split]["weight"] = 7
        try:
            path = write_processed(tmp_path / "p", sample_set, name="tiny", parameters={}, step_features=("mode",))
        finally:
            for split in SPLITS:
                del sample_set.staypoints[split]["mode"], sample_set.samples[split]["weight"]
        data = read_processed(path)
        assert data.metadata["step_features"] == ["mode"]
        assert (data.staypoints["train"]["mode"].to_numpy() == np.arange(len(data.staypoints["train"])) % 3).all()
        assert (data.samples["test"]["weight"] == 7).all()

    def test_a_non_integer_extra_column_is_refused_not_truncated(self, tmp_path, sample_set):
        sample_set.samples["train"]["weight"] = 0.5
        try:
            with pytest.raises(DataError, match="'weight'.*float64"):
                write_processed(tmp_path / "p", sample_set, name="tiny", parameters={})
        finally:
            del sample_set.samples["train"]["weight"]
        assert not (tmp_path / "p").exists()


class TestDamagedMetadata:
    @pytest.mark.parametrize("changes, message", [
        ({"num_locations": "many"}, "num_locations='many'"),
        ({"num_users": -1}, "num_users=-1"),
        ({"splits": {"train": {"staypoints": 1, "samples": 1}}}, "splits must give"),
        ({"splits": []}, "splits must give"),
        ({"files": {"../../etc/passwd": {"bytes": 1, "sha256": "0"}}}, r"files \['../../etc/passwd'\] are not plain names"),
        ({"files": ["train_samples.parquet"]}, "files must map"),
        ({"num_locations": 100_000}, "num_locations=100000 but locations.parquet ends at location 7"),
        ({"num_users": 5}, "num_users=5 but users.parquet holds 2 users"),
    ])
    def test_metadata_that_parses_but_is_wrong_is_refused_naming_the_file(self, folder, changes, message):
        patch_metadata(folder, **changes)
        with pytest.raises(DataError, match=f"metadata.json: {message}"):
            read_processed(folder)
