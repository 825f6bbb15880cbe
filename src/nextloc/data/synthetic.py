"""The built-in synthetic data set: generated staypoints through the real sample builder.

Cached on disk under ``processed_dir/<hash of its parameters>``, so runs and
sweep jobs with the same parameters share one copy; concurrent creators race
harmlessly because the folder appears in one rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nextloc.config import DatasetConfig
from nextloc.data.samples import SampleSet, generate_samples
from nextloc.data.store import FORMAT_VERSION, METADATA, write_processed
from nextloc.data.synthetic_mobility import generate_staypoints

log = logging.getLogger(__name__)


def ensure_synthetic(config: DatasetConfig) -> Path:
    """Path of the processed synthetic data set of ``config``, generating it if absent."""
    parameters = {
        "synthetic": asdict(config.synthetic),
        "preprocess": asdict(config.preprocess),
        "format_version": FORMAT_VERSION,
    }
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(config.processed_dir) / key
    if (path / METADATA).is_file():
        return path
    log.info("generating the synthetic data set into %s", path)
    sp, places = generate_staypoints(**asdict(config.synthetic))
    sample_set = generate_samples(sp, **asdict(config.preprocess))
    try:
        write_processed(
            path, sample_set, name=config.name, parameters=parameters, locations=places,
            extra={"oracle_acc@1": oracle_accuracy(sample_set, "test")},
        )
    except FileExistsError:  # another job wrote the same data set first
        log.info("%s was created by another process; using it", path)
    return path


def oracle_accuracy(sample_set: SampleSet, split: str) -> float:
    """Expected acc@1 (percent) of an oracle that knows each user's true next-place distribution."""
    target = sample_set.samples[split]["target_index"].to_numpy()
    return float(100.0 * np.mean(sample_set.staypoints[split]["oracle_p"].to_numpy()[target]))
