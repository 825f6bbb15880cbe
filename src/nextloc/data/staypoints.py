"""Per-user steps with trackintel: position fixes -> staypoints, activity flag, tracking quality.

Each function works on one user's data, so a process pool can run users in
parallel with memory bounded by the largest user (docs/reference.md).
"""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import trackintel as ti

from nextloc.config import PreprocessConfig

CRS = "EPSG:4326"
RAW_STAYPOINT_COLUMNS = ("user_id", "started_at", "finished_at", "latitude", "longitude", "is_activity")


def generate_user_staypoints(fixes: pd.DataFrame, params: PreprocessConfig) -> tuple[pd.DataFrame, dict]:
    """Staypoints of one user's fixes with their activity flag, and the user's tracking quality.

    Returns a frame of :data:`RAW_STAYPOINT_COLUMNS` and ``{"tracked_days",
    "min_coverage", "mean_coverage"}`` (coverage: share of tracked time in
    sliding windows of ``coverage_window_weeks`` weeks; ``nan`` when the
    tracked span is shorter than one window).
    """
    pfs = ti.Positionfixes(
        gpd.GeoDataFrame(
            fixes[["user_id", "tracked_at"]],
            geometry=gpd.points_from_xy(fixes["longitude"], fixes["latitude"]),
            crs=CRS,
        )
    )
    with warnings.catch_warnings():  # a user without any stay is normal; the caller counts it
        warnings.filterwarnings("ignore", message="No staypoints can be generated")
        pfs, sp = pfs.generate_staypoints(
            method="sliding", distance_metric="haversine", dist_threshold=params.dist_threshold,
            time_threshold=params.time_threshold, gap_threshold=params.gap_threshold,
            include_last=params.include_last, n_jobs=1,
        )
    quality = {"tracked_days": 0, "min_coverage": float("nan"), "mean_coverage": float("nan")}
    if sp.empty:
        return pd.DataFrame(columns=list(RAW_STAYPOINT_COLUMNS)), quality
    sp = sp.create_activity_flag(method="time_threshold", time_threshold=params.activity_time_threshold)
    tracked = sp[["user_id", "started_at", "finished_at"]]
    if params.min_coverage is not None or params.mean_coverage is not None:
        triplegs = pfs.generate_triplegs(sp)[1]
        tracked = pd.concat([tracked, triplegs[["user_id", "started_at", "finished_at"]]], ignore_index=True)
        quality |= _coverage(tracked, params.coverage_window_weeks)
    quality["tracked_days"] = int((tracked["finished_at"].max() - tracked["started_at"].min()).days)
    table = pd.DataFrame(
        {
            "user_id": sp["user_id"].to_numpy(),
            "started_at": sp["started_at"].to_numpy(),
            "finished_at": sp["finished_at"].to_numpy(),
            "latitude": sp.geometry.y.to_numpy(),
            "longitude": sp.geometry.x.to_numpy(),
            "is_activity": sp["is_activity"].to_numpy(dtype=bool),
        }
    )
    table["started_at"] = pd.to_datetime(table["started_at"], utc=True)
    table["finished_at"] = pd.to_datetime(table["finished_at"], utc=True)
    return table, quality


def _coverage(tracked: pd.DataFrame, window_weeks: int) -> dict:
    """Minimum and mean tracked share over sliding windows of ``window_weeks`` whole weeks."""
    weekly = ti.analysis.temporal_tracking_quality(tracked, granularity="week")
    if weekly is None or weekly.empty:
        return {"min_coverage": float("nan"), "mean_coverage": float("nan")}
    share = weekly.set_index("week_monday")["quality"].sort_index()
    weeks = pd.date_range(share.index.min(), share.index.max(), freq="7D")
    share = share.reindex(weeks, fill_value=0.0).to_numpy()
    if len(share) < window_weeks:
        return {"min_coverage": float("nan"), "mean_coverage": float("nan")}
    windows = np.convolve(share, np.ones(window_weeks) / window_weeks, mode="valid")
    return {"min_coverage": float(windows.min()), "mean_coverage": float(windows.mean())}
