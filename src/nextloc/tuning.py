"""Hyperparameter search with Optuna: a search space, trials as nextloc runs, pruning by epoch.

Each trial is a complete run directory ``<study dir>/trial_<n>/`` (with
``.hydra/overrides.yaml``, so ``scripts/summarize.py`` reads a study like a
sweep). The objective is the best epoch's validation metric, never a test one;
every epoch reports the validation metric so the pruner can stop hopeless
trials early.

Workers send heartbeats. When a worker starts a trial, Optuna first marks
failed every running trial that has been silent for two heartbeat intervals
(its worker died: ``kill -9``, a lost node) and queues a retry with the same
parameters, which continues from the last completed epoch in the dead trial's
run directory. A worker that was only frozen (a suspended machine) finds its
trial taken over at its next epoch and leaves the run to the retry, which
waits for the directory's lock.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from sqlalchemy.exc import SQLAlchemyError

from nextloc.config import RunConfig
from nextloc.errors import ConfigError, NextlocError, memory_error, storage_error
from nextloc.io import write_atomic, write_json
from nextloc.summary import METRICS
from nextloc.training.run import record_failure, run

log = logging.getLogger(__name__)
PRUNERS = ("median", "halving", "none")
STORAGE_FILE = "study.db"
RETRIES = 3  # times a trial whose worker died is run again
HEARTBEAT = 60  # seconds, unless the study was created with another interval
HEARTBEAT_ATTR = "heartbeat_s"
RUNNING = optuna.trial.TrialState.RUNNING


class TrialTakenOver(NextlocError):
    """Another worker declared this trial's worker dead and runs the trial again."""


@dataclass
class Parameter:
    """One searched key: ``float`` / ``int`` between ``low`` and ``high`` (``log`` scale optional), or ``categorical``."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list | None = None

    def __post_init__(self) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise ConfigError(f"search space: {self.name} is categorical but has no choices")
        elif self.type in ("float", "int"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(f"search space: {self.name} needs low < high, got {self.low} and {self.high}")
        else:
            raise ConfigError(f"search space: {self.name} has type '{self.type}'; choose float, int or categorical")

    def suggest(self, trial: optuna.Trial):
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, self.choices)


def search_space(spec: dict) -> list[Parameter]:
    """Parameters from ``{key: {type, low, high, log, choices}}`` (``conf/hparams_search/*.yaml``)."""
    try:
        return [Parameter(name, **options) for name, options in spec.items()]
    except TypeError as err:
        raise ConfigError(f"search space: {err}") from None


def build_pruner(name: str, startup_trials: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner '{name}' is unknown; choose one of {list(PRUNERS)}")


def optimize(
    compose: Callable[[list[str]], RunConfig],
    overrides: list[str],
    space: list[Parameter],
    study_dir: Path,
    *,
    n_trials: int,
    metric: str = "acc@1",
    study_name: str = "nextloc",
    storage: str | None = None,
    sampler_seed: int = 0,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat: int | None = None,
) -> optuna.Study:
    """Run ``n_trials`` (> 0) more trials of the study (created, or loaded to resume or extend it).

    ``compose(overrides)`` turns command-line overrides into a validated
    :class:`RunConfig`; the trial's suggestions are appended to ``overrides``.
    The study is stored in ``storage`` (default: SQLite in ``study_dir``), so
    several workers can share it and Optuna's own tools can read it. Every
    ``heartbeat`` seconds a worker marks its trial alive (see module doc); the
    interval is the study's, fixed when it is created (default 60 s).
    """
    if n_trials < 1:
        raise ConfigError(f"--n-trials={n_trials}: give the number of trials to add, at least 1")
    if metric not in METRICS:
        raise ConfigError(f"metric '{metric}' cannot be maximised; choose one of {list(METRICS)}")
    if heartbeat is not None and heartbeat < 1:
        raise ConfigError(f"heartbeat={heartbeat}: give the seconds between a worker's signs of life, at least 1")
    study_dir.mkdir(parents=True, exist_ok=True)
    study = _open_study(
        storage or f"sqlite:///{(study_dir / STORAGE_FILE).resolve()}",
        heartbeat,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=pruner or optuna.pruners.MedianPruner(),
    )
    for trial in study.get_trials(deepcopy=False, states=(RUNNING,)):
        log.info("trial %d is running (or its worker died: then the first trial started %d s after its last "
                 "heartbeat runs it again)", trial.number, 2 * study.user_attrs[HEARTBEAT_ATTR])

    def objective(trial: optuna.Trial) -> float:
        trial_overrides = overrides + [f"{p.name}={p.suggest(trial)}" for p in space]
        run_dir = _run_dir(trial, study_dir)

        def record_overrides() -> None:
            write_atomic(run_dir / ".hydra" / "overrides.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(trial_overrides)))

        def report(epoch: int, validation: dict) -> None:
            try:
                trial.report(validation[metric], epoch)
            except optuna.exceptions.UpdateFinishedTrialError:
                raise TrialTakenOver(_taken_over(trial)) from None
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation {metric} {validation[metric]:.2f}")

        with _log_to(run_dir / "train.log"):
            try:
                results = run(compose(trial_overrides), run_dir, on_epoch=report, wait=True, on_claim=record_overrides)
            except optuna.TrialPruned as pruned:
                write_json(run_dir / "pruned.json", {"status": "pruned", "error": str(pruned)})
                raise
            except TrialTakenOver:
                taken_over.append(trial.number)
                raise
            except Exception as err:  # any error fails this trial only; the study goes on
                err = storage_error(err) or memory_error(err) or err
                if not isinstance(err, NextlocError):
                    log.exception("trial %d failed", trial.number)
                record_failure(run_dir, err, trial_overrides)
                raise
        if trial.number not in {t.number for t in study.get_trials(deepcopy=False, states=(RUNNING,))}:
            taken_over.append(trial.number)
            raise TrialTakenOver(_taken_over(trial))  # its retry finds these results and reports them
        return results["validation"][metric]

    taken_over: list[int] = []
    for _ in range(n_trials):  # one call per trial: a trial taken over ends only its own call
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except ValueError:  # Optuna cannot record the end of a trial that another worker took over
            if not taken_over:
                raise
            log.warning("trial %d was taken over by another worker; this one goes on", taken_over.pop())
    return study


def _taken_over(trial: optuna.Trial) -> str:
    return (f"trial {trial.number} was declared dead (no heartbeat for two intervals) and is run again by "
            "another worker, which continues its run directory")


def _run_dir(trial: optuna.Trial, study_dir: Path) -> Path:
    """``trial_<number>``, or for the retry of a dead worker's trial the directory that trial used, if it is here.

    The directory is kept in the trial's user attributes, which the retry inherits.
    """
    earlier = trial.user_attrs.get("run_dir")
    if earlier is not None and Path(earlier).is_dir():
        return Path(earlier)
    run_dir = study_dir / f"trial_{trial.number}"
    run_dir.mkdir(exist_ok=True)
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    return run_dir


def _open_study(url: str, heartbeat: int | None, **kwargs) -> optuna.Study:
    """The study (created or loaded) on an RDB storage with heartbeats at the study's interval.

    A new study keeps ``heartbeat`` (default :data:`HEARTBEAT`) in its user
    attributes: workers judge each other's trials by their own interval, so
    all of them must use the same one.
    """
    study = _connect(url, heartbeat or HEARTBEAT, **kwargs)
    if HEARTBEAT_ATTR not in study.user_attrs:
        study.set_user_attr(HEARTBEAT_ATTR, heartbeat or HEARTBEAT)
    interval = study.user_attrs[HEARTBEAT_ATTR]
    if heartbeat is not None and heartbeat != interval:
        raise ConfigError(f"heartbeat={heartbeat}: this study's workers send one every {interval} s; "
                          "leave --heartbeat out or give that value")
    return study if interval == (heartbeat or HEARTBEAT) else _connect(url, interval, **kwargs)


def _connect(url: str, heartbeat: int, attempts: int = 5, **kwargs) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)`` with heartbeats and retries of dead workers' trials.

    Retried a few times: workers that start together on a new database race to create its tables.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats and retries are marked experimental since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=RETRIES, inherit_intermediate_values=True
                    ),
                )
            return optuna.create_study(storage=storage, load_if_exists=True, **kwargs)
        except (SQLAlchemyError, optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


@contextmanager
def _log_to(file: Path):
    """Also log into a trial's own ``train.log``, as Hydra does for a run."""
    handler = logging.FileHandler(file)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
