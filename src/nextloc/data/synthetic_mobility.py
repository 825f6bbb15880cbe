"""Seeded synthetic human mobility at the staypoint level.

Each user lives in a shared pool of places (a ~20 km city box around Beijing)
and has a home, usually a work place, and a handful of favourite places that
are preferably near home. Time runs continuously: every stay's next place is
drawn from a known distribution that depends on the current place's kind
(home/work/other), weekday vs. weekend and the departure hour, mixed with a
small exploration probability of a never visited place. Because every choice
has a known distribution, each staypoint carries ``oracle_p``, the probability
of the most likely place in the distribution it was drawn from, i.e. the
expected acc@1 of an oracle that knows the user's true model.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_right
from typing import NamedTuple

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_HOME, _WORK, _OTHER = 0, 1, 2
_CENTER_LAT, _CENTER_LON = 39.9, 116.4
_KM_PER_DEG_LAT = 111.32
_BOX_KM = 20.0
_MIN_CELL_KM = 0.2
_MARGIN_KM = 0.075  # points keep this distance from their grid-cell border
_WORK_SCALE_KM = 6.0  # work places are drawn preferring the city centre
_FAV_SCALE_KM = 2.5  # favourite places are drawn preferring places near home
_ZIPF_EXPONENT = 2.0
_NEW_PLACE_WEIGHT = 0.25  # explored place weight, relative to the smallest initial weight
_WORK_SHARE = 0.8
_MIN_DURATION, _MAX_DURATION = 26, 2 * 1440 - 1
_MIN_PLACES = 12
_NS_PER_MIN = 60 * 10**9
_NS_PER_DAY = 1440 * _NS_PER_MIN

# departure hour -> bucket: 0 night (0-4 h), 1 morning (5-10 h), 2 midday (11-15 h),
# 3 late afternoon (16-18 h), 4 evening (19-23 h)
_BUCKET_OF_HOUR = (0,) * 5 + (1,) * 6 + (2,) * 5 + (3,) * 3 + (4,) * 5

# _TRANSITIONS[is_weekend][current kind][bucket] = (p_home, p_work, p_other).
# The current kind never transitions to itself as a kind (p_home = 0 at home,
# p_work = 0 at work); "other" mass is spread over favourites except the current place.
_TRANSITIONS = (
    (  # weekday
        ((0, 0.2, 0.8), (0, 0.85, 0.15), (0, 0.5, 0.5), (0, 0.15, 0.85), (0, 0.05, 0.95)),
        ((0.9, 0, 0.1), (0.3, 0, 0.7), (0.25, 0, 0.75), (0.7, 0, 0.3), (0.85, 0, 0.15)),
        ((0.95, 0, 0.05), (0.25, 0.6, 0.15), (0.3, 0.5, 0.2), (0.6, 0.1, 0.3), (0.85, 0.02, 0.13)),
    ),
    (  # weekend
        ((0, 0, 1.0), (0, 0.06, 0.94), (0, 0.04, 0.96), (0, 0.02, 0.98), (0, 0.01, 0.99)),
        ((0.9, 0, 0.1), (0.4, 0, 0.6), (0.4, 0, 0.6), (0.6, 0, 0.4), (0.8, 0, 0.2)),
        (
            (0.95, 0, 0.05), (0.3, 0.05, 0.65), (0.35, 0.03, 0.62),
            (0.55, 0.02, 0.43), (0.8, 0.01, 0.19),
        ),
    ),
)


def generate_staypoints(
    n_users: int = 30,
    n_days: int = 90,
    seed: int = 0,
    *,
    n_places: int | None = None,
    tracked_day_share: float = 0.85,
    explore_prob: float = 0.02,
    start_date: str = "2024-01-01",
    timezone: str = "Asia/Shanghai",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate a seeded synthetic staypoint data set.

    Parameters
    ----------
    n_users : int, default 30
        Number of simulated users.
    n_days : int, default 90
        Number of simulated local days, starting at ``start_date``.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`; the output is fully determined by it.
    n_places : int, optional
        Size of the global place pool; defaults to ``8 * n_users + 50``.
    tracked_day_share : float, default 0.85
        Probability that a day is tracked. Each user additionally gets 0-2
        multi-day gaps (3-10 days). Stays starting on untracked days are dropped.
    explore_prob : float, default 0.02
        Probability that the next place is a pool place the user never visited.
    start_date : str, default "2024-01-01"
        First simulated local date.
    timezone : str, default "Asia/Shanghai"
        Time zone of ``started_at`` / ``finished_at``.

    Returns
    -------
    staypoints : pandas.DataFrame
        Sorted by ``(user_id, started_at)``, columns ``user_id``, ``location_id``,
        ``started_at``, ``finished_at``, ``start_day`` (days since the user's first
        tracked local date), ``start_min``, ``weekday``, ``duration`` (minutes) and
        ``oracle_p`` (largest single-place probability of the distribution the
        stay's place was drawn from).
    places : pandas.DataFrame
        Columns ``location_id``, ``latitude``, ``longitude``; places are >= 150 m apart.

    Examples
    --------
    >>> sp, places = generate_staypoints(n_users=2, n_days=7, seed=1)
    >>> sorted(sp["user_id"].unique().tolist())
    [0, 1]
    >>> bool(sp["location_id"].isin(places["location_id"]).all())
    True
    """
    n_places = 8 * n_users + 50 if n_places is None else n_places
    _validate(n_users, n_days, n_places, tracked_day_share, explore_prob)
    tic = time.perf_counter()
    rng = np.random.default_rng(seed)
    xy = _make_place_xy(rng, n_places)
    homes = rng.choice(n_places, size=n_users, replace=n_users > n_places)
    t0 = pd.Timestamp(start_date, tz=timezone).normalize()
    xs, ys = xy[:, 0].tolist(), xy[:, 1].tolist()
    tracked = np.zeros((n_users, n_days), dtype=bool)
    cols: dict[str, list] = {"loc": [], "start": [], "dur": [], "oracle": []}
    counts = np.zeros(n_users, dtype=np.int64)
    for user, user_rng in enumerate(rng.spawn(n_users)):
        tracked[user] = _tracked_days(user_rng, n_days, tracked_day_share)
        profile = _build_profile(user_rng, xy, int(homes[user]))
        sim = _UserSimulator(user_rng, profile, (xs, ys), t0.dayofweek, explore_prob)
        loc, start, dur, oracle = sim.run(n_days * 1440)
        for key, values in zip(("loc", "start", "dur", "oracle"), (loc, start, dur, oracle)):
            cols[key].extend(values)
        counts[user] = len(loc)
    staypoints = _assemble(cols, counts, tracked, t0)
    places = _places_frame(xy)
    logger.info(
        "generated %d staypoints for %d users over %d days at %d places in %.2f s",
        len(staypoints), n_users, n_days, n_places, time.perf_counter() - tic,
    )
    return staypoints, places


class _Profile(NamedTuple):
    home: int
    work: int  # -1 if the user has no work place
    favs: list[int]
    weights: list[float]
    unvisited: np.ndarray  # random permutation of the pool places not known to the user


def _validate(n_users: int, n_days: int, n_places: int, share: float, explore: float) -> None:
    if n_users < 1 or n_days < 1:
        raise ValueError(f"n_users and n_days must be >= 1, got {n_users}, {n_days}")
    if n_places < _MIN_PLACES:
        raise ValueError(f"n_places must be >= {_MIN_PLACES}, got {n_places}")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"tracked_day_share must be in (0, 1], got {share}")
    if not 0.0 <= explore < 1.0:
        raise ValueError(f"explore_prob must be in [0, 1), got {explore}")


def _make_place_xy(rng: np.random.Generator, n_places: int) -> np.ndarray:
    """Jittered-grid places in km around the centre, denser towards the centre.

    Each place lies in its own grid cell, at least ``_MARGIN_KM`` from the cell
    border, so any two places are at least ``2 * _MARGIN_KM`` apart.
    """
    per_side = math.ceil(math.sqrt(1.5 * n_places))
    cell = max(_MIN_CELL_KM, _BOX_KM / per_side)
    side = cell * per_side
    ij = np.stack(np.divmod(np.arange(per_side * per_side), per_side), axis=1)
    centres = (ij + 0.5) * cell - side / 2
    r2 = (centres**2).sum(axis=1)
    p = np.exp(-r2 / (2 * (side / 4) ** 2)) + 0.2
    cells = rng.choice(len(centres), size=n_places, replace=False, p=p / p.sum())
    jitter = rng.uniform(_MARGIN_KM, cell - _MARGIN_KM, size=(n_places, 2))
    return ij[cells] * cell - side / 2 + jitter


def _places_frame(xy: np.ndarray) -> pd.DataFrame:
    lat = _CENTER_LAT + xy[:, 1] / _KM_PER_DEG_LAT
    lon = _CENTER_LON + xy[:, 0] / (_KM_PER_DEG_LAT * math.cos(math.radians(_CENTER_LAT)))
    return pd.DataFrame(
        {"location_id": np.arange(len(xy), dtype=np.int64), "latitude": lat, "longitude": lon}
    )


def _build_profile(rng: np.random.Generator, xy: np.ndarray, home: int) -> _Profile:
    """Draw a user's work place, favourites (near home, Zipf weights) and exploration order."""
    n_places = len(xy)
    work = -1
    if rng.random() < _WORK_SHARE:
        p = np.exp(-np.hypot(xy[:, 0], xy[:, 1]) / _WORK_SCALE_KM)
        p[home] = 0.0
        work = int(rng.choice(n_places, p=p / p.sum()))
    p = np.exp(-np.hypot(*(xy - xy[home]).T) / _FAV_SCALE_KM)
    p[home] = 0.0
    if work >= 0:
        p[work] = 0.0
    n_favs = int(rng.integers(3, 9))
    favs = rng.choice(n_places, size=n_favs, replace=False, p=p / p.sum())
    weights = 1.0 / np.arange(1, n_favs + 1) ** _ZIPF_EXPONENT
    known = np.zeros(n_places, dtype=bool)
    known[favs] = known[home] = True
    if work >= 0:
        known[work] = True
    unvisited = rng.permutation(np.flatnonzero(~known))
    return _Profile(home, work, favs.tolist(), weights.tolist(), unvisited)


def _tracked_days(rng: np.random.Generator, n_days: int, share: float) -> np.ndarray:
    """Boolean mask of tracked days: user-specific period, random days off, 0-2 gaps."""
    max_offset = min(7, n_days // 10)
    first = int(rng.integers(0, max_offset + 1))
    last = n_days - 1 - int(rng.integers(0, max_offset + 1))
    tracked = rng.random(n_days) < share
    tracked[:first] = False
    tracked[last + 1 :] = False
    for _ in range(int(rng.integers(0, 3))):
        length = int(rng.integers(3, 11))
        if last - first - 1 > length:
            gap_start = int(rng.integers(first + 1, last - length + 1))
            tracked[gap_start : gap_start + length] = False
    tracked[first] = tracked[last] = True
    return tracked


def _stream(draw, chunk: int = 4096):
    """Endless iterator over scalars drawn in chunks (cheap per-draw access)."""
    while True:
        yield from draw(chunk).tolist()


def _no_work_table() -> tuple:
    """Transition table for users without work: work mass goes to other places."""
    return tuple(
        tuple(tuple((ph, 0.0, pw + po) for ph, pw, po in kind) for kind in day)
        for day in _TRANSITIONS
    )


class _UserSimulator:
    """Continuous-time simulation of one user's stays (times in minutes since ``t0``)."""

    def __init__(
        self, rng, profile: _Profile, xy: tuple[list, list], weekday0: int, explore: float
    ) -> None:
        self._u = _stream(rng.random).__next__
        self._n = _stream(rng.standard_normal).__next__
        self._home, self._work = profile.home, profile.work
        self._x, self._y = xy
        self._weekday0 = weekday0
        self._explore_p = explore
        self._table = _TRANSITIONS if profile.work >= 0 else _no_work_table()
        self._favs = list(profile.favs)
        self._weight = dict(zip(profile.favs, profile.weights))
        self._cum = np.cumsum(profile.weights).tolist()
        self._new_weight = _NEW_PLACE_WEIGHT * min(profile.weights)
        order = sorted(self._weight, key=self._weight.get, reverse=True)
        self._top_place = order[0]
        self._top1, self._top2 = self._weight[order[0]], self._weight[order[1]]
        self._unvisited = profile.unvisited
        self._n_explored = 0

    def run(self, end: int) -> tuple[list, list, list, list]:
        """Simulate stays starting before ``end``; the first stay (eve of day 0) is warm-up."""
        u = self._u
        t = -1440 + 18 * 60 + int(120 * u())
        place, kind, oracle = self._home, _HOME, 1.0
        locs, starts, durs, oracles = [], [], [], []
        while t < end:
            dur = self._duration(kind, t)
            locs.append(place)
            starts.append(t)
            durs.append(dur)
            oracles.append(oracle)
            nxt, kind, oracle = self._choose_next(place, kind, t + dur)
            t += dur + self._travel_minutes(place, nxt)
            place = nxt
        return locs, starts, durs, oracles

    def _choose_next(self, place: int, kind: int, t: int) -> tuple[int, int, float]:
        """Draw the next place; return it, its kind and the distribution's max probability."""
        day, minute = divmod(t, 1440)
        weekend = (self._weekday0 + day) % 7 >= 5
        p_home, p_work, p_other = self._table[weekend][kind][_BUCKET_OF_HOUR[minute // 60]]
        total = self._cum[-1]
        if kind == _OTHER:
            top = self._top2 if place == self._top_place else self._top1
            best_other = p_other * top / (total - self._weight[place])
        else:
            best_other = p_other * self._top1 / total
        n_unvisited = len(self._unvisited) - self._n_explored
        explore = self._explore_p if n_unvisited > 0 else 0.0
        best = max(p_home, p_work, best_other) * (1.0 - explore)
        oracle = max(best, explore / n_unvisited) if n_unvisited else best
        if self._u() < explore:
            return self._explore(), _OTHER, oracle
        r = self._u()
        if r < p_home:
            return self._home, _HOME, oracle
        if r < p_home + p_work:
            return self._work, _WORK, oracle
        return self._favourite(place, total), _OTHER, oracle

    def _favourite(self, exclude: int, total: float) -> int:
        """Weighted favourite draw, conditioned on not being ``exclude`` (by rejection)."""
        favs, cum, u = self._favs, self._cum, self._u
        while True:
            cand = favs[bisect_right(cum, u() * total)]
            if cand != exclude:
                return cand

    def _explore(self) -> int:
        place = int(self._unvisited[self._n_explored])
        self._n_explored += 1
        self._favs.append(place)
        self._weight[place] = self._new_weight
        self._cum.append(self._cum[-1] + self._new_weight)
        return place

    def _duration(self, kind: int, t: int) -> int:
        """Stay duration in minutes for arriving at a place of ``kind`` at time ``t``."""
        day, minute = divmod(t, 1440)
        hour = minute // 60
        n = self._n
        if kind == _HOME:
            if 5 <= hour < 16 or (16 <= hour < 20 and self._u() < 0.35):
                dur = 110.0 * math.exp(0.5 * n())
            else:  # overnight: leave the next morning (the same morning after midnight)
                leave_day = day + (hour >= 16)
                if (self._weekday0 + leave_day) % 7 >= 5:
                    leave = min(max(9.0 * 60 + 45.0 * n(), 420.0), 660.0)
                else:
                    leave = min(max(8.0 * 60 + 30.0 * n(), 390.0), 570.0)
                dur = leave_day * 1440 + leave - t
        elif kind == _WORK:
            dur = self._work_duration(minute, hour)
        else:
            dur = min(70.0 * math.exp(0.6 * n()), 240.0)
        return int(min(max(dur, _MIN_DURATION), _MAX_DURATION))

    def _work_duration(self, minute: int, hour: int) -> float:
        n = self._n
        if hour < 11:
            if self._u() < 0.3:  # leave for a lunch break around noon
                lunch = 720.0 + 15.0 * n() - minute
                if lunch >= 90.0:
                    return lunch
            return min(max(480.0 + 60.0 * n(), 300.0), 660.0)
        if hour < 15:  # back from lunch, leave around 17:45
            return max(1065.0 + 45.0 * n() - minute, 60.0)
        return 150.0 * math.exp(0.4 * n())

    def _travel_minutes(self, a: int, b: int) -> int:
        """Travel gap: ~20 km/h plus overhead and noise, clipped to 5-60 min."""
        dist = math.hypot(self._x[a] - self._x[b], self._y[a] - self._y[b])
        gap = (6.0 + 3.0 * dist) * math.exp(0.2 * self._n())
        return int(min(max(gap, 5.0), 60.0))


def _assemble(
    cols: dict[str, list], counts: np.ndarray, tracked: np.ndarray, t0: pd.Timestamp
) -> pd.DataFrame:
    """Build the staypoint frame once from the simulated columns, dropping untracked days."""
    n_users, n_days = tracked.shape
    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    start = np.asarray(cols["start"], dtype=np.int64)
    dur = np.asarray(cols["dur"], dtype=np.int64)
    start_ns = t0.value + start * _NS_PER_MIN
    local_ns = pd.to_datetime(start_ns, utc=True).tz_convert(t0.tz).tz_localize(None).asi8
    local0_ns = t0.tz_localize(None).value
    day = (local_ns - local0_ns) // _NS_PER_DAY
    in_range = (day >= 0) & (day < n_days)
    keep = in_range & tracked[user, np.clip(day, 0, n_days - 1)]
    user, start_ns, dur, day, local_ns = (a[keep] for a in (user, start_ns, dur, day, local_ns))
    first_row = np.searchsorted(user, user, side="left")
    return pd.DataFrame(
        {
            "user_id": user,
            "location_id": np.asarray(cols["loc"], dtype=np.int64)[keep],
            "started_at": pd.to_datetime(start_ns, utc=True).tz_convert(t0.tz),
            "finished_at": pd.to_datetime(start_ns + dur * _NS_PER_MIN, utc=True).tz_convert(t0.tz),
            "start_day": day - day[first_row],
            "start_min": (local_ns // _NS_PER_MIN) % 1440,
            "weekday": (local_ns // _NS_PER_DAY + 3) % 7,  # 1970-01-01 was a Thursday
            "duration": dur,
            "oracle_p": np.asarray(cols["oracle"], dtype=np.float64)[keep],
        }
    )
