"""Optuna hyperparameter search over ``train.py`` runs, with pruning.

``python scripts/tune.py [--search lstm] [--n-trials N] [--pruner median|halving|none]
[--sampler-seed S] [--storage URL] [--study-name NAME] [--dir DIR] [--heartbeat SECONDS] [key=value ...]``

The search space is ``conf/hparams_search/<search>.yaml``; ``key=value``
overrides apply to every trial (``dataset=diy``, ``max_epochs=30``). The study
lives in ``<dir>/study.db`` (default dir ``outputs/tune/<study name>``):
running the same command again resumes and extends it, ``optuna-dashboard
sqlite:///<dir>/study.db`` or ``optuna.load_study`` read it, and
``--storage postgresql://...`` lets many workers on many machines share one
study. Workers send a heartbeat every ``--heartbeat`` seconds (fixed when the
study is created, default 60). A trial whose worker died (``kill -9``, a lost
node) is run again with the same parameters by the first trial any worker
starts once it has been silent for two intervals, continuing from the last
completed epoch in the dead trial's directory. A trial stopped with Ctrl-C is
recorded as failed and not run again.
``python scripts/summarize.py <dir>`` tabulates its trials.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from nextloc.config import CONF_DIR, compose_run_config
from nextloc.errors import ConfigError, NextlocError
from nextloc.tuning import PRUNERS, build_pruner, optimize, search_space



def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", default="lstm", help="conf/hparams_search/<search>.yaml")
    parser.add_argument("--n-trials", type=int, help="trials to add (default: the search file's n_trials)")
    parser.add_argument("--pruner", choices=PRUNERS)
    parser.add_argument("--pruner-startup-trials", type=int)
    parser.add_argument("--pruner-warmup-epochs", type=int)
    parser.add_argument("--sampler-seed", type=int)
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite in --dir)")
    parser.add_argument("--study-name", help="default: the search name")
    parser.add_argument("--dir", type=Path, help="study directory (default: outputs/tune/<study name>)")
    parser.add_argument("--heartbeat", type=int, help="seconds between a worker's signs of life (set when a study "
                        "is created, default 60; later workers use the study's)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        settings = _search_settings(args.search)
        name = args.study_name or args.search
        pruner = build_pruner(
            args.pruner or settings["pruner"],
            _given(args.pruner_startup_trials, settings["pruner_startup_trials"]),
            _given(args.pruner_warmup_epochs, settings["pruner_warmup_epochs"]),
        )
        compose_run_config(overrides)  # a bad override fails here, before any trial
        study = optimize(
            compose_run_config, overrides, search_space(settings["space"]), args.dir or Path("outputs/tune") / name,
            n_trials=_given(args.n_trials, settings["n_trials"]), metric=settings["metric"], study_name=name,
            storage=args.storage, sampler_seed=_given(args.sampler_seed, settings["sampler_seed"]), pruner=pruner,
            heartbeat=args.heartbeat,
        )
    except NextlocError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    states = [t.state.name.lower() for t in study.trials]
    print(f"study '{name}': " + (", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))) or "no trials"))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if completed:
        print(f"best trial {study.best_trial.number}: validation {settings['metric']} "
              f"{study.best_value:.2f} with {study.best_params}")
    return 0


def _given(value, default):
    return default if value is None else value


def _search_settings(search: str) -> dict:
    file = CONF_DIR / "hparams_search" / f"{search}.yaml"
    if not file.is_file():
        choices = sorted(p.stem for p in file.parent.glob("*.yaml"))
        raise ConfigError(f"--search {search}: no {file}; choose one of {choices}")
    return OmegaConf.to_container(OmegaConf.load(file))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
