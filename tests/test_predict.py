"""Prediction from visits (``TrainedRun.predict``, ``scripts/predict.py``) and export with ``torch.export``."""

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import nextloc
from nextloc.config import DatasetConfig, EarlyStoppingConfig, RunConfig, SyntheticConfig
from nextloc.data.batches import SplitTensors
from nextloc.data.datasets import load_dataset
from nextloc.errors import DataError
from nextloc.models.lstm import LSTMConfig
from nextloc.models.markov import MarkovConfig
from nextloc.models.mhsa import MHSAConfig
from nextloc.models.pointer import PointerConfig
from nextloc.training.run import run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "predict.py"
K = 5


def script():
    spec = importlib.util.spec_from_file_location("predict_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two-epoch lstm, mhsa and pointer runs and a markov run on tiny synthetic data, and the data set."""
    tmp = tmp_path_factory.mktemp("predict")
    dataset = DatasetConfig(processed_dir=str(tmp / "processed"), batch_size=16,
                            synthetic=SyntheticConfig(n_users=5, n_days=50))
    runs = {}
    models = (("lstm", LSTMConfig(embed_dim=8, hidden_size=16)), ("markov", MarkovConfig()),
              ("mhsa", MHSAConfig(embed_dim=16, num_heads=2, feedforward_dim=32)),
              ("pointer", PointerConfig(embed_dim=16, num_heads=2, feedforward_dim=32)))
    for name, model in models:
        config = RunConfig(dataset=dataset, model=model, max_epochs=2, device="cpu", progress=False,
                           early_stopping=EarlyStoppingConfig(patience=1))
        run(config, tmp / name)
        runs[name] = nextloc.load_run(tmp / name)
    return runs, load_dataset(dataset)


def visits_of(data, split="test") -> pd.DataFrame:
    """A split's staypoints as a user would give them: raw ids, clock times, one line per visit.

    The synthetic staypoints carry day numbers, not dates: each user's days are
    placed so that the dates have the staypoints' weekdays. A place the
    training split never saw gets a raw id no location has.
    """
    sp = data.staypoints[split]
    known = data.locations[data.locations["location_id"] > 1]
    raw = pd.Series(known["raw_location_id"].to_numpy(), index=known["location_id"].to_numpy())
    offset = (sp["weekday"] - sp["start_day"]) % 7  # one value per user; 2024-01-01 is a Monday
    start = pd.Timestamp("2024-01-01") + pd.to_timedelta(sp["start_day"] + offset, unit="D") \
        + pd.to_timedelta(sp["start_min"], unit="min")
    users = data.users.set_index("user_id")["raw_user_id"]
    return pd.DataFrame({
        "user_id": users.reindex(sp["user_id"]).to_numpy(),
        "location_id": raw.reindex(sp["location_id"]).fillna(-999).astype(np.int64).to_numpy(),
        "started_at": start.dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "finished_at": (start + pd.to_timedelta(sp["duration"], unit="min")).dt.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def evaluation_top_k(trained_run, data, samples):
    """The model's top-k classes and scores for test samples, as evaluation computes them (padding and unseen out)."""
    split = SplitTensors(data.staypoints["test"], data.samples["test"], trained_run.model.inputs)
    with torch.no_grad():
        scores = trained_run.model(split.batch(torch.as_tensor(samples)))
    scores[:, :2] = -torch.inf
    top = scores.topk(K, dim=1)
    raw = data.locations.drop_duplicates("location_id").set_index("location_id")["raw_location_id"]
    return raw.reindex(top.indices.reshape(-1).numpy()).to_numpy().reshape(len(samples), K), top.values.numpy()


class TestPredictionEqualsEvaluation:
    @pytest.mark.parametrize("model", ["lstm", "markov", "mhsa", "pointer"])
    def test_test_histories_through_the_csv_path_rank_as_evaluation_does(self, trained, model, tmp_path):
        """Each chosen test sample: its user's whole test split in a CSV, --at the target's start."""
        runs, data = trained
        visits = visits_of(data)
        samples = data.samples["test"]
        chosen = np.linspace(0, len(samples) - 1, 8).astype(int)
        expected_ids, expected_scores = evaluation_top_k(runs[model], data, chosen)
        for i, sample in enumerate(chosen):
            target = samples["target_index"][sample]
            user_rows = data.staypoints["test"]["user_id"] == data.staypoints["test"]["user_id"][target]
            visits[user_rows.to_numpy()].to_csv(tmp_path / "visits.csv", index=False)
            out = tmp_path / f"{i}.csv"
            args = [str(runs[model].run_dir), str(tmp_path / "visits.csv"), "--k", str(K),
                    "--at", visits["started_at"][target], "-o", str(out)]
            assert script().main(args) == 0
            predicted = pd.read_csv(out)
            history = samples["history_end"][sample] - samples["history_start"][sample]
            assert (predicted["history_length"] == history).all(), "the history window differs from training's"
            assert predicted["location_id"].tolist() == expected_ids[i].tolist()
            np.testing.assert_allclose(predicted["score"], expected_scores[i], rtol=1e-5, atol=1e-5)

    def test_coordinates_find_the_same_places_as_raw_ids(self, trained):
        runs, data = trained
        visits = visits_of(data)
        centroids = data.locations.drop_duplicates("raw_location_id").set_index("raw_location_id")
        located = visits.drop(columns="location_id")
        place = centroids.reindex(visits["location_id"])
        far = visits["location_id"].to_numpy() == -999  # a place no location holds: far from every centroid
        located["latitude"] = np.where(far, 0.0, place["latitude"].to_numpy() + 5e-5)  # ~5 m north
        located["longitude"] = np.where(far, 0.0, place["longitude"].to_numpy())
        pd.testing.assert_frame_equal(runs["lstm"].predict(located, k=K), runs["lstm"].predict(visits, k=K))


class TestUsersAndPlacesTheModelHasNotSeen:
    def test_an_unknown_user_gets_the_mean_user_and_a_warning(self, trained, caplog):
        runs, data = trained
        lstm = runs["lstm"]
        visits = visits_of(data)
        first = visits[visits["user_id"] == visits["user_id"].iloc[0]].copy()
        known = lstm.predict(first, k=K)
        stranger = first.assign(user_id="someone new")
        with caplog.at_level(logging.WARNING):
            unknown = lstm.predict(stranger, k=K)
        assert "not in the training data: someone new" in caplog.text
        assert not unknown["user_known"].any() and known["user_known"].all()
        encoded = int(lstm.users.loc[lstm.users["raw_user_id"] == first["user_id"].iloc[0], "user_id"].iloc[0])
        weights = lstm.model.user.weight
        saved = weights.data[encoded].clone()
        try:
            weights.data[encoded] = weights.data[1:].mean(0)
            as_mean_user = lstm.predict(first, k=K)
        finally:
            weights.data[encoded] = saved
        np.testing.assert_allclose(unknown["score"], as_mean_user["score"], rtol=1e-6)
        assert unknown["location_id"].tolist() == as_mean_user["location_id"].tolist()

    def test_an_unknown_place_is_the_unseen_class_and_never_predicted(self, trained):
        runs, data = trained
        visits = visits_of(data)
        one_user = visits[visits["user_id"] == visits["user_id"].iloc[0]]
        renamed = one_user.assign(location_id=123456789)  # no such place
        predicted = runs["markov"].predict(renamed, k=K)
        assert predicted["probability"].isna().all(), "a count model's scores are not probabilities"
        assert not predicted["location_id"].isin([123456789]).any()
        assert predicted["location_id"].isin(data.locations["raw_location_id"]).all()


class TestBadInput:
    @pytest.mark.parametrize(
        "content, message",
        [
            ("user_id,started_at,finished_at\nu1,2024-01-01T08:00,2024-01-01T09:00\n", "lack the columns ['location_id (or latitude and longitude)']"),
            ("user_id,location_id,started_at,finished_at\nu1,3,2024-01-01T08:00,2024-01-01T09:00\n"
             "u1,3,yesterday,2024-01-01T10:00\n", "row 2, column started_at: 'yesterday' is not a time"),
            ("user_id,location_id,started_at,finished_at\n", "holds no visit"),
            ("user_id,location_id,started_at,finished_at\nu1,3.5,2024-01-01T08:00,2024-01-01T09:00\n",
             "row 1, column location_id: 3.5 is not a location id of this data set"),
            ("", "empty (0 bytes"),
        ],
    )
    def test_one_line_exit_2_and_nothing_written(self, trained, tmp_path, caplog, content, message):
        runs, _ = trained
        (tmp_path / "visits.csv").write_text(content)
        out = tmp_path / "out.csv"
        with caplog.at_level(logging.ERROR):
            code = script().main([str(runs["lstm"].run_dir), str(tmp_path / "visits.csv"), "-o", str(out)])
        assert code == 2 and message in caplog.text and not out.exists()

    def test_a_run_that_has_not_finished_is_named(self, tmp_path, caplog):
        (tmp_path / "visits.csv").write_text("user_id,location_id,started_at,finished_at\n")
        with caplog.at_level(logging.ERROR):
            assert script().main([str(tmp_path), str(tmp_path / "visits.csv")]) == 2
        assert "run_config.json: missing; give the directory of a finished run" in caplog.text

    def test_an_existing_output_is_kept_without_force(self, trained, tmp_path, caplog):
        runs, data = trained
        visits_of(data).to_csv(tmp_path / "visits.csv", index=False)
        (tmp_path / "out.csv").write_text("mine")
        with caplog.at_level(logging.ERROR):
            assert script().main([str(runs["lstm"].run_dir), str(tmp_path / "visits.csv"), "-o",
                                  str(tmp_path / "out.csv")]) == 2
        assert (tmp_path / "out.csv").read_text() == "mine" and "add --force" in caplog.text

    def test_a_bad_time_for_at_is_one_error(self, trained):
        runs, data = trained
        with pytest.raises(DataError, match="at='tomorrow' is not a time"):
            runs["lstm"].predict(visits_of(data), at="tomorrow")


class TestExport:
    @pytest.mark.parametrize("model", ["lstm", "mhsa", "pointer"])
    def test_the_exported_program_scores_as_the_eager_model_for_any_batch_size(self, trained, tmp_path, model):
        from nextloc.export import META, PlainInputs, example_inputs

        runs, _ = trained
        exported = runs[model]
        assert script().main([str(exported.run_dir), "--export", str(tmp_path / "model.pt2"), "--max-length", "12"]) == 0
        extra = {META: ""}
        program = torch.export.load(str(tmp_path / "model.pt2"), extra_files=extra).module()
        names = ["location", "length", "user", *exported.model.inputs]
        assert json.loads(extra[META])["inputs"] == names
        eager = PlainInputs(exported.model, exported.model.inputs).eval()
        for batch_size in (1, 3, 40):
            inputs = example_inputs(exported, 12, batch_size)
            inputs[1][:] = torch.randint(1, 13, (batch_size,), generator=torch.Generator().manual_seed(batch_size))
            with torch.no_grad():
                torch.testing.assert_close(program(*inputs), eager(*inputs), rtol=1e-5, atol=1e-5)

    def test_a_count_model_is_refused_with_one_line(self, trained, tmp_path, caplog):
        runs, _ = trained
        with caplog.at_level(logging.ERROR):
            assert script().main([str(runs["markov"].run_dir), "--export", str(tmp_path / "m.pt2")]) == 2
        assert "fits by counting" in caplog.text and not (tmp_path / "m.pt2").exists()
