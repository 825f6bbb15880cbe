import pickle

import numpy as np
import pytest
import torch

from nextloc.data.batches import SplitTensors
from nextloc.data.reference_pickle import find_reference_files, load_reference_pickles, sample_set_from_reference
from nextloc.data.samples import SPLITS
from nextloc.data.store import read_processed, write_processed
from nextloc.errors import DataError


def reference_sample(user, X, weekday, start_min, dur, diff, Y):
    """One sample as the reference stores it: int64 arrays, float64 durations, an int target."""
    return {
        "X": np.array(X, dtype=np.int64),
        "user_X": np.full(len(X), user, dtype=np.int64),
        "weekday_X": np.array(weekday, dtype=np.int64),
        "start_min_X": np.array(start_min, dtype=np.int64),
        "dur_X": np.array(dur, dtype=np.float64),
        "diff": np.array(diff, dtype=np.int64),
        "Y": int(Y),
    }


def reference_samples():
    """Seven samples of users 1 and 2 over three splits; location ids up to 9, so L = 10 and U = 3.

    Edge cases: durations 29.99 (bucket 0), 30.0 (bucket 1) and 2879.9 (bucket 95); start
    minutes 1439 (slot 95) and 29 (slot 1); a history whose nearest step is 2 days before the
    target (diff [2, 2, 2]); an unseen location 1 in a history and as a target; a history of
    one step.
    """
    return {
        "train": [
            reference_sample(1, [2, 3, 2], [0, 0, 1], [480, 1439, 0], [45.7, 29.99, 30.0], [1, 1, 0], 4),
            reference_sample(2, [5, 6, 5, 7], [6, 0, 1, 2], [15, 29, 600, 720], [2879.9, 0.0, 59.5, 1439.0],
                             [7, 6, 5, 3], 5),
            reference_sample(1, [3], [4], [1200], [60.25], [0], 2),
        ],
        "validation": [
            reference_sample(2, [7, 1, 6], [3, 3, 3], [100, 200, 300], [31.5, 90.0, 120.1], [2, 2, 2], 1),
            reference_sample(1, [4, 4], [5, 0], [700, 1300], [600.0, 45.0], [9, 0], 3),
        ],
        "test": [
            reference_sample(1, [2, 8, 1], [1, 2, 3], [60, 70, 80], [35.0, 65.0, 95.0], [3, 1, 0], 9),
            reference_sample(2, [6, 6], [6, 6], [900, 960], [44.4, 1000.0], [0, 0], 6),
        ],
    }


def write_reference(folder, samples_by_split, prefix="dataSet_geolife"):
    """Write the three split files the reference's way: pickle.dump of a list of dicts."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, samples in samples_by_split.items():
        with open(folder / f"{prefix}_{split}.pk", "wb") as f:
            pickle.dump(samples, f, protocol=pickle.HIGHEST_PROTOCOL)
    return folder


def with_change(split, index, **changes):
    """reference_samples() with sample ``index`` of ``split`` changed (a value of None deletes the key)."""
    samples = reference_samples()
    sample = samples[split][index]
    for key, value in changes.items():
        if value is None:
            del sample[key]
        else:
            sample[key] = value
    return samples


class TestFindReferenceFiles:
    def test_finds_the_three_splits_by_suffix_without_opening_them(self, tmp_path):
        """Files holding no pickle at all are found: finding opens nothing."""
        for split in SPLITS:
            (tmp_path / f"dataSet_diy_{split}.pk").write_bytes(b"not a pickle")
        (tmp_path / "notes.txt").write_text("ignored")
        files = find_reference_files(tmp_path)
        assert files == {split: tmp_path / f"dataSet_diy_{split}.pk" for split in SPLITS}

    def test_several_prefixes_ask_for_prefix(self, tmp_path):
        """dataSet_geolife_* and dataSet_diy_* side by side: which one is meant is unknowable."""
        write_reference(tmp_path, reference_samples(), "dataSet_geolife")
        write_reference(tmp_path, reference_samples(), "dataSet_diy")
        with pytest.raises(DataError, match=r"several data sets \['dataSet_diy', 'dataSet_geolife'\].*--prefix"):
            find_reference_files(tmp_path)

    def test_prefix_picks_one_of_several(self, tmp_path):
        write_reference(tmp_path, reference_samples(), "dataSet_geolife")
        write_reference(tmp_path, reference_samples(), "dataSet_diy")
        assert find_reference_files(tmp_path, "dataSet_diy")["test"] == tmp_path / "dataSet_diy_test.pk"

    def test_missing_split_file_is_named(self, tmp_path):
        write_reference(tmp_path, reference_samples())
        (tmp_path / "dataSet_geolife_validation.pk").unlink()
        with pytest.raises(DataError, match="dataSet_geolife_validation.pk: missing"):
            find_reference_files(tmp_path)

    def test_missing_folder_is_named(self, tmp_path):
        with pytest.raises(DataError, match="nowhere: no such folder"):
            find_reference_files(tmp_path / "nowhere")

    def test_folder_without_pickles_is_refused(self, tmp_path):
        with pytest.raises(DataError, match="holds no reference pickles"):
            find_reference_files(tmp_path)


class TestLoadReferencePickles:
    def test_returns_each_splits_samples_as_stored(self, tmp_path):
        """2 + 3 + 2 ... as written: the same dicts, arrays and dtypes come back."""
        written = reference_samples()
        loaded = load_reference_pickles(write_reference(tmp_path, written))
        assert list(loaded) == list(SPLITS)
        for split in SPLITS:
            assert len(loaded[split]) == len(written[split])
            for got, expected in zip(loaded[split], written[split]):
                assert got.keys() == expected.keys()
                for key in expected:
                    np.testing.assert_array_equal(got[key], expected[key])
                assert got["dur_X"].dtype == np.float64

    def test_damaged_pickle_is_refused_naming_the_file(self, tmp_path):
        write_reference(tmp_path, reference_samples())
        file = tmp_path / "dataSet_geolife_test.pk"
        file.write_bytes(file.read_bytes()[:40])
        with pytest.raises(DataError, match="dataSet_geolife_test.pk: cannot be unpickled"):
            load_reference_pickles(tmp_path)

    def test_a_pickle_that_is_not_a_list_is_refused(self, tmp_path):
        samples = reference_samples()
        samples["train"] = {"X": samples["train"][0]["X"]}
        write_reference(tmp_path, samples)
        with pytest.raises(DataError, match="dataSet_geolife_train.pk: holds a dict; expected a list of dicts"):
            load_reference_pickles(tmp_path)


class TestSampleSetFromReference:
    def test_every_field_of_every_sample_survives_write_and_read(self, tmp_path):
        """Each sample batched from the processed data set equals the pickle: locations X,
        time_slot = start_min // 15, weekday, duration bucket = floor(dur) // 30, diff, user,
        target Y and length; padding after the history is 0."""
        written = reference_samples()
        sample_set = sample_set_from_reference(load_reference_pickles(write_reference(tmp_path / "pk", written)))
        write_processed(tmp_path / "out", sample_set, name="geolife", parameters={})
        data = read_processed(tmp_path / "out")
        assert (data.num_locations, data.num_users) == (10, 3)
        for split in SPLITS:
            expected = written[split]
            batch = SplitTensors(data.staypoints[split], data.samples[split]).batch(torch.arange(len(expected)))
            for i, sample in enumerate(expected):
                n = len(sample["X"])
                assert batch.length[i] == n
                assert batch.user[i] == sample["user_X"][0]
                assert batch.target[i] == sample["Y"]
                steps = {
                    "location": sample["X"],
                    "time_slot": sample["start_min_X"] // 15,
                    "weekday": sample["weekday_X"],
                    "duration": np.floor(sample["dur_X"]).astype(np.int64) // 30,
                    "diff": sample["diff"],
                }
                for name, values in steps.items():
                    row = getattr(batch, name)[i]
                    assert row[:n].tolist() == values.tolist(), (split, i, name)
                    assert not row[n:].any(), (split, i, name)

    def test_known_table_sizes_widen_the_ids_seen(self):
        """The reference's total_loc_num may exceed the largest id in its samples; smaller is an error."""
        seen = sample_set_from_reference(reference_samples())
        wide = sample_set_from_reference(reference_samples(), num_locations=seen.num_locations + 5, num_users=10)
        assert (wide.num_locations, wide.num_users) == (seen.num_locations + 5, 10)
        with pytest.raises(DataError, match="num_locations=2 is smaller"):
            sample_set_from_reference(reference_samples(), num_locations=2)

    def test_each_sample_is_its_history_rows_then_its_target_row(self):
        """Train histories of 3, 4 and 1 steps: rows 0-2 + target 3, rows 4-7 + target 8, row 9 + target 10;
        history rows keep the pickle's values, minutes included (not only their 15-minute slot)."""
        sample_set = sample_set_from_reference(reference_samples())
        samples = sample_set.samples["train"]
        assert samples["history_start"].tolist() == [0, 4, 9]
        assert samples["history_end"].tolist() == [3, 8, 10]
        assert samples["target_index"].tolist() == [3, 8, 10]
        sp = sample_set.staypoints["train"]
        assert sp["location_id"].tolist() == [2, 3, 2, 4, 5, 6, 5, 7, 5, 3, 2]
        assert sp["user_id"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 2, 1, 1]
        assert sp["start_min"].tolist() == [480, 1439, 0, 0, 15, 29, 600, 720, 0, 1200, 0]
        assert sp["weekday"].tolist() == [0, 0, 1, 0, 6, 0, 1, 2, 0, 4, 0]
        assert sp["duration"].tolist() == [45, 29, 30, 0, 2879, 0, 59, 1439, 0, 60, 0]

    def test_days_count_back_from_the_largest_diff(self):
        """diff [3, 1, 0] -> history days [0, 2, 3], target day 3; diff [2, 2, 2] -> [0, 0, 0] and 2."""
        sp = sample_set_from_reference(reference_samples())
        assert sp.staypoints["test"]["start_day"].tolist()[:4] == [0, 2, 3, 3]
        assert sp.staypoints["validation"]["start_day"].tolist()[:4] == [0, 0, 0, 2]

    def test_target_rows_carry_no_time_features(self):
        """The pickles do not say when the target happened: its start_min, weekday and duration are 0."""
        sp = sample_set_from_reference(reference_samples()).staypoints["train"]
        target_rows = sp.iloc[[3, 8, 10]]
        assert (target_rows[["start_min", "weekday", "duration"]] == 0).all().all()

    def test_durations_are_floored_and_clipped_to_two_days(self):
        """dur 59.99 -> 59, 5000.0 -> 2879, -0.5 -> 0, 30.0 -> 30 minutes."""
        samples = with_change("train", 0, X=[2, 3, 2, 3], weekday_X=[0] * 4, start_min_X=[0] * 4,
                              user_X=[1] * 4, diff=[0] * 4, dur_X=np.array([59.99, 5000.0, -0.5, 30.0]))
        sp = sample_set_from_reference(samples).staypoints["train"]
        assert sp["duration"].tolist()[:4] == [59, 2879, 0, 30]

    def test_counts_are_the_largest_ids_plus_one(self):
        """Largest location 9 (a test target), largest user 2: L = 10 with known 2..9, U = 3 with users 1, 2."""
        sample_set = sample_set_from_reference(reference_samples())
        assert (sample_set.num_locations, sample_set.num_users) == (10, 3)
        assert sample_set.known_locations.tolist() == list(range(2, 10))
        assert sample_set.users.tolist() == [1, 2]
        assert sample_set.dropped_users == 0

    def test_missing_key_names_file_and_sample(self):
        samples = with_change("validation", 1, dur_X=None)
        with pytest.raises(DataError, match=r"^val\.pk: sample 1 lacks keys \['dur_X'\]"):
            sample_set_from_reference(samples, sources={"validation": "val.pk"})

    def test_length_mismatch_names_file_and_sample(self):
        samples = with_change("test", 1, weekday_X=np.array([6, 6, 6]))
        with pytest.raises(DataError, match="^test.pk: sample 1: X has 2 steps but weekday_X has 3"):
            sample_set_from_reference(samples, sources={"test": "test.pk"})

    def test_without_sources_the_split_is_named(self):
        samples = with_change("test", 0, Y=0)
        with pytest.raises(DataError, match="^test samples: sample 0: Y holds 0"):
            sample_set_from_reference(samples)

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"X": [2, 0]}, r"X holds 0, expected >= 1; location and user ids start at 1"),
            ({"Y": -3}, r"Y holds -3, expected >= 1"),
            ({"user_X": [0, 0]}, r"user_X holds 0, expected >= 1"),
            ({"user_X": [1, 2]}, r"user_X holds several users"),
            ({"weekday_X": [5, 7]}, r"weekday_X holds 7, expected in \[0, 7\)"),
            ({"start_min_X": [1440, 0]}, r"start_min_X holds 1440, expected in \[0, 1440\)"),
            ({"X": np.array([2.0, 3.5])}, r"X holds 3.5, expected a whole number"),
            ({"dur_X": np.array([np.nan, 1.0])}, r"dur_X holds nan; expected finite minutes"),
            ({"diff": np.array(["a", "b"])}, r"diff holds <U1 values; expected numbers"),
            ({"Y": np.array([3, 4])}, r"Y holds 2 values; expected one location id"),
            ({k: [] for k in ("X", "user_X", "weekday_X", "start_min_X", "dur_X", "diff")}, r"X is empty"),
        ],
    )
    def test_bad_values_name_file_and_sample(self, changes, message):
        """Sample 1 of validation (user 1, 2 steps) is broken; every other sample is fine."""
        samples = with_change("validation", 1, **changes)
        with pytest.raises(DataError, match=f"^val.pk: sample 1: {message}"):
            sample_set_from_reference(samples, sources={"validation": "val.pk"})
