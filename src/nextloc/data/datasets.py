"""Find the processed data set a run asks for, creating the synthetic one when needed."""

from __future__ import annotations

import logging
from pathlib import Path

from nextloc.config import DatasetConfig
from nextloc.data.store import METADATA, ProcessedData, read_processed
from nextloc.data.synthetic import ensure_synthetic
from nextloc.errors import DataError

log = logging.getLogger(__name__)


def load_dataset(config: DatasetConfig) -> ProcessedData:
    """Read the processed data set of ``config``; generate it first if it is the synthetic one."""
    if config.synthetic is not None:
        path = ensure_synthetic(config)
    else:
        path = Path(config.processed_dir)
        if not (path / METADATA).is_file():
            raise DataError(
                f"processed data set '{config.name}' not found: no {METADATA} in {path.resolve()}/. "
                f"Create it with `python scripts/preprocess.py dataset={config.name}` "
                f"or point dataset.processed_dir at an existing one"
            )
    data = read_processed(path)
    log.info(
        "data %s: %d locations, %d users, samples train/validation/test %s",
        path, data.num_locations - 2, data.num_users - 1,
        "/".join(str(data.metadata["splits"][s]["samples"]) for s in data.metadata["splits"]),
    )
    return data
