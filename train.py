"""Train and evaluate a next-location model: ``python train.py [dataset=...] [key=value ...]``.

Hydra composes ``conf/``; :func:`nextloc.config.load_run_config` validates it
once; :func:`nextloc.training.run.run` does the rest. ``resume=<run dir>``
continues a killed run from its last completed epoch with its own config.
In a multirun, a failing job records its error in ``failed.json`` in its run
directory and the other jobs go on. A run that is refused (a wrong value, a
directory that holds another config's run) writes nothing: ``.hydra/`` is
written here once the directory is claimed, not by Hydra before the checks
(``hydra.output_subdir: null`` in ``conf/config.yaml``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nextloc.config import check_resume, compose, load_run_config, register_resolvers, resumed_config
from nextloc.errors import NextlocError, memory_error, storage_error
from nextloc.io import write_atomic
from nextloc.sweep_report import SweepReport, record_outcome
from nextloc.training.run import record_failure, run

log = logging.getLogger("nextloc")

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; return its best validation acc@1 so that sweepers can optimise it."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    fresh = not any(run_dir.iterdir())  # Hydra has just made it: everything in it will be this process's
    claimed = []  # set once run() has found the directory to be this config's

    def on_claim() -> None:
        write_hydra_record(run_dir, cfg, overrides)
        claimed.append(run_dir)

    try:
        if cfg.resume:
            cfg = resumed_config(Path(cfg.resume), overrides)
        config = load_run_config(cfg)
        if config.threads == 0:
            config = replace(config, threads=threads_per_job(hydra_config.launcher))
        results = run(config, run_dir, on_claim=on_claim)
    except Exception as err:
        err = storage_error(err) or memory_error(err) or err
        if not claimed:
            _leave_untouched(run_dir, fresh)
        if hydra_config.mode.name != "MULTIRUN":
            if isinstance(err, NextlocError):
                log.error("%s", err)
                sys.exit(2)
            raise
        if isinstance(err, NextlocError):
            log.error("job %s failed: %s", hydra_config.job.num, err)
        else:
            log.exception("job %s failed", hydra_config.job.num)
        record_failure(run_dir, err, overrides)
        record_outcome(Path(hydra_config.sweep.dir), hydra_config.job.num, run_dir, f"{type(err).__name__}: {err}")
        return None  # the other jobs of the sweep go on
    if hydra_config.mode.name == "MULTIRUN":
        record_outcome(Path(hydra_config.sweep.dir), hydra_config.job.num, run_dir, None)
    return results["validation"]["acc@1"]


def write_hydra_record(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """``.hydra/`` (config, overrides, Hydra's own settings) of a claimed run directory; a resumed run keeps its first."""
    record = run_dir / ".hydra"
    if (record / "config.yaml").is_file():
        return
    write_atomic(record / "overrides.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(overrides), tmp))
    write_atomic(record / "hydra.yaml", lambda tmp: OmegaConf.save(OmegaConf.create({"hydra": HydraConfig.get()}), tmp))
    write_atomic(record / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))  # last: resume= looks for it


def _leave_untouched(run_dir: Path, fresh: bool) -> None:
    """A refused run: no more lines in the directory's log, and no directory if it was made for this run."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            root.removeHandler(handler)
            handler.close()
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)


def threads_per_job(launcher) -> int:
    """Torch threads for one job: the cores shared among the jobs that run at once.

    Parallel jobs that each use every core slow one another down many times
    over. A joblib launcher with ``n_jobs`` parallel jobs gives each
    ``cores // n_jobs`` threads, a submitit launcher its ``cpus_per_task``;
    the basic launcher runs one job at a time and keeps torch's default (0).
    """
    target = str(launcher.get("_target_", ""))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs") if "joblib" in target else None
    if not n_jobs:
        return 0
    cores = os.cpu_count() or 1
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)
    return max(1, cores // parallel)


def check_arguments(arguments: list[str]) -> None:
    """Refuse a ``resume=`` of no run and overrides Hydra cannot compose, before Hydra creates any directory.

    Hydra would answer a misspelt key or an unknown option with several lines
    and exit code 1. In a sweep, each swept key is checked with its first value.
    """
    for argument in arguments:
        if argument.startswith("resume=") and argument != "resume=null":
            check_resume(argument.removeprefix("resume="))
            return  # the run's own config; resumed_config() refuses other overrides
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in arguments):
        return  # --cfg, --help and other Hydra flags
    from hydra.core.override_parser.overrides_parser import OverridesParser

    composable = []
    for override in OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("-")]):
        if override.key_or_group.startswith("hydra"):
            continue
        if not override.is_sweep_override():
            composable.append(override.input_line)
        elif override.value_type.name in ("CHOICE_SWEEP", "RANGE_SWEEP"):
            composable.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
    compose(composable)


if __name__ == "__main__":
    try:
        check_arguments(sys.argv[1:])
    except NextlocError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
    if SweepReport.failed_jobs:
        sys.exit(1)
