"""Sweeps end to end: launchers, failures, restarts, the summary and Optuna searches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nextloc.io import exclusive_lock

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["debug=smoke", "max_epochs=2"]


def run(script, *args, check=True):
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return f"dataset.processed_dir={tmp_path_factory.mktemp('processed')}"


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "test_results.json").read_text())


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, data_dir):
    """Four jobs: hidden size 8 with seeds 1 and 2 finish; hidden size -1 fails for both seeds."""
    sweep = tmp_path_factory.mktemp("sweep")
    result = run("train.py", "-m", *SMOKE, "threads=1", data_dir, f"hydra.sweep.dir={sweep}", "seed=1,2",
                 "model.hidden_size=8,-1", check=False)
    assert result.returncode == 1 and "2 of 4 jobs failed" in result.stdout + result.stderr, result.stderr[-3000:]
    return sweep


class TestMultirun:
    def test_a_failed_job_is_recorded_and_the_others_go_on(self, seed_sweep):
        failed = [p.parent.name for p in seed_sweep.glob("*/failed.json")]
        finished = [p.parent.name for p in seed_sweep.glob("*/test_results.json")]
        assert len(failed) == 2 and len(finished) == 2
        error = json.loads((seed_sweep / failed[0] / "failed.json").read_text())["error"]
        assert "model.hidden_size=-1 must be > 0" in error

    def test_restart_in_the_same_sweep_dir_skips_finished_jobs(self, seed_sweep, data_dir):
        finished = sorted(seed_sweep.glob("*/test_results.json"))
        before = [(p.read_text(), p.stat().st_mtime_ns) for p in finished]
        out = run("train.py", "-m", *SMOKE, "threads=1", data_dir, f"hydra.sweep.dir={seed_sweep}",
                  "seed=1,2", "model.hidden_size=8,-1", check=False)
        assert out.returncode == 1
        assert [(p.read_text(), p.stat().st_mtime_ns) for p in finished] == before
        assert "has finished already" in out.stdout + out.stderr

    def test_a_restart_with_another_config_rewrites_no_record(self, seed_sweep, data_dir):
        """Job 0 ran seed 1 with hidden size 8; the same job with hidden size 12 is refused and counted as failed."""
        job = seed_sweep / "0"
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(job.rglob("*")) if p.is_file()}
        out = run("train.py", "-m", *SMOKE, "threads=1", data_dir, f"hydra.sweep.dir={seed_sweep}",
                  "seed=1", "model.hidden_size=12", check=False)
        output = out.stdout + out.stderr
        assert out.returncode == 1 and "1 of 1 jobs failed" in output and "holds a run with another config" in output
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(job.rglob("*")) if p.is_file()} == before

    def test_joblib_jobs_run_in_parallel_with_their_share_of_the_cores(self, tmp_path, data_dir):
        run("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMOKE, data_dir,
            f"hydra.sweep.dir={tmp_path}", "model.hidden_size=8,16")
        share = max(1, (os.cpu_count() or 1) // 2)
        assert all(f", {share} torch threads" in (tmp_path / job / "train.log").read_text() for job in ("0", "1"))
        assert all((tmp_path / job / "test_results.json").is_file() for job in ("0", "1"))

    @pytest.mark.slow  # several processes, half a minute
    def test_submitit_local_runs_a_job_as_its_own_process(self, tmp_path, data_dir):
        run("train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *SMOKE, data_dir,
            f"hydra.sweep.dir={tmp_path}", "model.hidden_size=8")
        assert results(tmp_path / "0")["epochs_run"] == 2
        assert ", 1 torch threads" in (tmp_path / "0" / "train.log").read_text()
        assert list((tmp_path / ".submitit").glob("*/*_log.out"))


class TestSummarize:
    def test_table_lists_every_job_ranked_by_validation_with_failures_last(self, seed_sweep):
        run("scripts/summarize.py", str(seed_sweep))
        table = pd.read_csv(seed_sweep / "summary.csv")
        assert len(table) == 4
        assert list(table["status"]) == ["finished", "finished", "failed", "failed"]
        assert table["val_acc@1"].iloc[0] >= table["val_acc@1"].iloc[1]
        assert table["error"].iloc[2].startswith("ConfigError")
        assert (seed_sweep / "summary.md").read_text().startswith("| job |")

    def test_seeds_of_one_configuration_are_grouped_with_mean_and_std(self, seed_sweep):
        run("scripts/summarize.py", str(seed_sweep))
        grouped = pd.read_csv(seed_sweep / "summary_by_config.csv")
        jobs = pd.read_csv(seed_sweep / "summary.csv")
        finished = jobs[jobs["status"] == "finished"]["test_acc@1"]
        assert len(grouped) == 1 and grouped["seeds"].iloc[0] == 2
        assert grouped["test_acc@1"].iloc[0] == f"{finished.mean():.2f} ± {finished.std():.2f}"
        known = jobs[jobs["status"] == "finished"]["test_mrr_known"]
        assert grouped["test_mrr_known"].iloc[0] == f"{known.mean():.2f} ± {known.std():.2f}"
        assert {"test_acc@10", "test_ndcg", "test_f1", "test_acc@1_known"} <= set(grouped.columns)
        assert grouped["parameters"].iloc[0] == f"{jobs['num_parameters'].iloc[0]:,.0f}"

    def test_a_model_sweep_with_count_models_gives_one_row_per_model(self, tmp_path, data_dir):
        """lstm, markov, mostfreq and persistent over two seeds: four rows of two seeds each; the count
        models ran no epoch and give the same numbers for every seed."""
        args = ("train.py", "-m", "debug=smoke", "max_epochs=1", "threads=1", data_dir, f"hydra.sweep.dir={tmp_path}",
                "model=lstm,markov,mostfreq,persistent", "seed=1,2")
        run(*args)
        run("scripts/summarize.py", str(tmp_path))
        jobs = pd.read_csv(tmp_path / "summary.csv")
        assert (jobs["status"] == "finished").all() and len(jobs) == 8
        counting = jobs[jobs["model"] != "lstm"]
        assert (counting["epochs_run"] == 0).all()
        assert (counting.groupby("model")["test_acc@1"].nunique() == 1).all()
        grouped = pd.read_csv(tmp_path / "summary_by_config.csv")
        assert sorted(grouped["model"]) == ["lstm", "markov", "mostfreq", "persistent"]
        assert (grouped["seeds"] == 2).all()

    def test_damaged_files_are_named_and_the_rest_of_the_table_stands(self, seed_sweep, tmp_path):
        """Job 0's results are truncated and job 1's failure record is not JSON: both are listed as unreadable.
        Job 2's settings come from its validated config, whatever its .hydra/overrides.yaml says."""
        import shutil

        sweep = tmp_path / "sweep"
        shutil.copytree(seed_sweep, sweep)
        for name in ("summary.csv", "summary_by_config.csv"):
            (sweep / name).unlink(missing_ok=True)
        results_file = sweep / "0" / "test_results.json"
        results_file.write_text(results_file.read_text()[:100])
        (sweep / "1" / "failed.json").write_text('{"status": "fai')
        (sweep / "2" / ".hydra" / "overrides.yaml").write_text("- seed=2\n- model.hidden_size=99\n")
        result = run("scripts/summarize.py", str(sweep))
        table = pd.read_csv(sweep / "summary.csv").set_index("job")
        assert table.loc[0, "status"] == table.loc[1, "status"] == "unreadable"
        assert table.loc[2, "status"] == "finished" and table.loc[3, "status"] == "failed"
        assert table.loc[2, "model.hidden_size"] == 8 and table.loc[3, "model.hidden_size"] == -1
        assert table.loc[0, "error"].startswith("ValueError: test_results.json: ") and str(sweep / "0") in result.stderr
        assert table.loc[1, "error"].startswith("ValueError: failed.json: ")

    def test_a_folder_that_does_not_exist_is_named(self, tmp_path, capsys):
        import importlib.util

        spec = importlib.util.spec_from_file_location("summarize", ROOT / "scripts" / "summarize.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        assert script.main([str(tmp_path / "typo")]) == 2
        assert f"{tmp_path / 'typo'}: no such folder" in capsys.readouterr().err

    def test_plot_writes_a_figure_per_swept_key(self, seed_sweep):
        run("scripts/summarize.py", str(seed_sweep), "--plot")
        assert (seed_sweep / "plots" / "val_acc@1_vs_model.hidden_size.png").stat().st_size > 0


def tune(study_dir, *args, check=True):
    return run("scripts/tune.py", *SMOKE, "threads=1", "--dir", str(study_dir), "--pruner-startup-trials", "1",
               "--pruner-warmup-epochs", "0", *args, check=check)


WORKER = ["--n-trials", "1", "--pruner", "none", "--heartbeat", "1", "max_epochs=4"]


def start_worker(study_dir, data_dir, name):
    """A ``tune.py`` worker in the background (one trial of 4 epochs, a heartbeat every second), logging to <name>.err."""
    with (study_dir / f"{name}.err").open("w") as err:
        worker = subprocess.Popen([sys.executable, "scripts/tune.py", *SMOKE, "threads=1", data_dir, "--dir",
                                   str(study_dir), *WORKER], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    worker.err = study_dir / f"{name}.err"
    return worker


def wait_for(condition, worker, limit=120):
    deadline = time.monotonic() + limit
    while not condition():
        assert worker.poll() is None, "the worker ended first: " + worker.err.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class TestTune:
    def test_any_error_in_a_trial_fails_that_trial_and_the_study_goes_on(self, tmp_path, data_dir):
        """Trial 0 meets an unexpected RuntimeError: it is recorded as failed (with failed.json), trial 1 runs."""
        from nextloc.config import compose_run_config
        from nextloc.tuning import Parameter, optimize

        calls = []

        def compose(overrides):
            calls.append(overrides)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return compose_run_config(overrides)

        study = optimize(compose, [*SMOKE, "max_epochs=1", "threads=1", "progress=false", data_dir],
                         [Parameter("optim.lr", "float", 1e-3, 1e-2)], tmp_path, n_trials=2, study_name="t")
        states = [t.state for t in study.trials]
        assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
        assert json.loads((tmp_path / "trial_0" / "failed.json").read_text())["error"] == "RuntimeError: boom"

    @pytest.mark.slow  # several processes, half a minute
    def test_study_prunes_a_hopeless_trial_and_resumes(self, tmp_path, data_dir):
        """Trial 0 learns; trial 1 has lr 1e-4 and is below trial 0's curve from its first epoch on."""
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        study = optuna.create_study(study_name="lstm", storage=storage, direction="maximize")
        base = {"model.embed_dim": 32, "model.hidden_size": 64, "model.num_layers": 1, "model.fc_dropout": 0.1,
                "dataset.batch_size": 32}
        study.enqueue_trial(base | {"optim.lr": 3e-3})
        study.enqueue_trial(base | {"optim.lr": 1e-4, "model.hidden_size": 64})
        tune(tmp_path, data_dir, "max_epochs=4", "--n-trials", "2")
        states = [t.state for t in optuna.load_study(study_name="lstm", storage=storage).trials]
        assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
        assert (tmp_path / "trial_1" / "pruned.json").is_file()
        tune(tmp_path, data_dir, "max_epochs=4", "--n-trials", "1")
        assert len(optuna.load_study(study_name="lstm", storage=storage).trials) == 3

    def test_objective_is_the_best_validation_metric(self, tmp_path, data_dir):
        tune(tmp_path, data_dir, "--n-trials", "1", "--pruner", "none")
        study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{tmp_path / 'study.db'}")
        assert study.trials[0].value == results(tmp_path / "trial_0")["validation"]["acc@1"]

    @pytest.mark.slow  # several processes, half a minute
    def test_two_workers_share_one_study(self, tmp_path, data_dir):
        storage = f"sqlite:///{tmp_path / 'shared.db'}"
        args = [sys.executable, "scripts/tune.py", *SMOKE, "threads=1", data_dir, "--storage", storage,
                "--study-name", "shared", "--n-trials", "1", "--pruner", "none"]
        workers = [subprocess.Popen([*args, "--dir", str(tmp_path / f"worker{i}")], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
        assert all(w.wait(timeout=600) == 0 for w in workers), [w.stderr.read()[-2000:] for w in workers]
        trials = optuna.load_study(study_name="shared", storage=storage).trials
        assert sorted(t.number for t in trials) == [0, 1]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    @pytest.mark.slow  # several processes, half a minute
    def test_a_dead_workers_trial_is_run_again_from_its_last_epoch(self, tmp_path, data_dir):
        """kill -9 after trial 0's first epoch; two silent heartbeats later the next worker continues it, after
        waiting for the run directory's lock (held here as by a worker that is not dead after all)."""
        dead = start_worker(tmp_path, data_dir, "a")
        wait_for(lambda: (tmp_path / "trial_0" / "checkpoints" / "last.pt").exists(), dead)
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        with exclusive_lock(tmp_path / "trial_0" / ".lock"):
            time.sleep(2.5)
            retrying = start_worker(tmp_path, data_dir, "b")
            wait_for(lambda: "waiting for it to end" in (tmp_path / "trial_0" / "train.log").read_text(), retrying)
        assert retrying.wait(timeout=300) == 0, retrying.err.read_text()[-3000:]
        self.assert_retried_in_place(tmp_path)

    @pytest.mark.slow  # several processes, half a minute
    def test_a_worker_whose_trial_was_taken_over_leaves_the_run_and_goes_on(self, tmp_path, data_dir):
        """Trial 0 is declared dead while its worker still runs (as after a frozen machine): it stops at its
        next epoch without marking the run failed, and the worker ends normally."""
        worker = start_worker(tmp_path, data_dir, "a")
        wait_for(lambda: (tmp_path / "trial_0" / "checkpoints" / "last.pt").exists(), worker)
        optuna.load_study(study_name="lstm", storage=f"sqlite:///{tmp_path / 'study.db'}").tell(
            0, state=optuna.trial.TrialState.FAIL)
        assert worker.wait(timeout=300) == 0, worker.err.read_text()[-3000:]
        assert "trial 0 was taken over by another worker" in worker.err.read_text()
        assert not (tmp_path / "trial_0" / "test_results.json").exists()
        assert not (tmp_path / "trial_0" / "failed.json").exists()

    @staticmethod
    def assert_retried_in_place(study_dir):
        dead, retry = optuna.load_study(study_name="lstm", storage=f"sqlite:///{study_dir / 'study.db'}").trials
        assert (dead.state, retry.state) == (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE)
        assert retry.params == dead.params
        log = (study_dir / "trial_0" / "train.log").read_text()
        assert "resuming" in log and log.count("epoch 0:") == 1 and not (study_dir / "trial_1").exists()
        assert retry.value == results(study_dir / "trial_0")["validation"]["acc@1"]
        assert results(study_dir / "trial_0")["epochs_run"] == 4

    def test_bad_heartbeat_stops_with_one_line(self, tmp_path):
        result = tune(tmp_path, "--heartbeat", "0", "--n-trials", "1", check=False)
        assert result.returncode == 2 and "heartbeat=0" in result.stderr and "Traceback" not in result.stderr

    @pytest.mark.parametrize("n", ["0", "-3"])
    def test_no_positive_trial_count_stops_with_one_line(self, tmp_path, n):
        result = tune(tmp_path, "--n-trials", n, check=False)
        assert result.returncode == 2 and f"--n-trials={n}" in result.stderr and "Traceback" not in result.stderr

    @pytest.mark.slow  # several processes, half a minute
    def test_every_worker_of_a_study_uses_its_heartbeat(self, tmp_path):
        """Workers judge each other's trials by their own interval, so a study keeps the one it was made with."""
        tune(tmp_path, "--heartbeat", "5", "--n-trials", "1", "max_epochs=1")
        result = tune(tmp_path, "--heartbeat", "60", "--n-trials", "1", check=False)
        assert result.returncode == 2 and "heartbeat=60" in result.stderr and "every 5 s" in result.stderr
        tune(tmp_path, "--n-trials", "1", "max_epochs=1")

    def test_bad_override_stops_before_any_trial(self, tmp_path):
        result = tune(tmp_path, "model.hidden_size=0", "--n-trials", "1", check=False)
        assert result.returncode == 2 and "model.hidden_size=0" in result.stderr
        assert not (tmp_path / "trial_0").exists()
