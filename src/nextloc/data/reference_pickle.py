"""Samples processed by the reference pipeline (its pickles) -> a :class:`SampleSet` (docs/reference.md).

The reference writes each split as ``<prefix>_train.pk``, ``<prefix>_validation.pk``
and ``<prefix>_test.pk``: a pickled list of dicts, one per sample, with per-step
arrays ``X`` (encoded location ids), ``user_X``, ``weekday_X``, ``start_min_X``,
``dur_X`` (minutes, float) and ``diff`` (target day minus step day), and the
target location ``Y``.

The pickles keep no staypoint table, so each sample becomes its own rows: its
history steps followed by one row for its target. Every history is then a
contiguous row range, as the processed format requires, and a batch gathered
from the rows returns exactly the pickle's arrays. Histories that overlap in the
reference are stored once per sample.

Unpickling runs whatever code the file names, so only :func:`load_reference_pickles`
touches ``pickle``, and only when called: import only files from a trusted source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from nextloc.data.samples import MAX_DURATION, SAMPLE_COLUMNS, SPLITS, STAYPOINT_COLUMNS, SampleSet
from nextloc.errors import DataError

log = logging.getLogger(__name__)

SUFFIX = ".pk"
STEP_KEYS = ("X", "user_X", "weekday_X", "start_min_X", "dur_X", "diff")  # one value per history step
REFERENCE_KEYS = (*STEP_KEYS, "Y")
# Allowed [low, high) of each integer array; None = unbounded. Location and user 0 are padding.
BOUNDS = {
    "X": (1, None),
    "Y": (1, None),
    "user_X": (1, None),
    "weekday_X": (0, 7),
    "start_min_X": (0, 1440),
    "diff": (None, None),
}


def load_reference_pickles(folder: str | Path, prefix: str | None = None) -> dict[str, list[dict]]:
    """Unpickle the reference's three split files in ``folder``.

    **Unpickling runs code from the files**: call this only on files from a
    trusted source.

    Parameters
    ----------
    folder
        Holds ``<prefix>_train.pk``, ``<prefix>_validation.pk`` and ``<prefix>_test.pk``.
    prefix
        Which data set to read when the folder holds several; found from the
        file names when ``None``.

    Returns
    -------
    dict
        ``{"train": [...], "validation": [...], "test": [...]}``, each the list
        of sample dicts as stored.

    Examples
    --------
    >>> samples = load_reference_pickles("reference/data/temp", prefix="dataSet_geolife")  # doctest: +SKIP
    >>> sorted(samples["train"][0])  # doctest: +SKIP
    ['X', 'Y', 'diff', 'dur_X', 'start_min_X', 'user_X', 'weekday_X']
    """
    import pickle  # here, not at import time: only an explicit call unpickles anything

    samples_by_split = {}
    for split, file in find_reference_files(folder, prefix).items():
        try:
            with open(file, "rb") as f:
                samples = pickle.load(f)
        except Exception as err:  # unpickling can raise anything the file's code raises
            raise DataError(f"{file}: cannot be unpickled ({type(err).__name__}: {err})") from None
        if not isinstance(samples, (list, tuple)):
            raise DataError(f"{file}: holds a {type(samples).__name__}; expected a list of dicts, one per sample")
        if not samples:
            raise DataError(f"{file}: holds no samples")
        log.info("unpickled %s: %d samples", file, len(samples))
        samples_by_split[split] = list(samples)
    return samples_by_split


def find_reference_files(folder: str | Path, prefix: str | None = None) -> dict[str, Path]:
    """Paths of the three split files ``<prefix>_<split>.pk`` in ``folder``; nothing is opened.

    Examples
    --------
    >>> find_reference_files("temp")  # doctest: +SKIP
    {'train': PosixPath('temp/dataSet_geolife_train.pk'), 'validation': ..., 'test': ...}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give the folder that holds the reference's <prefix>_train.pk")
    if prefix is None:
        suffixes = {f"_{split}{SUFFIX}" for split in SPLITS}
        prefixes = sorted(
            {f.name[: -len(s)] for f in folder.iterdir() for s in suffixes if f.name.endswith(s) and f.is_file()}
        )
        if not prefixes:
            raise DataError(f"{folder}: holds no reference pickles (<prefix>_train{SUFFIX}, _validation, _test)")
        if len(prefixes) > 1:
            raise DataError(f"{folder}: holds pickles of several data sets {prefixes}; choose one with --prefix")
        prefix = prefixes[0]
    files = {split: folder / f"{prefix}_{split}{SUFFIX}" for split in SPLITS}
    for file in files.values():
        if not file.is_file():
            raise DataError(f"{file}: missing; the reference writes {prefix}_{{train,validation,test}}{SUFFIX}")
    return files


def sample_set_from_reference(
    samples_by_split: dict[str, list[dict]],
    sources: dict[str, str] | None = None,
    num_locations: int | None = None,
    num_users: int | None = None,
) -> SampleSet:
    """Turn the reference's samples into a :class:`SampleSet` that batches back to the same arrays.

    Per sample, rows ``[o, o + n)`` are its ``n`` history steps and row
    ``o + n`` its target. History rows keep location, user, start minute and
    weekday; ``duration = floor(dur_X)`` clipped to ``[0, 2879]``; ``start_day
    = D - diff`` with ``D = max(0, max(diff))`` the target's day, so days are
    never negative and ``target day - step day`` is ``diff`` again. The target
    row holds ``Y``, the user and ``D``; its time features are unknown (0) and
    no model reads them. Ids are kept as encoded by the reference, so
    ``L = max location + 1`` and ``U = max user + 1`` over all splits.

    Parameters
    ----------
    samples_by_split
        ``{"train": [...], "validation": [...], "test": [...]}`` of sample
        dicts, as returned by :func:`load_reference_pickles`.
    sources
        Name of each split's file, used in error messages.
    num_locations, num_users
        The reference's ``total_loc_num`` and ``total_user_num``, when known:
        a location that occurs in no sample is invisible in the pickles, so
        ``L`` from the ids alone can be smaller than the reference's.

    Raises
    ------
    DataError
        On a missing key, arrays of unequal length, an empty history or an id
        out of range, naming the file and the sample's index.

    Examples
    --------
    >>> sample_set = sample_set_from_reference(load_reference_pickles("temp"))  # doctest: +SKIP
    >>> sample_set.samples["test"].columns.tolist()  # doctest: +SKIP
    ['history_start', 'history_end', 'target_index']
    """
    sources = sources or {}
    staypoints, samples = {}, {}
    for split in SPLITS:
        if split not in samples_by_split:
            raise DataError(f"reference samples lack the {split} split; found {sorted(samples_by_split)}")
        source = sources.get(split, f"{split} samples")
        steps, targets, lengths = _gather(source, samples_by_split[split])
        staypoints[split], samples[split] = _split_tables(source, steps, targets, lengths)
    seen_locations = 1 + max(int(sp["location_id"].max()) for sp in staypoints.values())
    seen_users = 1 + max(int(sp["user_id"].max()) for sp in staypoints.values())
    for key, given, seen in (("num_locations", num_locations, seen_locations), ("num_users", num_users, seen_users)):
        if given is not None and given < seen:
            raise DataError(f"{key}={given} is smaller than the ids in the samples need ({seen})")
    num_locations, num_users = num_locations or seen_locations, num_users or seen_users
    # Encoded ids are their own raw ids: known locations 2..L-1, users 1..U-1.
    return SampleSet(staypoints, samples, np.arange(2, num_locations), np.arange(1, num_users), dropped_users=0)


def _gather(source: str, samples: list[dict]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Concatenate each per-step array over the samples, and the targets; check keys, shapes and values."""
    if not samples:
        raise DataError(f"{source}: holds no samples")
    arrays = {key: [] for key in REFERENCE_KEYS}
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            kind = type(sample).__name__
            raise DataError(f"{source}: sample {i} is a {kind}; expected a dict with keys {list(REFERENCE_KEYS)}")
        missing = [key for key in REFERENCE_KEYS if key not in sample]
        if missing:
            raise DataError(f"{source}: sample {i} lacks keys {missing}; found {sorted(sample)}")
        for key in STEP_KEYS:
            arrays[key].append(np.asarray(sample[key]))
        target = np.asarray(sample["Y"])
        if target.size != 1:
            raise DataError(f"{source}: sample {i}: Y holds {target.size} values; expected one location id")
        arrays["Y"].append(target.reshape(1))
    lengths = _lengths(source, arrays)
    step_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    values = {key: _numeric(source, key, arrays[key]) for key in REFERENCE_KEYS}
    bad = np.flatnonzero(~np.isfinite(values["dur_X"]))
    if len(bad):
        i = _sample_of(bad[0], step_offsets)
        raise DataError(f"{source}: sample {i}: dur_X holds {values['dur_X'][bad[0]]}; expected finite minutes")
    for key in BOUNDS:
        offsets = np.arange(len(samples)) if key == "Y" else step_offsets  # Y: one value per sample
        values[key] = _check_ids(source, key, values[key], offsets)
    targets = values.pop("Y")
    return values, targets, lengths


def _lengths(source: str, arrays: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Number of history steps per sample; every per-step array must be 1-D with the length of ``X``."""
    sizes = {key: np.array([a.shape[0] if a.ndim == 1 else -1 for a in arrays[key]], np.int64) for key in STEP_KEYS}
    for key in STEP_KEYS:
        bad = np.flatnonzero(sizes[key] < 0)
        if len(bad):
            i = bad[0]
            shape = arrays[key][i].shape
            raise DataError(f"{source}: sample {i}: {key} has shape {shape}; expected one value per step")
    empty = np.flatnonzero(sizes["X"] == 0)
    if len(empty):
        raise DataError(f"{source}: sample {empty[0]}: X is empty; a sample needs at least one history step")
    for key in STEP_KEYS[1:]:
        bad = np.flatnonzero(sizes[key] != sizes["X"])
        if len(bad):
            i = bad[0]
            raise DataError(
                f"{source}: sample {i}: X has {sizes['X'][i]} steps but {key} has {sizes[key][i]}; "
                "every per-step array must have the length of X"
            )
    return sizes["X"]


def _numeric(source: str, key: str, arrays: list[np.ndarray]) -> np.ndarray:
    """The per-sample arrays of ``key`` concatenated; name the first sample whose values are not numbers."""
    values = np.concatenate(arrays)
    if values.dtype.kind not in "biuf":
        i = next(i for i, a in enumerate(arrays) if a.dtype.kind not in "biuf")
        raise DataError(f"{source}: sample {i}: {key} holds {arrays[i].dtype} values; expected numbers")
    return values


def _check_ids(source: str, key: str, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``values`` as int64 after checking they are whole numbers within :data:`BOUNDS`."""
    low, high = BOUNDS[key]
    whole = np.ones(len(values), dtype=bool)
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.floor(values))
    inside = whole & (values >= low if low is not None else True) & (values < high if high is not None else True)
    bad = np.flatnonzero(~inside)
    if len(bad):
        row = bad[0]
        rule = "a whole number" if not whole[row] else (f">= {low}" if high is None else f"in [{low}, {high})")
        hint = "; location and user ids start at 1 (0 is padding)" if low == 1 else ""
        i = _sample_of(row, offsets)
        raise DataError(f"{source}: sample {i}: {key} holds {values[row]}, expected {rule}{hint}")
    return values.astype(np.int64)


def _sample_of(row: int, offsets: np.ndarray) -> int:
    """Index of the sample whose values start at or before ``row`` (``offsets`` = each sample's first row)."""
    return int(np.searchsorted(offsets, row, side="right") - 1)


def _split_tables(
    source: str, steps: dict[str, np.ndarray], targets: np.ndarray, lengths: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Staypoint rows (each sample's history, then its target) and the samples' row ranges."""
    step_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    user = steps["user_X"][step_offsets]
    mixed = np.flatnonzero(steps["user_X"] != np.repeat(user, lengths))
    if len(mixed):
        i = _sample_of(mixed[0], step_offsets)
        raise DataError(f"{source}: sample {i}: user_X holds several users; a sample belongs to one user")
    # Day of the target: diff is relative, so any D works; max(0, max(diff)) keeps every day >= 0.
    day = np.maximum(np.maximum.reduceat(steps["diff"], step_offsets), 0)

    history_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    target_index = history_start + lengths
    is_history = np.ones(int(target_index[-1]) + 1, dtype=bool)
    is_history[target_index] = False
    sp = {column: np.zeros(len(is_history), dtype=np.int64) for column in STAYPOINT_COLUMNS}
    sp["user_id"] = np.repeat(user, lengths + 1)
    sp["location_id"][is_history] = steps["X"]
    sp["location_id"][target_index] = targets
    sp["start_day"][is_history] = np.repeat(day, lengths) - steps["diff"]
    sp["start_day"][target_index] = day
    sp["start_min"][is_history] = steps["start_min_X"]
    sp["weekday"][is_history] = steps["weekday_X"]
    sp["duration"][is_history] = np.clip(np.floor(steps["dur_X"]), 0, MAX_DURATION)
    samples = pd.DataFrame(dict(zip(SAMPLE_COLUMNS, (history_start, target_index, target_index))))
    return pd.DataFrame(sp), samples.astype(np.int64)
