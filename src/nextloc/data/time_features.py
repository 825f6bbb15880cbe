"""Visits with start and end times -> the time columns of the processed format (docs/reference.md).

Shared by preprocessing and by prediction, so that a history given at
prediction time is described exactly as the training histories were.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextloc.data.samples import MAX_DURATION

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
            "location_id": sp["location_id"].to_numpy(np.int64),
            "start_day": (local - first_day).dt.days.to_numpy(np.int64),
            "start_min": (local.dt.hour * 60 + local.dt.minute).to_numpy(np.int64),
            "weekday": local.dt.weekday.to_numpy(np.int64),
            "duration": ((finished - started).dt.total_seconds() // 60).clip(0, MAX_DURATION).to_numpy(np.int64),
        }
    )
