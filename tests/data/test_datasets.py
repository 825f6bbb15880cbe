import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from nextloc.config import DatasetConfig, PreprocessConfig, SyntheticConfig
from nextloc.data import preprocess as preprocess_module
from nextloc.data.datasets import load_dataset, prepare_dataset, processed_path
from nextloc.data.store import METADATA, read_processed
from nextloc.errors import DataError

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "geolife_sample" / "Data"


def tiny_synthetic(tmp_path) -> DatasetConfig:
    return DatasetConfig(processed_dir=str(tmp_path), synthetic=SyntheticConfig(n_users=4, n_days=60))


def _prepare(config, queue):
    queue.put(str(prepare_dataset(config)))


class TestPrepareDataset:
    def test_concurrent_jobs_build_one_readable_data_set(self, tmp_path):
        config = tiny_synthetic(tmp_path)
        queue = multiprocessing.get_context("fork").Queue()
        jobs = [multiprocessing.get_context("fork").Process(target=_prepare, args=(config, queue)) for _ in range(3)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join(timeout=120)
        paths = {queue.get(timeout=5) for _ in jobs}
        assert all(job.exitcode == 0 for job in jobs)
        assert len(paths) == 1
        read_processed(paths.pop())
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [processed_path(config).name]

    def test_no_lock_file_is_left_after_success(self, tmp_path):
        prepare_dataset(tiny_synthetic(tmp_path))
        assert not list(tmp_path.glob(".*.lock"))

    def test_a_failed_creation_leaves_no_lock_file_and_no_empty_folder(self, tmp_path, monkeypatch):
        """The processed_dir did not exist before: after the error it does not exist either."""
        config = tiny_synthetic(tmp_path / "processed")

        def fail(*args, **kwargs):
            raise DataError("generation failed")

        from nextloc.data import synthetic
        monkeypatch.setattr(synthetic, "generate_staypoints", fail)
        with pytest.raises(DataError, match="generation failed"):
            prepare_dataset(config)
        assert list(tmp_path.iterdir()) == []

    def test_a_killed_creation_leaves_nothing_for_the_next_one(self, tmp_path):
        """The temporary folder of a write killed with -9 (tests/test_io.py) goes; another data set's stays."""
        config = tiny_synthetic(tmp_path)
        key = processed_path(config).name
        (tmp_path / f".{key}.k1ll3d.tmp").mkdir()
        (tmp_path / ".other.k1ll3d.tmp").mkdir()
        prepare_dataset(config)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".other.k1ll3d.tmp", key]

    def test_a_folder_holding_a_data_set_is_used_as_it_is(self, tmp_path):
        path = prepare_dataset(tiny_synthetic(tmp_path))
        geolife = DatasetConfig(name="geolife", source="geolife", processed_dir=str(path))
        assert prepare_dataset(geolife) == path

    def test_preprocessing_resumes_from_finished_users(self, tmp_path, monkeypatch):
        """A stop after the per-user stage keeps its results: the re-run computes no staypoints."""
        config = DatasetConfig(name="geolife", source="geolife", processed_dir=str(tmp_path), preprocess=PreprocessConfig(
            raw_dir=str(SAMPLE), min_tracked_days=0, eps=100.0, num_samples=1, previous_day=0, min_history=1,
            train_fraction=0.3, validation_fraction=0.6, n_jobs=1))

        def crash(*args, **kwargs):
            raise KeyboardInterrupt  # the process is stopped after the per-user stage

        monkeypatch.setattr(preprocess_module, "generate_locations", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset(config)
        assert not (processed_path(config) / METADATA).exists()
        monkeypatch.undo()

        def no_recompute(*args, **kwargs):
            raise AssertionError("a finished user was computed again")

        monkeypatch.setattr(preprocess_module, "generate_user_staypoints", no_recompute)
        read_processed(prepare_dataset(config))

    def test_different_parameters_give_different_folders(self, tmp_path):
        config = tiny_synthetic(tmp_path)
        other = replace(config, preprocess=replace(config.preprocess, previous_day=6))
        assert processed_path(config) != processed_path(other)
        assert processed_path(config) == processed_path(replace(config, preprocess=replace(config.preprocess, n_jobs=3)))


class TestLoadDataset:
    def test_a_data_set_with_an_empty_split_is_refused_naming_it(self, tmp_path):
        """Validation samples would be needed for early stopping: an empty split stops the run.

        The validation tables are emptied and the metadata says so (its checksums dropped), so only
        the new check can refuse the data set."""
        config = tiny_synthetic(tmp_path)
        path = prepare_dataset(config)
        metadata = json.loads((path / METADATA).read_text())
        assert metadata["splits"]["validation"]["samples"] > 0
        metadata["splits"]["validation"] = {"staypoints": 0, "samples": 0}
        metadata["files"] = {}
        (path / METADATA).write_text(json.dumps(metadata))
        for file in path.glob("*.parquet"):
            if file.name.startswith("validation_"):
                pd.read_parquet(file).iloc[:0].to_parquet(file, index=False)
        with pytest.raises(DataError, match="validation split has no sample"):
            load_dataset(config)

    def test_a_processed_folder_without_its_metadata_is_named_not_rebuilt_over(self, tmp_path):
        config = tiny_synthetic(tmp_path)
        path = prepare_dataset(config)
        (path / METADATA).unlink()
        with pytest.raises(DataError, match=f"{path}: a processed data set without its metadata.json"):
            load_dataset(config)
        pointed = replace(config, processed_dir=str(path))  # the folder itself given as processed_dir
        with pytest.raises(DataError, match=f"{path}: holds the files of a processed data set but no metadata.json"):
            load_dataset(pointed)
        assert sorted(p.name for p in path.iterdir() if p.is_dir()) == [], "a data set was built inside it"
