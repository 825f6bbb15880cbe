"""Staypoints -> train/validation/test splits, vocabularies and samples (docs/reference.md).

A sample is one ``(history, target)`` pair. Because each split is sorted by
``(user_id, start_day, start_min)``, every history is a contiguous row range of
its user's staypoints, so a sample is stored as three row indices into its
split's table: ``history_start``, ``history_end`` (exclusive) and
``target_index``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextloc.errors import DataError

STAYPOINT_COLUMNS = ("user_id", "location_id", "start_day", "start_min", "weekday", "duration")
SAMPLE_COLUMNS = ("history_start", "history_end", "target_index")
SPLITS = ("train", "validation", "test")
PADDING, UNSEEN = 0, 1  # location ids reserved before the known locations
MAX_DURATION = 2 * 1440 - 1  # minutes; docs/reference.md caps a staypoint's duration below two days


@dataclass
class SampleSet:
    """Encoded staypoints and samples of the three splits.

    ``staypoints[split]`` holds :data:`STAYPOINT_COLUMNS` with encoded ids
    (users ``1..n_user``, locations ``2..n_loc+1``, ``1`` = not seen in
    train) plus any extra input columns; ``samples[split]`` holds
    :data:`SAMPLE_COLUMNS`. ``known_locations[i]`` is the raw id of encoded
    location ``i + 2`` and ``users[i]`` the raw id of encoded user ``i + 1``.
    """

    staypoints: dict[str, pd.DataFrame]
    samples: dict[str, pd.DataFrame]
    known_locations: np.ndarray
    users: np.ndarray
    dropped_users: int

    @property
    def num_locations(self) -> int:
        """Size of the location table ``L`` (padding + unseen + known)."""
        return len(self.known_locations) + 2

    @property
    def num_users(self) -> int:
        """Size of the user table ``U`` (padding + users)."""
        return len(self.users) + 1


def generate_samples(
    sp: pd.DataFrame,
    previous_day: int = 7,
    train_fraction: float = 0.6,
    validation_fraction: float = 0.8,
    min_history: int = 3,
) -> SampleSet:
    """Split staypoints by time, encode ids and build the samples of each split.

    Users without a sample in any one split are dropped, and the splits,
    vocabularies and samples are built again on the rest (docs/reference.md, samples step 4).

    Parameters
    ----------
    sp
        One row per staypoint with :data:`STAYPOINT_COLUMNS`; raw user and
        location ids of any sortable type. Not modified.
    previous_day
        A target needs this many days of its split before it, and its history
        spans the ``previous_day`` days before its own day.
    train_fraction, validation_fraction
        A user's staypoints with ``start_day < train_fraction * max_day`` are
        train, then ``< validation_fraction * max_day`` validation, rest test.
    min_history
        Fewest history records a sample needs.

    Examples
    --------
    >>> sample_set = generate_samples(sp, previous_day=7)  # doctest: +SKIP
    >>> sample_set.samples["train"].columns.tolist()  # doctest: +SKIP
    ['history_start', 'history_end', 'target_index']
    """
    missing = [c for c in STAYPOINT_COLUMNS if c not in sp.columns]
    if missing:
        raise DataError(f"staypoints need columns {missing}; found {list(sp.columns)}")
    sp = sp.sort_values(["user_id", "start_day", "start_min"], kind="stable").reset_index(drop=True)
    split = split_by_time(sp, train_fraction, validation_fraction)
    valid_users = _users_with_samples_in_every_split(sp, split, previous_day, min_history)
    keep = sp["user_id"].isin(valid_users).to_numpy()
    n_dropped = sp["user_id"].nunique() - len(valid_users)
    if not keep.any():
        raise DataError(
            f"no user has a sample in every split (previous_day={previous_day}, "
            f"min_history={min_history}); lower previous_day or min_history"
        )
    sp, split = sp[keep].reset_index(drop=True), split[keep]
    return _encode(sp, split, previous_day, min_history, n_dropped)


def split_by_time(sp: pd.DataFrame, train_fraction: float, validation_fraction: float) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of each staypoint by its user's day range."""
    max_day = sp.groupby("user_id", sort=False)["start_day"].transform("max").to_numpy()
    day = sp["start_day"].to_numpy()
    return np.where(
        day < train_fraction * max_day, 0, np.where(day < validation_fraction * max_day, 1, 2)
    ).astype(np.int8)


def history_windows(
    user_codes: np.ndarray, start_day: np.ndarray, previous_day: int, min_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """History start row of every staypoint of one split, and whether it is a valid target.

    ``user_codes`` are dense ints, and rows are sorted by user, then time.
    The history of row ``t`` is ``[start[t], t)``: the user's earlier rows
    with ``start_day >= start_day[t] - previous_day``.
    """
    n = len(user_codes)
    rows = np.arange(n)
    first_row = np.searchsorted(user_codes, user_codes, side="left")
    days_in_split = start_day - start_day[first_row]
    # One sorted key over all users turns each window bound into a searchsorted.
    stride = int(start_day.max(initial=0)) + previous_day + 1
    key = user_codes.astype(np.int64) * stride + start_day
    start = np.searchsorted(key, key - previous_day, side="left")
    start = np.maximum(start, first_row)
    is_target = (days_in_split >= previous_day) & (rows - start >= min_history)
    return start, is_target


def _split_windows(sp: pd.DataFrame, split: np.ndarray, previous_day: int, min_history: int):
    """Yield (split index, row mask, history start, is_target) for the three splits."""
    for s in range(len(SPLITS)):
        mask = split == s
        part = sp[mask]
        codes = pd.factorize(part["user_id"], sort=True)[0] if len(part) else np.zeros(0, np.int64)
        start, is_target = history_windows(codes, part["start_day"].to_numpy(), previous_day, min_history)
        yield s, mask, start, is_target


def _users_with_samples_in_every_split(sp, split, previous_day, min_history) -> np.ndarray:
    users = None
    for _, mask, _, is_target in _split_windows(sp, split, previous_day, min_history):
        with_target = np.unique(sp["user_id"].to_numpy()[mask][is_target])
        users = with_target if users is None else np.intersect1d(users, with_target)
    return users


def _encode(sp, split, previous_day, min_history, n_dropped) -> SampleSet:
    train_locations = sp["location_id"].to_numpy()[split == 0]
    known_locations = np.unique(train_locations)
    users = np.unique(sp["user_id"].to_numpy())
    encoded = sp.copy()
    encoded["raw_location_id"] = sp["location_id"].to_numpy()
    encoded["user_id"] = np.searchsorted(users, sp["user_id"].to_numpy()) + 1
    encoded["location_id"] = encode_locations(sp["location_id"].to_numpy(), known_locations)
    staypoints, samples = {}, {}
    for s, mask, start, is_target in _split_windows(sp, split, previous_day, min_history):
        target = np.flatnonzero(is_target)
        staypoints[SPLITS[s]] = encoded[mask].reset_index(drop=True)
        samples[SPLITS[s]] = pd.DataFrame(
            {"history_start": start[target], "history_end": target, "target_index": target}
        ).astype(np.int64)
    return SampleSet(staypoints, samples, known_locations, users, n_dropped)


def encode_locations(raw: np.ndarray, known_locations: np.ndarray) -> np.ndarray:
    """Encoded id of each raw location: ``2 + position`` in the sorted known ids, else ``1``."""
    pos = np.searchsorted(known_locations, raw)
    found = pos < len(known_locations)
    found[found] = known_locations[pos[found]] == raw[found]
    return np.where(found, pos + 2, UNSEEN).astype(np.int64)
