"""The built-in synthetic data set: generated staypoints through the real sample builder."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from nextloc.config import DatasetConfig
from nextloc.data.samples import SampleSet, generate_samples
from nextloc.data.store import write_processed
from nextloc.data.synthetic_mobility import generate_staypoints


def build_synthetic(config: DatasetConfig, path: Path, parameters: dict) -> Path:
    """Generate the synthetic data set of ``config`` into the new folder ``path``."""
    sp, places = generate_staypoints(**asdict(config.synthetic_settings()))
    sample_set = generate_samples(sp, **config.preprocess.sample_parameters())
    return write_processed(
        path, sample_set, name=config.name, parameters=parameters, locations=places,
        extra={"oracle_acc@1": oracle_accuracy(sample_set, "test")},
    )


def oracle_accuracy(sample_set: SampleSet, split: str) -> float:
    """Expected acc@1 (percent) of an oracle that knows each user's true next-place distribution."""
    target = sample_set.samples[split]["target_index"].to_numpy()
    return float(100.0 * np.mean(sample_set.staypoints[split]["oracle_p"].to_numpy()[target]))
