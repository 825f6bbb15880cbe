"""Predict the next place of each user from visits as a user has them: ``TrainedRun.predict`` and ``scripts/predict.py``.

A visit is a row with ``user_id``, ``started_at``, ``finished_at`` and either
a raw ``location_id`` (as in the data set) or ``latitude`` and ``longitude``
(matched to the nearest known location centroid within the data set's
``eps``). Times without an offset are read in the data set's time zone.

Each user's history follows the training rules (docs/reference.md): the
visits that start before the prediction time ``at`` on the ``previous_day``
days before its day, described by the same time features. ``at`` defaults to
the end of the user's last visit. A place the model has not seen becomes the
``unseen`` class; a user it has not seen is user 0, which each model handles
as it documents (the ``lstm`` uses the mean of its known users' vectors), and
is reported with ``user_known = False`` and a warning.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from nextloc.data.batches import SplitTensors
from nextloc.data.samples import PADDING, UNSEEN, encode_locations
from nextloc.data.time_features import first_row, no_missing, parse_times, staypoint_time_features
from nextloc.errors import DataError

if TYPE_CHECKING:
    from nextloc.trained import TrainedRun

log = logging.getLogger(__name__)

TIME_COLUMNS = ("started_at", "finished_at")
EARTH_RADIUS_M = 6_371_000.0
BATCH_SIZE = 1024


def predict_visits(run: TrainedRun, visits: pd.DataFrame, k: int = 10, at=None) -> pd.DataFrame:
    """Top-``k`` next places per user of ``visits`` (see the module docstring); one row per user and rank.

    Columns: ``user_id`` (raw), ``rank`` (1 = most likely), ``location_id``
    (raw), ``latitude``, ``longitude`` (the location's centroid, when known),
    ``probability`` (empty for count-based models, which only rank),
    ``score``, ``history_length`` and ``user_known``.
    """
    if not isinstance(k, int) or k < 1:
        raise DataError(f"k={k!r}: give the number of places to predict per user, at least 1")
    if run.locations is None:
        raise DataError("this run's data set has no location table (imported from pickles): raw places cannot be mapped")
    params = run.config.dataset.preprocess
    visits = _checked(visits)
    started, finished = (parse_times(visits, c, params.timezone) for c in TIME_COLUMNS)
    users, user_codes = _encode_users(run, visits["user_id"])
    location = _encode_places(run, visits, params.eps)
    n_users = len(users)
    if at is None:  # after each user's last visit
        target_time = finished.groupby(user_codes).max().reindex(range(n_users)).reset_index(drop=True)
        before = np.ones(len(visits), bool)
    else:
        try:
            at = parse_times(pd.DataFrame({"at": [str(at)]}), "at", params.timezone).iloc[0]
        except DataError:
            raise DataError(f"at={at!r} is not a time; use ISO 8601, e.g. 2024-03-01T08:00") from None
        target_time = pd.Series(at, index=range(n_users))
        before = (started < at).to_numpy()
        if not before.any():
            raise DataError(f"no visit starts before --at {at}; give visits before it or a later time")
    frame = pd.DataFrame({  # every visit before its user's prediction time, then one target row per user at that time
        "user_id": np.concatenate([user_codes[before], np.arange(n_users)]),
        "location_id": np.concatenate([location[before], np.full(n_users, PADDING)]),
        "started_at": pd.concat([started[before], target_time], ignore_index=True),
        "finished_at": pd.concat([finished[before], target_time], ignore_index=True),
        "is_target": np.concatenate([np.zeros(before.sum(), bool), np.ones(n_users, bool)]),
    })
    frame = frame.sort_values(["user_id", "is_target", "started_at"], kind="stable").reset_index(drop=True)
    features = staypoint_time_features(frame, params.timezone)
    features["user_id"] = users["encoded"].to_numpy()[frame["user_id"].to_numpy()]
    staypoints, samples, history_length = _windows(frame, features, params.previous_day)
    has_history = history_length > 0
    if not has_history.all():
        log.warning("%d user(s) have no visit in the %d days before their prediction time; no prediction for them",
                    int((~has_history).sum()), params.previous_day)
    short = has_history & (history_length < params.min_history)
    if short.any():
        log.warning("%d user(s) have fewer than %d visits in their window (training needed that many)",
                    int(short.sum()), params.min_history)
    unknown = users["encoded"].to_numpy() == 0
    if unknown.any():
        log.warning("%d user(s) are not in the training data: %s", int(unknown.sum()),
                    ", ".join(map(str, users["raw"][unknown].head(5))) + (" ..." if unknown.sum() > 5 else ""))
    split = SplitTensors(staypoints, samples[has_history].reset_index(drop=True), run.model.inputs)
    scores, probabilities = _score(run, split)
    return _top_k(run, scores, probabilities, k, users[has_history], history_length[has_history])


def _checked(visits: pd.DataFrame) -> pd.DataFrame:
    """The visits with the columns prediction needs; a missing column or empty input is one clear error."""
    if not isinstance(visits, pd.DataFrame):
        raise DataError(f"visits must be a pandas DataFrame, not {type(visits).__name__}")
    if visits.empty:
        raise DataError("no visits given")
    place = ["location_id"] if "location_id" in visits else ["latitude", "longitude"]
    missing = [c for c in ("user_id", *TIME_COLUMNS) if c not in visits]
    if not set(place) <= set(visits.columns):
        missing.append("location_id (or latitude and longitude)")
    if missing:
        raise DataError(f"visits lack the columns {missing}; found {list(visits.columns)}")
    visits = visits.reset_index(drop=True)
    for column in ("user_id", *place):
        no_missing(visits, column)
    return visits


def _encode_users(run: TrainedRun, raw_users: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct users (raw id, encoded id or 0 when unknown) and each visit's position among them."""
    codes, raw = pd.factorize(raw_users.astype(str), sort=True)
    position = pd.Index(run.users["raw_user_id"].astype(str)).get_indexer(raw)  # -1: not in the training data
    encoded = np.where(position >= 0, run.users["user_id"].to_numpy()[position], 0).astype(np.int64)
    return pd.DataFrame({"raw": np.asarray(raw), "encoded": encoded}), codes


def _encode_places(run: TrainedRun, visits: pd.DataFrame, eps: float) -> np.ndarray:
    """Encoded location of every visit: by raw id, or the nearest centroid within ``eps`` metres; else unseen."""
    table = run.locations[run.locations["location_id"] > UNSEEN]
    if "location_id" in visits:
        raw_ids = table["raw_location_id"].to_numpy()
        if raw_ids.dtype.kind in "iu":  # whole numbers: refuse 3.5 or "east" rather than truncate or guess
            numeric = pd.to_numeric(visits["location_id"], errors="coerce")
            bad = (numeric.isna() | (numeric != numeric.round())).to_numpy()
            if bad.any():
                raise DataError(f"row {first_row(bad)}, column location_id: {visits['location_id'][bad].iloc[0]} "
                                "is not a location id of this data set (whole numbers)")
            given = numeric.to_numpy().astype(raw_ids.dtype)
        else:
            given, raw_ids = visits["location_id"].astype(str).to_numpy(), raw_ids.astype(str)
        order = np.argsort(raw_ids)
        known = encode_locations(given, raw_ids[order])  # 2 + position among the sorted raw ids, or unseen
        return np.where(known > UNSEEN, table["location_id"].to_numpy()[order][np.maximum(known - 2, 0)], UNSEEN)
    from sklearn.neighbors import BallTree

    coordinates = visits[["latitude", "longitude"]].apply(pd.to_numeric, errors="coerce")
    bad = (coordinates.isna().any(axis=1) | ~coordinates["latitude"].between(-90, 90)
           | ~coordinates["longitude"].between(-180, 180)).to_numpy()
    if bad.any():
        raise DataError(f"row {first_row(bad)}, columns latitude/longitude: "
                        f"{visits['latitude'][bad].iloc[0]!r}, {visits['longitude'][bad].iloc[0]!r} is not a coordinate")
    tree = BallTree(np.radians(table[["latitude", "longitude"]].to_numpy()), metric="haversine")
    distance, nearest = tree.query(np.radians(coordinates.to_numpy()), k=1)
    within = distance[:, 0] * EARTH_RADIUS_M <= eps
    return np.where(within, table["location_id"].to_numpy()[nearest[:, 0]], UNSEEN)


def _windows(frame: pd.DataFrame, features: pd.DataFrame, previous_day: int):
    """Staypoint rows and one sample per user: the visits on the ``previous_day`` days before the target's day."""
    user = frame["user_id"].to_numpy()
    target_row = np.flatnonzero(frame["is_target"].to_numpy())  # one per user, last of its user's rows
    day = features["start_day"].to_numpy()
    target_day = day[target_row][user]
    in_window = (day >= target_day - previous_day) | frame["is_target"].to_numpy()
    keep = np.flatnonzero(in_window)
    staypoints = features.iloc[keep].reset_index(drop=True)
    kept_user = user[keep]
    first = np.searchsorted(kept_user, np.arange(len(target_row)), side="left")
    last = np.searchsorted(kept_user, np.arange(len(target_row)), side="right") - 1  # the target row
    samples = pd.DataFrame({"history_start": first, "history_end": last, "target_index": last}).astype(np.int64)
    return staypoints, samples, last - first


@torch.no_grad()
def _score(run: TrainedRun, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (and probabilities, where the model gives them) of every sample, in order, without the padding class."""
    run.model.eval()
    scores, probabilities = [], []
    for batch in split.batches(BATCH_SIZE, shuffle=False, drop_last=False):
        batch_scores = run.model(batch)
        scores.append(batch_scores)
        probabilities.append(run.model.probabilities(batch_scores))
    scores = torch.cat(scores)
    return scores, None if probabilities[0] is None else torch.cat(probabilities)


def _top_k(run, scores, probabilities, k, users, history_length) -> pd.DataFrame:
    """One row per user and rank among the known places (padding and ``unseen`` are never predicted)."""
    ranked = scores.clone()
    ranked[:, : UNSEEN + 1] = -torch.inf
    k = min(k, ranked.shape[1] - UNSEEN - 1)
    top_scores, top_classes = ranked.topk(k, dim=1)  # k is small: no sort over all classes
    table = run.locations.drop_duplicates("location_id").set_index("location_id")
    classes = top_classes.reshape(-1).numpy()
    place = table.reindex(classes)
    n = len(users)
    return pd.DataFrame({
        "user_id": np.repeat(users["raw"].to_numpy(), k),
        "rank": np.tile(np.arange(1, k + 1), n),
        "location_id": place["raw_location_id"].to_numpy(),
        "latitude": place["latitude"].to_numpy(),
        "longitude": place["longitude"].to_numpy(),
        "probability": (np.full(n * k, np.nan) if probabilities is None
                        else probabilities.gather(1, top_classes).reshape(-1).numpy()),
        "score": top_scores.reshape(-1).numpy(),
        "history_length": np.repeat(history_length, k),
        "user_known": np.repeat(users["encoded"].to_numpy() > 0, k),
    })
