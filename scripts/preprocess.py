"""Turn raw GPS data into a processed data set: ``python scripts/preprocess.py dataset=geolife [key=value ...]``.

Takes the same overrides as ``train.py`` (``dataset=diy``,
``dataset.preprocess.eps=50``, ``dataset.preprocess.raw_dir=...``); the data
set lands in ``dataset.processed_dir/<key of its parameters>``, which is where
``train.py`` with the same overrides looks for it. Prints the statistics table.
"""

from __future__ import annotations

import logging
import sys
from nextloc.config import compose_run_config
from nextloc.data.datasets import prepare_dataset, processed_path
from nextloc.data.preprocess import format_statistics
from nextloc.data.store import METADATA, read_metadata
from nextloc.errors import NextlocError, storage_error

log = logging.getLogger("nextloc.preprocess")


def main(overrides: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        config = compose_run_config(overrides)
        existed = (processed_path(config.dataset) / METADATA).is_file()
        path = prepare_dataset(config.dataset)
    except (NextlocError, OSError) as err:
        err = storage_error(err) or err
        if not isinstance(err, NextlocError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    if existed:  # a new data set has logged its statistics already
        statistics = read_metadata(path).get("extra", {}).get("statistics", {})
        print(f"{path} exists already; its statistics:\n{format_statistics(statistics)}")
    else:
        print(f"processed data set: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
