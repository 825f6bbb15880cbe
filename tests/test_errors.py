"""Environment mistakes become one line that names the path and the fix."""

import errno
import importlib.util
from pathlib import Path

import pytest

from nextloc.errors import MemoryShortage, StorageError, memory_error, storage_error

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

    @pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
    def test_a_full_disk_under_torch_save_is_found_behind_its_runtime_error(self):
        """torch.save into a Python file: a RuntimeError whose context is the OSError, or the OSError of the close."""
        import torch

        with pytest.raises((RuntimeError, OSError)) as raised, open("/dev/full", "wb") as file:
            torch.save({"w": torch.zeros(100_000)}, file)
        err = storage_error(raised.value)
        assert isinstance(err, StorageError) and "the disk is full" in str(err)

    def test_an_error_raised_while_handling_a_full_disk_is_named_as_one(self):
        try:
            try:
                raise OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/.last.pt.x.tmp")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
        except RuntimeError as err:
            wrapped = err
        assert wrapped.__cause__ is None and storage_error(wrapped) is not None  # found through __context__

    def test_running_out_of_memory_is_one_line_with_the_fix(self):
        err = memory_error(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                                        "memory: you tried to allocate 128000000000 bytes.\nmore"))
        assert isinstance(err, MemoryShortage) and "smaller model sizes" in str(err) and "\n" not in str(err)
        assert memory_error(RuntimeError("shape mismatch")) is None

    def test_an_output_folder_that_cannot_be_written_stops_before_hydra_with_one_line(self, tmp_path, monkeypatch,
                                                                                      capsys):
        import tempfile

        from nextloc.output_check import check_writable

        def read_only(**kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(kwargs["dir"]) + "/tmpabc")

        monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
        with pytest.raises(SystemExit) as exit_:
            check_writable(tmp_path / "runs" / "a", "hydra.run.dir")
        assert exit_.value.code == 2
        assert capsys.readouterr().err == (f"error: {tmp_path}: the file system is read-only; write elsewhere "
                                           f"(for {tmp_path / 'runs' / 'a'}; hydra.run.dir=<folder> chooses another place)\n")
        assert list(tmp_path.iterdir()) == []

    def test_preprocess_script_reports_a_full_disk_in_one_line(self, monkeypatch, capsys):
        spec = importlib.util.spec_from_file_location("preprocess_script", ROOT / "scripts" / "preprocess.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)

        def full(config):
            raise OSError(errno.ENOSPC, "No space left on device", "/data/processed/geolife/.tmp")

        monkeypatch.setattr(script, "prepare_dataset", full)
        assert script.main([]) == 2
        assert capsys.readouterr().err == "error: /data/processed/geolife/.tmp: the disk is full; free space or write elsewhere\n"
