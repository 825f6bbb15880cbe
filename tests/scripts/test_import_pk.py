"""``scripts/import_pk.py`` end to end, in subprocesses (each run costs an interpreter start)."""

import hashlib
import importlib.util
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from nextloc.data.samples import SPLITS
from nextloc.data.store import read_processed

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "import_pk.py"


class TouchOnUnpickle:
    """Unpickling this object creates ``marker``: proof that a file was unpickled, and harmless."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def reference_sample(user, locations, target):
    """A sample the reference's way: int64 arrays, float64 minutes with fractions, an int target."""
    n = len(locations)
    return {
        "X": np.array(locations, dtype=np.int64),
        "user_X": np.full(n, user, dtype=np.int64),
        "weekday_X": np.arange(n, dtype=np.int64) % 7,
        "start_min_X": np.arange(n, dtype=np.int64) * 100,
        "dur_X": np.arange(n, dtype=np.float64) * 40.5 + 0.25,
        "diff": np.arange(n, dtype=np.int64)[::-1],
        "Y": target,
    }


@pytest.fixture
def reference(tmp_path):
    """``dataSet_geolife_{train,validation,test}.pk`` with 3 / 2 / 1 samples of users 1 and 2, locations
    up to 7 (L = 8, U = 3); the first train sample also holds a :class:`TouchOnUnpickle` (key ignored)."""
    folder = tmp_path / "reference"
    folder.mkdir()
    samples = {
        "train": [reference_sample(1, [2, 3, 2], 4), reference_sample(2, [5, 6], 5), reference_sample(1, [3], 2)],
        "validation": [reference_sample(2, [6, 1, 6], 1), reference_sample(1, [4, 4], 3)],
        "test": [reference_sample(1, [2, 7, 1], 7)],
    }
    samples["train"][0]["note"] = TouchOnUnpickle(tmp_path / "unpickled")
    for split, data in samples.items():
        with open(folder / f"dataSet_geolife_{split}.pk", "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return folder


def import_pk(*args, cwd):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


class TestImportPk:
    def test_without_trust_pickle_it_refuses_and_unpickles_nothing(self, reference, tmp_path):
        """Exit 2, one line naming the risk and the opt-in; the marker file is never created."""
        result = import_pk(reference, "--out", tmp_path / "out", cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "unpickling runs arbitrary code" in lines[0] and "trusted source" in lines[0]
        assert "--trust-pickle" in lines[0]
        assert not (tmp_path / "unpickled").exists()
        assert not (tmp_path / "out").exists()

    def test_with_trust_pickle_it_writes_a_processed_data_set(self, reference, tmp_path):
        """Default name 'geolife' (from dataSet_geolife) and output data/processed/geolife-reference under the
        working folder; 3 / 2 / 1 samples, L = 8, U = 3, each file's sha256 recorded, no location table."""
        result = import_pk(reference, "--trust-pickle", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "unpickled").exists()
        assert "train: 3 samples, 6 history steps" in result.stderr
        data = read_processed(tmp_path / "data" / "processed" / "geolife-reference")
        assert {s: len(data.samples[s]) for s in SPLITS} == {"train": 3, "validation": 2, "test": 1}
        assert (data.num_locations, data.num_users) == (8, 3)
        assert data.metadata["name"] == "geolife"
        assert data.locations is None and data.metadata["has_location_table"] is False
        assert data.metadata["extra"]["location_table"].startswith("none")
        files = data.metadata["parameters"]["files"]
        assert data.metadata["parameters"]["source"] == "reference_pickle"
        for split in SPLITS:
            file = reference / f"dataSet_geolife_{split}.pk"
            assert files[file.name]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
            assert files[file.name]["split"] == split

    def test_an_existing_output_folder_is_refused_before_reading(self, reference, tmp_path):
        """Exit 2 naming the folder; its content is untouched and nothing was unpickled."""
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        result = import_pk(reference, "--trust-pickle", "--out", out, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {out} already exists; remove it or choose another --out"
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert not (tmp_path / "unpickled").exists()

    @pytest.mark.parametrize("name", ["../../outside", "/tmp/elsewhere", ".hidden", ".."])
    def test_a_name_that_leaves_the_data_folder_is_refused(self, reference, tmp_path, monkeypatch, caplog, name):
        spec = importlib.util.spec_from_file_location("import_pk", SCRIPT)
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        (tmp_path / "cwd").mkdir()
        monkeypatch.chdir(tmp_path / "cwd")
        assert script.main([str(reference), "--trust-pickle", "--name", name]) == 2
        assert "give a plain data set name" in caplog.text
        assert list((tmp_path / "cwd").iterdir()) == [], "something was written"

    @pytest.mark.parametrize("damage", ["missing split file", "sample without Y"])
    def test_a_user_error_is_one_line_naming_the_file(self, reference, tmp_path, damage):
        """Exit 2, no traceback, the last stderr line names the file (and the sample if one is broken)."""
        if damage == "missing split file":
            (reference / "dataSet_geolife_test.pk").unlink()
            expected = f"error: {reference / 'dataSet_geolife_test.pk'}: missing"
        else:
            with open(reference / "dataSet_geolife_validation.pk", "wb") as f:
                pickle.dump([reference_sample(1, [2, 3], 4), {"X": np.array([2])}], f)
            expected = f"error: {reference / 'dataSet_geolife_validation.pk'}: sample 1 lacks keys"
        result = import_pk(reference, "--trust-pickle", "--out", tmp_path / "out", cwd=tmp_path)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr
        assert not (tmp_path / "out").exists()
