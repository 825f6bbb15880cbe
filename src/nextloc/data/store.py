"""The processed data set on disk: Parquet tables, a location table and ``metadata.json``.

Layout of a processed folder::

    metadata.json                counts, split sizes, parameters, version, checksums
    <split>_staypoints.parquet   STAYPOINT_COLUMNS, encoded ids, sorted
    <split>_samples.parquet      history_start, history_end, target_index
    locations.parquet            encoded id, raw id, centroid, staypoint and user counts
    users.parquet                encoded user id, raw user id (as text)

No pickle anywhere: reading processed data never runs code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from nextloc import __version__
from nextloc.data.info import LOCATION_COLUMNS
from nextloc.data.samples import (
    MAX_DURATION,
    SAMPLE_COLUMNS,
    SPLITS,
    STAYPOINT_COLUMNS,
    SampleSet,
    encode_locations,
)
from nextloc.errors import DataError
from nextloc.io import atomic_directory, write_json

FORMAT_VERSION = 1
METADATA = "metadata.json"
LOCATIONS = "locations.parquet"
USERS = "users.parquet"
USER_COLUMNS = ("user_id", "raw_user_id")


@dataclass
class ProcessedData:
    """A processed data set as read from disk."""

    staypoints: dict[str, pd.DataFrame]
    samples: dict[str, pd.DataFrame]
    metadata: dict
    locations: pd.DataFrame | None
    users: pd.DataFrame

    @property
    def num_locations(self) -> int:
        return int(self.metadata["num_locations"])

    @property
    def num_users(self) -> int:
        return int(self.metadata["num_users"])


def write_processed(
    path: str | Path,
    sample_set: SampleSet,
    *,
    name: str,
    parameters: dict,
    locations: pd.DataFrame | None = None,
    step_features: tuple[str, ...] = (),
    extra: dict | None = None,
) -> Path:
    """Write a processed data set into a new folder ``path``, atomically.

    ``locations`` has raw ``location_id``, ``latitude`` and ``longitude``, and
    may have integer attribute columns (a category, a grid cell) that models
    receive as :attr:`DataInfo.location_attributes`; ``None`` records that
    the source had no coordinates. ``step_features`` names extra integer
    staypoint columns that batches carry as per-step features; every extra
    column of a split's sample table becomes a per-sample feature. Raises
    ``FileExistsError`` when ``path`` exists: nothing is overwritten.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    _check_extra_columns(sample_set, step_features)
    with atomic_directory(path) as tmp:
        files = {}
        for split in SPLITS:
            samples = sample_set.samples[split]
            for kind, table, columns in (
                ("staypoints", sample_set.staypoints[split], (*STAYPOINT_COLUMNS, *step_features)),
                ("samples", samples, (*SAMPLE_COLUMNS, *(c for c in samples.columns if c not in SAMPLE_COLUMNS))),
            ):
                file = f"{split}_{kind}.parquet"
                table[list(columns)].astype(np.int64).to_parquet(tmp / file, index=False)
                files[file] = file_checksum(tmp / file)
        if locations is not None:
            _location_table(sample_set, locations).to_parquet(tmp / LOCATIONS, index=False)
            files[LOCATIONS] = file_checksum(tmp / LOCATIONS)
        users = pd.DataFrame({"user_id": np.arange(1, sample_set.num_users, dtype=np.int64),
                              "raw_user_id": [str(u) for u in sample_set.users]})
        users.to_parquet(tmp / USERS, index=False)
        files[USERS] = file_checksum(tmp / USERS)
        metadata = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "num_locations": sample_set.num_locations,
            "num_users": sample_set.num_users,
            "splits": {
                s: {"staypoints": len(sample_set.staypoints[s]), "samples": len(sample_set.samples[s])}
                for s in SPLITS
            },
            "dropped_users": sample_set.dropped_users,
            "has_location_table": locations is not None,
            "step_features": list(step_features),
            "parameters": parameters,
            "extra": extra or {},
            "files": files,
            "nextloc_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(tmp / METADATA, metadata)
    return path


def read_processed(path: str | Path) -> ProcessedData:
    """Read and check a processed data set; raise :class:`DataError` naming the bad file."""
    path = Path(path)
    metadata = read_metadata(path)
    for file, expected in metadata["files"].items():
        if not (path / file).is_file():
            raise DataError(f"{path / file}: missing; the processed data set is incomplete, create it again")
        if file_checksum(path / file) != expected:
            raise DataError(f"{path / file}: size or checksum differs from {METADATA}; file is truncated or changed")
    staypoints, samples = {}, {}
    for split in SPLITS:
        staypoints[split] = _read_table(path / f"{split}_staypoints.parquet", STAYPOINT_COLUMNS)
        samples[split] = _read_table(path / f"{split}_samples.parquet", SAMPLE_COLUMNS)
        _check_split(path, split, staypoints[split], samples[split], metadata)
    locations = _read_table(path / LOCATIONS, LOCATION_COLUMNS) if LOCATIONS in metadata["files"] else None
    users = _read_table(path / USERS, USER_COLUMNS)
    _check_tables(path, metadata, locations, users)
    return ProcessedData(staypoints, samples, metadata, locations, users)


def _check_tables(path: Path, metadata: dict, locations: pd.DataFrame | None, users: pd.DataFrame) -> None:
    """The table sizes in the metadata must be those of the user and location tables (models are built from them)."""
    if users["user_id"].tolist() != list(range(1, metadata["num_users"])):
        raise DataError(f"{path / METADATA}: num_users={metadata['num_users']} but {USERS} holds {len(users)} users; "
                        "the file is damaged, create the processed data set again")
    last = int(locations["location_id"].to_numpy().max(initial=1)) if locations is not None else None
    if last is not None and last + 1 != metadata["num_locations"]:
        raise DataError(f"{path / METADATA}: num_locations={metadata['num_locations']} but {LOCATIONS} ends at "
                        f"location {last}; the file is damaged, create the processed data set again")


def read_metadata(path: Path) -> dict:
    """Parse ``metadata.json`` of a processed folder and check its format version."""
    file = Path(path) / METADATA
    try:
        metadata = json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError(f"{file}: missing; {path} is not a processed data set") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: not valid JSON ({err}); the file is truncated or corrupted") from None
    required = {"format_version", "num_locations", "num_users", "splits", "files"}
    if not isinstance(metadata, dict) or required - set(metadata):
        raise DataError(f"{file}: lacks keys {sorted(required - set(metadata if isinstance(metadata, dict) else {}))}")
    if metadata["format_version"] != FORMAT_VERSION:
        raise DataError(
            f"{file}: format version {metadata['format_version']}, this nextloc reads {FORMAT_VERSION}; "
            "create the processed data set again"
        )
    problem = _metadata_problem(metadata)
    if problem:
        raise DataError(f"{file}: {problem}; the file is damaged, create the processed data set again")
    return metadata


def _metadata_problem(metadata: dict) -> str | None:
    """What is wrong with a parsed ``metadata.json`` whose keys are all there, or None."""
    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not (count(metadata["num_locations"]) and metadata["num_locations"] >= 2):
        return f"num_locations={metadata['num_locations']!r} is not a table size (>= 2)"
    if not (count(metadata["num_users"]) and metadata["num_users"] >= 1):
        return f"num_users={metadata['num_users']!r} is not a table size (>= 1)"
    splits = metadata["splits"]
    if not isinstance(splits, dict) or set(splits) != set(SPLITS) or not all(
        isinstance(s, dict) and count(s.get("staypoints")) and count(s.get("samples")) for s in splits.values()
    ):
        return f"splits must give staypoint and sample counts of {list(SPLITS)}"
    files = metadata["files"]
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and {"bytes", "sha256"} <= set(v) for v in files.values()
    ):
        return "files must map file names to their size and sha256"
    outside = [name for name in files if Path(name).name != name or name in ("", ".", "..")]
    if outside:
        return f"files {outside} are not plain names inside the folder"
    return None


def fingerprint(metadata: dict) -> str:
    """A data set's identity: the sha256 of its files' checksums (equal files, equal fingerprint)."""
    return hashlib.sha256(json.dumps(metadata["files"], sort_keys=True).encode()).hexdigest()


def file_checksum(file: Path) -> dict:
    """Size and sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": file.stat().st_size, "sha256": digest.hexdigest()}


def _read_table(file: Path, columns) -> pd.DataFrame:
    try:
        table = pd.read_parquet(file)
    except Exception as err:  # pyarrow raises several types for damaged files
        raise DataError(f"{file}: cannot be read as Parquet ({err})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{file}: lacks columns {missing}")
    return table


def _check_split(path, split, sp, samples, metadata) -> None:
    """Refuse tables whose sizes or ids disagree with the metadata."""
    counts = metadata["splits"][split]
    if (len(sp), len(samples)) != (counts["staypoints"], counts["samples"]):
        raise DataError(f"{path}: {split} has {len(sp)} staypoints and {len(samples)} samples, metadata says {counts}")
    bounds = {
        "location_id": (1, metadata["num_locations"]),
        "user_id": (1, metadata["num_users"]),
        "start_min": (0, 1440),
        "weekday": (0, 7),
        "duration": (0, MAX_DURATION + 1),
        "start_day": (0, np.iinfo(np.int64).max),
    }
    for column, (low, high) in bounds.items():
        values = sp[column].to_numpy()
        if len(values) and (values.min() < low or values.max() >= high):
            raise DataError(f"{path / f'{split}_staypoints.parquet'}: {column} outside [{low}, {high})")
    start, end, target = (samples[c].to_numpy() for c in SAMPLE_COLUMNS)
    if len(samples) and not ((0 <= start).all() and (start < end).all() and (end <= target).all() and (target < len(sp)).all()):
        raise DataError(f"{path / f'{split}_samples.parquet'}: sample rows outside its staypoint table")


def _check_extra_columns(sample_set: SampleSet, step_features: tuple[str, ...]) -> None:
    """Extra columns are stored as integers: refuse any other type instead of truncating it."""
    for split in SPLITS:
        samples = sample_set.samples[split]
        extra = [(sample_set.staypoints[split], c) for c in step_features]
        extra += [(samples, c) for c in samples.columns if c not in SAMPLE_COLUMNS]
        for table, column in extra:
            if not pd.api.types.is_integer_dtype(table[column]):
                raise DataError(f"extra column '{column}' of the {split} split is {table[column].dtype}; store integer codes")


def _location_table(sample_set: SampleSet, locations: pd.DataFrame) -> pd.DataFrame:
    """Encoded id, centroid and usage counts of every location the kept staypoints visit."""
    visits = pd.concat([sample_set.staypoints[s][["raw_location_id", "user_id"]] for s in SPLITS])
    counts = visits.groupby("raw_location_id").agg(n_staypoints=("user_id", "size"), n_users=("user_id", "nunique"))
    table = locations.rename(columns={"location_id": "raw_location_id"}).merge(
        counts, left_on="raw_location_id", right_index=True, how="inner"
    )
    table.insert(0, "location_id", encode_locations(table["raw_location_id"].to_numpy(), sample_set.known_locations))
    attributes = [c for c in locations.columns if c not in ("location_id", *LOCATION_COLUMNS)]
    return table[[*LOCATION_COLUMNS, *attributes]].sort_values(["location_id", "raw_location_id"]).reset_index(drop=True)
