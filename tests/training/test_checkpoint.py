import random

import numpy as np
import pytest
import torch

from nextloc.errors import DataError
from nextloc.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint


class Unsaveable:
    """Fails while being pickled, half-way through a save."""

    def __reduce__(self):
        raise RuntimeError("cannot be saved")


class Arbitrary:
    """A plain object: unpickling it would run code, so weights_only refuses it."""


def state():
    torch.manual_seed(0)
    return {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 4, "lr": 8.75e-4, "name": "lstm",
            "history": [1.5, 1.25], "validation": {"acc@1": 29.8, "total": 7}}


def draws(generator):
    """One draw from every source a training epoch uses, Gaussian caches included."""
    return (torch.rand(3).tolist(), np.random.rand(2).tolist(), np.random.randn(3).tolist(),
            random.random(), random.gauss(0, 1), torch.randperm(10, generator=generator).tolist())


class TestSaveCheckpoint:
    def test_round_trip_with_weights_only(self, tmp_path):
        save_checkpoint(tmp_path / "best.pt", state())
        loaded = load_checkpoint(tmp_path / "best.pt")
        expected = state()
        assert {k: v for k, v in loaded.items() if k != "model"} == {k: v for k, v in expected.items() if k != "model"}
        assert loaded["model"].keys() == expected["model"].keys()
        assert all(torch.equal(loaded["model"][k], expected["model"][k]) for k in expected["model"])

    def test_save_leaves_only_the_checkpoint(self, tmp_path):
        save_checkpoint(tmp_path / "run" / "best.pt", state())
        assert [p.name for p in (tmp_path / "run").iterdir()] == ["best.pt"]

    def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_temporary_file(self, tmp_path):
        save_checkpoint(tmp_path / "best.pt", state())
        before = (tmp_path / "best.pt").read_bytes()
        with pytest.raises(RuntimeError, match="cannot be saved"):
            save_checkpoint(tmp_path / "best.pt", {"epoch": 5, "bad": Unsaveable()})
        assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
        assert (tmp_path / "best.pt").read_bytes() == before


class TestLoadCheckpoint:
    def test_truncated_checkpoint_is_refused_by_name(self, tmp_path):
        path = tmp_path / "best.pt"
        save_checkpoint(path, state())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(DataError, match="best.pt: not a readable checkpoint"):
            load_checkpoint(path)

    def test_missing_checkpoint_is_refused_by_name(self, tmp_path):
        with pytest.raises(DataError, match="last.pt: checkpoint not found"):
            load_checkpoint(tmp_path / "last.pt")

    def test_arbitrary_objects_are_not_unpickled(self, tmp_path):
        torch.save({"epoch": 1, "obj": Arbitrary()}, tmp_path / "foreign.pt")
        with pytest.raises(DataError, match="foreign.pt: not a readable checkpoint"):
            load_checkpoint(tmp_path / "foreign.pt")


class TestRngState:
    def test_restore_reproduces_the_next_draws_through_a_checkpoint(self, tmp_path):
        generator = torch.Generator().manual_seed(3)
        np.random.randn(1)  # leave a cached Gaussian in numpy's legacy state
        random.gauss(0, 1)  # and in random's
        save_checkpoint(tmp_path / "last.pt", {"rng": rng_state(generator)})
        first = draws(generator)
        restore_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"], generator)
        assert draws(generator) == first

    def test_draws_differ_without_restore(self):
        """The check above is not vacuous: the next draws are new numbers."""
        generator = torch.Generator().manual_seed(3)
        assert draws(generator) != draws(generator)
