"""``train.py`` end to end through Hydra, in subprocesses, on tiny synthetic data."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nextloc.io import exclusive_lock

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"correct@1", "correct@3", "correct@5", "correct@10", "rr", "ndcg", "f1", "total",
               "acc@1", "acc@5", "acc@10", "mrr", "loss", "acc@1_known", "acc@5_known", "mrr_known", "unseen_share"}
RESULT_KEYS = {"dataset", "model", "seed", "num_parameters", "epochs_run", "best_epoch", "wall_time_s",
               "nextloc_version", "test", "validation", "baselines", "data"}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One synthetic data cache shared by every run of the session, as sweep jobs share it."""
    return tmp_path_factory.mktemp("processed")


def train_args(*overrides, data_dir=None, smoke=True):
    """``train.py`` with the one-minute preset on one thread, unless ``smoke`` is False."""
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags go before the overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    args = [sys.executable, "train.py", *flags, *(("debug=smoke", "threads=1") if smoke else ()), *overrides]
    return args + ([f"dataset.processed_dir={data_dir}"] if data_dir is not None else [])


def train(*overrides, data_dir=None, smoke=True, check=True):
    """Run ``train.py`` and return the completed process."""
    args = train_args(*overrides, data_dir=data_dir, smoke=smoke)
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def metrics(run_dir: Path) -> dict:
    results = json.loads((run_dir / "test_results.json").read_text())
    return {"test": results["test"], "validation": results["validation"], "best_epoch": results["best_epoch"]}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("run") / "a"
    train(f"hydra.run.dir={run_dir}", "max_epochs=4", data_dir=data_dir)
    return run_dir


class TestTrainRun:
    def test_run_directory_holds_every_artefact(self, finished_run):
        """docs/reference.md: config, log, TensorBoard events, best checkpoint, results, per-user CSV."""
        assert (finished_run / ".hydra" / "config.yaml").is_file()
        assert "epoch 0:" in (finished_run / "train.log").read_text()
        assert list((finished_run / "tensorboard").glob("events.out.tfevents.*"))
        assert (finished_run / "checkpoints" / "best.pt").is_file()
        per_user = pd.read_csv(finished_run / "test_per_user.csv")
        results = json.loads((finished_run / "test_results.json").read_text())
        assert RESULT_KEYS <= set(results)
        assert METRIC_KEYS <= set(results["test"]) and METRIC_KEYS <= set(results["validation"])
        assert per_user["total"].sum() == results["test"]["total"]
        assert per_user.columns[:2].tolist() == ["user_id", "raw_user_id"]
        assert per_user["correct@1"].sum() == pytest.approx(results["test"]["correct@1"])  # expected counts: floats
        assert results["epochs_run"] == 4 and 0 <= results["best_epoch"] < 4

    def test_tensorboard_holds_the_hparams_entry(self, finished_run):
        events = EventAccumulator(str(finished_run / "tensorboard"))
        events.Reload()
        hparams = events.PluginTagToContent("hparams")
        assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
        assert b"model.hidden_size" in hparams["_hparams_/session_start_info"]
        assert "hparams/val_acc@1" in events.Tags()["scalars"]
        assert "val/loss" in events.Tags()["scalars"]

    def test_same_seed_gives_identical_metrics(self, finished_run, data_dir, tmp_path):
        train(f"hydra.run.dir={tmp_path / 'b'}", "max_epochs=4", data_dir=data_dir)
        assert metrics(tmp_path / "b") == metrics(finished_run)

    @pytest.mark.slow  # several processes, half a minute
    def test_killed_run_resumes_to_identical_metrics(self, data_dir, tmp_path):
        """Killed one epoch after its first early-stopping trigger (reloaded weights, lr x 0.1, schedule off)."""
        overrides = ["max_epochs=30", "early_stopping.patience=2", "early_stopping.min_delta=0.05",
                     "scheduler.warmup_epochs=1", "scheduler.decay_epochs=30"]
        train(f"hydra.run.dir={tmp_path / 'whole'}", *overrides, data_dir=data_dir)
        killed = tmp_path / "killed"
        args = train_args(f"hydra.run.dir={killed}", *overrides, data_dir=data_dir)
        process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = killed / "train.log"
        while process.poll() is None and (not log.exists() or log.read_text().count("(1/3)") < 2):
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (killed / "test_results.json").exists(), "the run finished before it could be killed"
        assert "trigger (1/3)" in log.read_text()
        train(f"resume={killed}", smoke=False)
        assert metrics(killed) == metrics(tmp_path / "whole")
        config = (killed / ".hydra" / "config.yaml").read_text()
        assert config == (tmp_path / "whole" / ".hydra" / "config.yaml").read_text(), "resume rewrote the config"

    def test_resuming_a_finished_run_keeps_its_results(self, finished_run):
        results = finished_run / "test_results.json"
        before = (results.read_text(), results.stat().st_mtime_ns)
        train(f"resume={finished_run}", smoke=False)
        assert (results.read_text(), results.stat().st_mtime_ns) == before

    def test_two_job_multirun_leaves_two_complete_runs(self, data_dir, tmp_path):
        train("-m", f"hydra.sweep.dir={tmp_path}", "model.hidden_size=8,16", "max_epochs=1", data_dir=data_dir)
        assert (tmp_path / "multirun.yaml").is_file()
        sizes = [json.loads((tmp_path / job / "test_results.json").read_text())["num_parameters"] for job in ("0", "1")]
        assert sizes[0] < sizes[1]


class TestUserErrors:
    def test_missing_processed_data_names_the_folder_and_the_command(self, tmp_path):
        result = train("dataset=geolife", f"dataset.processed_dir={tmp_path / 'nothing'}",
                       f"dataset.preprocess.raw_dir={tmp_path / 'no-raw'}",  # a checkout may hold the real raw data
                       f"hydra.run.dir={tmp_path / 'run'}", smoke=False, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2
        assert "python scripts/preprocess.py dataset=geolife" in output
        assert str(tmp_path / "nothing") in output
        assert "Traceback" not in output

    def test_invalid_value_stops_with_one_line_and_leaves_no_directory(self, tmp_path):
        result = train("model.hidden_size=0", f"hydra.run.dir={tmp_path / 'new'}", check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2
        assert "model.hidden_size=0 must be > 0" in output
        assert "Traceback" not in output
        assert not (tmp_path / "new").exists(), "a refused run left a directory that summaries count as incomplete"

    def test_a_run_refused_after_loading_the_data_leaves_no_directory(self, data_dir, tmp_path):
        """So that the corrected command can run in the same directory."""
        result = train(f"hydra.run.dir={tmp_path / 'new'}", "dataset.batch_size=100000", data_dir=data_dir,
                       check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "exceeds the" in output and "Traceback" not in output
        assert not (tmp_path / "new").exists()

    def test_another_config_pointed_at_a_finished_run_rewrites_nothing(self, finished_run, data_dir):
        before = _files(finished_run)
        result = train(f"hydra.run.dir={finished_run}", "max_epochs=4", "model.hidden_size=12", data_dir=data_dir,
                       check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "holds a run with another config" in output and "Traceback" not in output
        assert _files(finished_run) == before

    def test_unknown_group_option_lists_the_choices(self, tmp_path):
        result = train("dataset=nowhere", f"hydra.run.dir={tmp_path}", smoke=False, check=False)
        assert result.returncode != 0
        assert "nowhere" in result.stderr and "synthetic" in result.stderr and "geolife" in result.stderr

    def test_non_finite_loss_stops_without_results(self, data_dir, tmp_path):
        result = train("scheduler=constant", "optim.lr=1e30", "optim.grad_clip=1e30",
                       f"hydra.run.dir={tmp_path}", data_dir=data_dir, check=False)
        assert result.returncode == 2
        assert "at epoch 0, step" in result.stdout + result.stderr
        assert not (tmp_path / "test_results.json").exists()

    def test_resume_of_a_wrong_directory_leaves_nothing_behind(self, tmp_path):
        result = train(f"resume={tmp_path / 'typo'}", smoke=False, check=False)
        assert result.returncode == 2 and "give the directory of an earlier run" in result.stderr
        assert not (tmp_path / "typo").exists()

    def test_resume_of_a_checkpoint_that_does_not_fit_the_model_says_so(self, finished_run, tmp_path):
        """As from a version whose model named its parameters differently."""
        run = tmp_path / "old"
        shutil.copytree(finished_run, run)
        (run / "test_results.json").unlink()
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        state["model"] = {key.replace("encoder.layers.", "encoder.lstm."): v for key, v in state["model"].items()}
        state["finished"] = False
        torch.save(state, run / "checkpoints" / "last.pt")
        result = train(f"resume={run}", smoke=False, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "does not fit this model" in output
        assert "Traceback" not in output

    def test_a_run_directory_in_use_is_refused_and_left_alone(self, finished_run, data_dir, tmp_path):
        """resume= of a run another process holds; a sweep restarted while a job of it still runs."""
        results = finished_run / "test_results.json"
        before = results.read_text()
        with exclusive_lock(finished_run / ".lock"):
            result = train(f"resume={finished_run}", smoke=False, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "in use by another process" in output and "Traceback" not in output
        assert results.read_text() == before
        with exclusive_lock(tmp_path / "0" / ".lock"):
            result = train("-m", f"hydra.sweep.dir={tmp_path}", "model.hidden_size=8,16", "max_epochs=1",
                           data_dir=data_dir, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "1 of 2 jobs failed" in output and "in use by another process" in output
        assert [p.name for p in (tmp_path / "0").iterdir()] == [".lock"], "the job wrote into a directory in use"
        assert (tmp_path / "1" / "test_results.json").is_file()

    def test_resume_rejects_other_overrides(self, finished_run):
        result = train(f"resume={finished_run}", "optim.lr=0.1", smoke=False, check=False)
        assert result.returncode == 2
        assert "drop the other overrides" in result.stdout + result.stderr


def _files(folder: Path) -> dict:
    """Every file under ``folder`` with its content and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}
