"""Find the processed data set a run asks for, creating it once when it is missing.

A data set lives in ``processed_dir/<key>``, where ``key`` hashes every
parameter that shapes it, so variants never overwrite each other; a
``processed_dir`` that itself holds a data set (e.g. one imported from the
reference's pickles) is used as it is. Creation is serialised by a file lock,
so concurrent sweep jobs wait for one another instead of building twice, and
the folder appears in one rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from nextloc.config import DatasetConfig
from nextloc.data.store import FORMAT_VERSION, METADATA, ProcessedData, read_processed
from nextloc.errors import DataError
from nextloc.io import exclusive_lock, remove_temporaries

log = logging.getLogger(__name__)


def load_dataset(config: DatasetConfig) -> ProcessedData:
    """Read the processed data set of ``config``, creating it first when it is missing.

    A data set with an empty split is refused: without validation samples
    early stopping would pick an untrained model, without test samples there
    is nothing to report.
    """
    path = prepare_dataset(config)
    data = read_processed(path)
    empty = [s for s, counts in data.metadata["splits"].items() if counts["samples"] == 0]
    if empty:
        raise DataError(
            f"{path}: the {' and '.join(empty)} split has no sample; lower dataset.preprocess.previous_day or "
            "min_history, or change the split fractions"
        )
    log.info(
        "data %s: %d locations, %d users, samples train/validation/test %s",
        data.metadata.get("name"), data.num_locations - 2, data.num_users - 1,
        "/".join(str(data.metadata["splits"][s]["samples"]) for s in data.metadata["splits"]),
    )
    return data


def prepare_dataset(config: DatasetConfig) -> Path:
    """Path of the processed data set of ``config``; generate or preprocess it if absent."""
    path = processed_path(config)
    if (path / METADATA).is_file():
        return path
    if path.is_dir():
        raise DataError(
            f"{path}: a processed data set without its {METADATA}; it is damaged: delete the folder to build it again"
        )
    if config.reader == "reference_pickle":
        raise DataError(
            f"processed data set '{config.name}' not found: no {METADATA} in {path.resolve()}/; "
            "`python scripts/import_pk.py <folder> --trust-pickle` imports the reference's pickles there"
        )
    if config.reader != "synthetic" and not Path(config.preprocess.raw_dir).exists():
        raise DataError(
            f"processed data set '{config.name}' not found: no {METADATA} in {path.resolve()}/ and no raw data in "
            f"{Path(config.preprocess.raw_dir).resolve()}/. Put the raw data there and run "
            f"`python scripts/preprocess.py dataset={config.name}`, or point dataset.processed_dir at a processed data set "
            f"(`python scripts/import_pk.py <folder> --trust-pickle` imports the reference's pickles)"
        )
    parent_existed = path.parent.is_dir()
    try:
        with exclusive_lock(path.parent / f".{path.name}.lock", wait=True, remove=True):
            if not (path / METADATA).is_file():  # nobody made it while we waited
                remove_temporaries(path.parent, path.name)  # of a creation that was killed
                _create(config, path)
    except BaseException:
        if not parent_existed:  # leave no empty folder behind a failed creation
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise
    return path


def processed_path(config: DatasetConfig) -> Path:
    """``processed_dir`` itself if it holds a data set, else its sub-folder for these parameters."""
    base = Path(config.processed_dir)
    if (base / METADATA).is_file():
        return base
    if any(base.glob("*_samples.parquet")):
        raise DataError(
            f"{base}: holds the files of a processed data set but no {METADATA}; it is damaged: "
            "delete the folder to build it again"
        )
    key = hashlib.sha256(json.dumps(dataset_parameters(config), sort_keys=True).encode()).hexdigest()[:12]
    return base / key


def dataset_parameters(config: DatasetConfig) -> dict:
    """Every parameter that shapes the processed data (not the worker count)."""
    if config.reader == "synthetic":
        params = {"synthetic": asdict(config.synthetic_settings()), "samples": config.preprocess.sample_parameters()}
    elif config.reader == "checkins":  # no staypoints or clustering: only the reading and the sample rules count
        read = {"raw_dir": config.preprocess.raw_dir, "timezone": config.preprocess.timezone}
        params = {"checkins": asdict(config.checkins), "preprocess": read | config.preprocess.sample_parameters()}
    else:
        params = {"preprocess": {k: v for k, v in asdict(config.preprocess).items() if k != "n_jobs"}}
    return {"dataset": config.name, **params, "format_version": FORMAT_VERSION}


def _create(config: DatasetConfig, path: Path) -> None:
    # imported here: preprocessing pulls in trackintel and geopandas, which training does not need
    from nextloc.data.checkins import build_checkins
    from nextloc.data.preprocess import preprocess
    from nextloc.data.synthetic import build_synthetic

    parameters = dataset_parameters(config)
    if config.reader == "synthetic":
        log.info("generating the synthetic data set into %s", path)
        build_synthetic(config, path, parameters)
    elif config.reader == "checkins":
        log.info("reading the check-ins of %s from %s into %s", config.name, config.preprocess.raw_dir, path)
        build_checkins(config, path, parameters)
    else:
        log.info("preprocessing %s from %s into %s", config.name, config.preprocess.raw_dir, path)
        preprocess(config, path, parameters)
