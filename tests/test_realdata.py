"""Counts on the full real data sets (README: Real data); skipped where the raw files are absent."""

from pathlib import Path

import pytest

from nextloc.config import compose_run_config
from nextloc.data.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realdata


def dataset(name: str, monkeypatch):
    """The data set as ``train.py dataset=<name>`` in the checkout uses it (same paths: the processed copy is reused)."""
    monkeypatch.chdir(ROOT)
    config = compose_run_config([f"dataset={name}"]).dataset
    raw = Path(config.preprocess.raw_dir)
    if not raw.exists() or not any(raw.iterdir()):
        pytest.skip(f"{raw} is absent (README: Real data)")
    return load_dataset(config)


def test_full_geolife_counts_are_within_half_a_percent_of_the_reference(monkeypatch):
    """Reference: 45 users, 1,185 locations, 7,424 / 3,334 / 3,502 samples (two of 18,670 PLT files are missing here)."""
    data = dataset("geolife", monkeypatch)
    counts = (data.num_users - 1, data.num_locations - 2, *(len(data.samples[s]) for s in ("train", "validation", "test")))
    for got, reference in zip(counts, (45, 1185, 7424, 3334, 3502)):
        assert abs(got - reference) <= 0.005 * reference, (counts, "reference", (45, 1185, 7424, 3334, 3502))


def test_foursquare_nyc_keeps_every_checkin_and_the_users_with_samples_in_every_split(monkeypatch):
    """The published file: 113,344 check-ins of 1,082 users at 4,988 venues; no repeats."""
    data = dataset("foursquare_nyc", monkeypatch)
    statistics = data.metadata["extra"]["statistics"]
    assert (statistics["checkins_raw"], statistics["users_raw"], statistics["places_raw"]) == (113_344, 1_082, 4_988)
    assert statistics["checkins_removed_duplicate"] == 0
    assert statistics["users"] == data.num_users - 1 == 323
