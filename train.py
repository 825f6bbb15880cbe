"""Train and evaluate a next-location model: ``python train.py [dataset=...] [key=value ...]``.

Hydra composes ``conf/``; :func:`nextloc.config.load_run_config` validates it
once; :func:`nextloc.training.run.run` does the rest. ``resume=<run dir>``
continues a killed run from its last completed epoch with its own config.
In a multirun, a failing job records its error in ``failed.json`` in its run
directory and the other jobs go on.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nextloc.config import check_resume, load_run_config, register_resolvers, resumed_config
from nextloc.errors import NextlocError, storage_error
from nextloc.sweep_report import SweepReport
from nextloc.training.run import record_failure, run

log = logging.getLogger("nextloc")

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; return its best validation acc@1 so that sweepers can optimise it."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    try:
        if cfg.resume:
            cfg = resumed_config(Path(cfg.resume), hydra_config.overrides.task)
        config = load_run_config(cfg)
        if config.threads == 0:
            config = replace(config, threads=threads_per_job(hydra_config.launcher))
        results = run(config, run_dir)
    except Exception as err:
        err = storage_error(err) or err
        if hydra_config.mode.name != "MULTIRUN":
            if isinstance(err, NextlocError):
                log.error("%s", err)
                sys.exit(2)
            raise
        if isinstance(err, NextlocError):
            log.error("job %s failed: %s", hydra_config.job.num, err)
        else:
            log.exception("job %s failed", hydra_config.job.num)
        record_failure(run_dir, err)
        return None  # the other jobs of the sweep go on
    return results["validation"]["acc@1"]


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


if __name__ == "__main__":
    # Hydra creates the run directory before main() runs: check resume= first, so a typo leaves nothing behind.
    for argument in sys.argv[1:]:
        if argument.startswith("resume=") and argument != "resume=null":
            try:
                check_resume(argument.removeprefix("resume="))
            except NextlocError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
    main()
    if SweepReport.failed_jobs:
        sys.exit(1)
