"""A finished run directory: what it holds, and ``nextloc.load_run`` without Hydra or the data folder."""

import json
import shutil

import pandas as pd
import pytest
import torch

import nextloc
from nextloc.config import DatasetConfig, EarlyStoppingConfig, RunConfig, SyntheticConfig
from nextloc.data.batches import SplitTensors
from nextloc.data.datasets import load_dataset
from nextloc.errors import ConfigError, DataError
from nextloc.models.lstm import LSTMConfig
from nextloc.models.markov import MarkovConfig
from nextloc.training.loop import evaluate
from nextloc.training.run import run


def config(tmp_path, model):
    dataset = DatasetConfig(processed_dir=str(tmp_path / "processed"), batch_size=16,
                            synthetic=SyntheticConfig(n_users=5, n_days=50))
    return RunConfig(dataset=dataset, model=model, max_epochs=2, device="cpu", progress=False,
                     early_stopping=EarlyStoppingConfig(patience=1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One lstm run of two epochs and one markov run on the same tiny synthetic data."""
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for name, model in (("lstm", LSTMConfig(embed_dim=8, hidden_size=16)), ("markov", MarkovConfig())):
        out[name] = (tmp / name, config(tmp, model), run(config(tmp, model), tmp / name))
    return out


class TestCountModelRun:
    def test_writes_every_key_an_lstm_run_writes_with_no_epochs(self, runs):
        lstm, markov = runs["lstm"][2], runs["markov"][2]
        assert set(markov) == set(lstm)
        assert set(markov["test"]) == set(lstm["test"]) and set(markov["validation"]) == set(lstm["validation"])
        assert markov["epochs_run"] == 0 and lstm["epochs_run"] == 2
        assert markov["test"]["loss"] is None

    def test_num_parameters_is_the_number_of_stored_counts(self, runs):
        run_dir = runs["markov"][0]
        state = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)["model"]
        counts = sum(v.numel() for k, v in state.items() if k.endswith(".counts"))
        assert counts > 0 and runs["markov"][2]["num_parameters"] == counts


class TestRunDirectory:
    def test_holds_the_data_tables_and_fingerprint(self, runs, tmp_path):
        run_dir, cfg, _ = runs["lstm"]
        data = load_dataset(cfg.dataset)
        info = json.loads((run_dir / "data/data.json").read_text())
        assert (info["num_locations"], info["num_users"]) == (data.num_locations, data.num_users)
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "data/locations.parquet"), data.locations)
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "data/users.parquet"), data.users)

    def test_a_run_on_other_data_is_refused(self, runs, tmp_path):
        run_dir, cfg, _ = runs["markov"]
        other = tmp_path / "other"
        shutil.copytree(run_dir, other)
        (other / "test_results.json").unlink()
        info = json.loads((other / "data/data.json").read_text())
        (other / "data/data.json").write_text(json.dumps(info | {"fingerprint": "0" * 64}))
        with pytest.raises(ConfigError, match="other data"):
            run(cfg, other)


class TestLoadRun:
    @pytest.mark.parametrize("name", ["lstm", "markov"])
    def test_the_loaded_model_scores_the_test_split_as_the_run_did(self, runs, tmp_path, name):
        """Loaded from a copy of the run directory, after the processed data folder is gone."""
        run_dir, cfg, results = runs[name]
        data = load_dataset(cfg.dataset)  # read it before it is moved away
        split = SplitTensors(data.staypoints["test"], data.samples["test"])
        copy = tmp_path / "copy"
        shutil.copytree(run_dir, copy)
        moved = tmp_path / "moved"
        shutil.move(cfg.dataset.processed_dir, moved)
        try:
            trained = nextloc.load_run(copy)
        finally:
            shutil.move(moved, cfg.dataset.processed_dir)
        assert not trained.model.training and trained.config.model == cfg.model
        metrics = evaluate(trained.model, split, batch_size=16, device=torch.device("cpu")).compute()
        assert metrics["acc@1"] == results["test"]["acc@1"] and metrics["mrr"] == results["test"]["mrr"]
        assert trained.locations is not None and len(trained.users) == data.num_users - 1

    def test_a_directory_without_a_finished_model_is_refused(self, tmp_path):
        with pytest.raises(DataError, match="finished run"):
            nextloc.load_run(tmp_path)
