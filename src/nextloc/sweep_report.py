"""The end of a multirun: how many of its jobs failed, for the log and the exit code of ``train.py -m``.

Every job records its outcome in ``<sweep dir>/.jobs/<job number>.json``
(the job's own directory may belong to another config's run, which a refused
job leaves as it is). Hydra calls :class:`SweepReport` in the launching
process whatever the launcher: before the jobs, to forget the outcomes of an
earlier launch into the same sweep directory, and after them, to count.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nextloc.io import write_json

log = logging.getLogger("nextloc")
OUTCOMES = ".jobs"


def record_outcome(sweep_dir: Path, job: int, run_dir: Path, error: str | None) -> None:
    """Note whether job ``job`` of the sweep in ``sweep_dir`` finished (``error`` None) or failed."""
    write_json(sweep_dir / OUTCOMES / f"{job}.json", {"run_dir": str(run_dir), "error": error})


class SweepReport(Callback):
    """Counts the launch's failed jobs; ``failed_jobs`` then holds the number."""

    failed_jobs = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / OUTCOMES, ignore_errors=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        outcomes = sorted((Path(config.hydra.sweep.dir) / OUTCOMES).glob("*.json"), key=lambda f: int(f.stem))
        failed = []
        for file in outcomes:
            try:
                outcome = json.loads(file.read_text())
            except (OSError, ValueError):  # a job killed while writing it
                outcome = {"run_dir": f"job {file.stem}", "error": "its outcome cannot be read"}
            if outcome["error"] is not None:
                failed.append(f"{outcome['run_dir']} ({outcome['error']})")
        SweepReport.failed_jobs = len(failed)
        if failed:
            log.error("%d of %d jobs failed: %s", len(failed), len(outcomes), "; ".join(failed))
