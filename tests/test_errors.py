"""Environment mistakes become one line that names the path and the fix."""

import errno
import importlib.util
from pathlib import Path

import pytest

from nextloc.errors import StorageError, storage_error

ROOT = Path(__file__).resolve().parents[1]


class TestStorageError:
    @pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                             (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
    def test_names_the_path_and_the_cause(self, code, words):
        err = storage_error(OSError(code, "os message", "/data/processed/x.parquet"))
        assert isinstance(err, StorageError) and str(err).startswith("/data/processed/x.parquet: ") and words in str(err)

    def test_other_errors_are_left_alone(self):
        assert storage_error(OSError(errno.ENOENT, "missing", "/x")) is None
        assert storage_error(ValueError("x")) is None

    def test_preprocess_script_reports_a_full_disk_in_one_line(self, monkeypatch, capsys):
        spec = importlib.util.spec_from_file_location("preprocess_script", ROOT / "scripts" / "preprocess.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)

        def full(config):
            raise OSError(errno.ENOSPC, "No space left on device", "/data/processed/geolife/.tmp")

        monkeypatch.setattr(script, "prepare_dataset", full)
        assert script.main([]) == 2
        assert capsys.readouterr().err == "error: /data/processed/geolife/.tmp: the disk is full; free space or write elsewhere\n"
