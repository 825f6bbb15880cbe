"""The end of a multirun: how many of its jobs failed, for the log and the exit code of ``train.py -m``.

Hydra calls this in the launching process whatever the launcher, once all
jobs have returned; a failed job has left ``failed.json`` in its directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("nextloc")


class SweepReport(Callback):
    """Counts the sweep directory's failed jobs; ``failed_jobs`` then holds the number."""

    failed_jobs = 0

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = sorted({p.parent.parent for p in Path(config.hydra.sweep.dir).glob("**/.hydra/overrides.yaml")})
        failed = [job for job in jobs if (job / "failed.json").is_file() and not (job / "test_results.json").is_file()]
        SweepReport.failed_jobs = len(failed)
        if failed:
            log.error(
                "%d of %d jobs failed: %s (each holds its error in failed.json)",
                len(failed), len(jobs), ", ".join(str(job) for job in failed),
            )
