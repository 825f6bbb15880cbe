"""Stop with one line when a run's or sweep's directory cannot be written, before Hydra tries to create it.

Hydra makes the output directory before ``train.py``'s code runs, so a
read-only or full file system there ends in Hydra's traceback. Hydra calls
this callback just before: it writes and removes a temporary file in the
directory, or in its nearest existing parent.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nextloc.errors import storage_error


class WritableOutput(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def check_writable(directory: Path, key: str) -> None:
    """Exit with code 2 and one line when nothing can be written into ``directory`` (or where it would be made)."""
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        problem = storage_error(OSError(err.errno, err.strerror, str(existing))) or f"{existing}: {err.strerror}"
        print(f"error: {problem} (for {directory}; {key}=<folder> chooses another place)", file=sys.stderr)
        sys.exit(2)
