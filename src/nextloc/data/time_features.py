"""Visits with start and end times -> the time columns of the processed format (docs/reference.md); time parsing.

Shared by preprocessing and by prediction, so that a history given at
prediction time is described exactly as the training histories were.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextloc.data.samples import MAX_DURATION
from nextloc.errors import DataError

ZONE_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"  # an ISO 8601 time that ends with its offset


def staypoint_time_features(sp: pd.DataFrame, timezone: str | None) -> pd.DataFrame:
    """start_day (since the user's first local date), start_min, weekday and duration in minutes."""
    started = pd.to_datetime(sp["started_at"], utc=True)
    finished = pd.to_datetime(sp["finished_at"], utc=True)
    if timezone:
        started, finished = started.dt.tz_convert(timezone), finished.dt.tz_convert(timezone)
    local = started.dt.tz_localize(None)
    first_day = local.groupby(sp["user_id"]).transform("min").dt.normalize()
    return pd.DataFrame(
        {
            "user_id": sp["user_id"].astype(str).to_numpy(),
            "location_id": sp["location_id"].to_numpy(),  # raw ids: integers, or text (check-in venues)
            "start_day": (local - first_day).dt.days.to_numpy(np.int64),
            "start_min": (local.dt.hour * 60 + local.dt.minute).to_numpy(np.int64),
            "weekday": local.dt.weekday.to_numpy(np.int64),
            "duration": ((finished - started).dt.total_seconds() // 60).clip(0, MAX_DURATION).to_numpy(np.int64),
        }
    )


def parse_times(rows: pd.DataFrame, column: str, timezone: str | None) -> pd.Series:
    """ISO 8601 times as UTC; those without an offset are read in ``timezone`` (UTC when None).

    A missing or unreadable time is one :class:`DataError` naming its row (1 = the first data line) and column.
    """
    no_missing(rows, column)
    text = rows[column].astype(str)
    zoned = text.str.contains(ZONE_SUFFIX, regex=True).to_numpy()
    parsed = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    if zoned.any():
        parsed[zoned] = pd.to_datetime(text[zoned], format="ISO8601", utc=True, errors="coerce")
    if (~zoned).any():
        naive = pd.to_datetime(text[~zoned], format="ISO8601", errors="coerce")
        parsed[~zoned] = naive.dt.tz_localize(timezone or "UTC", ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise DataError(f"row {first_row(bad)}, column {column}: {text[bad].iloc[0]!r} is not a time (use ISO 8601)")
    return parsed


def no_missing(rows: pd.DataFrame, column: str) -> None:
    """Raise naming the first row whose ``column`` is empty."""
    empty = rows[column].isna().to_numpy()
    if empty.any():
        raise DataError(f"row {first_row(empty)}, column {column}: empty")


def first_row(bad: np.ndarray) -> int:
    """The first bad row, counted as in the CSV file (1 = the first data line)."""
    return int(np.flatnonzero(bad)[0]) + 1
