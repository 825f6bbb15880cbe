"""Synthetic raw GPS tracks: position fixes from synthetic staypoints, written as GeoLife or DIY.

:func:`generate_positionfixes` turns staypoints (e.g. from
:func:`nextloc.data.synthetic_mobility.generate_staypoints`) into the position
fixes a phone would have recorded: a noisy fix every ``interval_s`` seconds
during each stay, and fixes along the straight line to the next place during
the travel gap between two stays. :func:`write_geolife` and :func:`write_diy`
write them in the two raw layouts of docs/reference.md, so the whole raw -> staypoints ->
locations pipeline can run without downloading anything, and the generating
staypoints serve as ground truth.

Both writers format numbers with integer arithmetic on character codes instead
of per-value Python formatting; that is what makes ten million rows take
seconds instead of minutes.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

FIX_COLUMNS = ["user_id", "tracked_at", "latitude", "longitude"]
STAY_COLUMNS = ["user_id", "location_id", "started_at", "finished_at"]
DIY_COLUMNS = ["user_id", "latitude", "longitude", "tracked_at"]
# The 6 header lines of every GeoLife 1.3 PLT file, byte for byte (LF line ends).
PLT_HEADER = "Geolife trajectory\nWGS 84\nAltitude is in Feet\nReserved 3\n0,2,255,My Track,0,0,2,8421376\n0\n"

_M_PER_DEG_LAT = 111_320.0
_NS_PER_S = 10**9
_S_PER_DAY = 86_400
_EXCEL_EPOCH_S = -25_569 * _S_PER_DAY  # 1899-12-30, GeoLife's day-count origin, in Unix seconds
_ALTITUDE_FT = 150  # about Beijing's elevation; GeoLife's altitude column is not used downstream
_USER_NAMESPACE = uuid.UUID("6f1d2a52-3b8e-4c55-9a0e-6b7c1e0d5a11")
_CHUNK_ROWS = 1_000_000


def generate_positionfixes(
    staypoints: pd.DataFrame,
    places: pd.DataFrame,
    *,
    interval_s: float = 30,
    stay_noise_m: float = 10.0,
    travel_noise_m: float = 5.0,
    max_gap_h: float = 6.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Position fixes that a tracker would record for the given stays.

    During each stay there is a fix every ``interval_s`` seconds from
    ``started_at`` up to ``finished_at`` at the stay's place plus Gaussian noise.
    Between two consecutive stays of a user there are fixes every ``interval_s``
    seconds along the straight line from one place to the next, at a uniform
    pace over the whole gap (so the stays' times remain the ground truth of a
    staypoint detector). Gaps longer than ``max_gap_h`` are left untracked, as
    are gaps left by days the staypoint generator dropped.

    Parameters
    ----------
    staypoints : pandas.DataFrame
        Columns ``user_id``, ``location_id``, ``started_at``, ``finished_at``
        (tz-aware); the stays of one user must not overlap.
    places : pandas.DataFrame
        Columns ``location_id``, ``latitude``, ``longitude`` (WGS 84 degrees).
    interval_s : float, default 30
        Seconds between fixes.
    stay_noise_m : float, default 10
        Root-mean-square distance in metres of a stay's fixes from its place
        (isotropic Gaussian, ``stay_noise_m / sqrt(2)`` per axis): with 10 m,
        99.99 % of the fixes lie within 30 m.
    travel_noise_m : float, default 5
        The same for fixes between stays.
    max_gap_h : float, default 6
        Longest gap between two stays that is tracked as travel.
    seed : int, default 0
        Seed of the noise.

    Returns
    -------
    pandas.DataFrame
        Columns ``user_id`` (dtype of the input), ``tracked_at``
        (``datetime64[ns, UTC]``), ``latitude``, ``longitude``, sorted by
        ``user_id`` and ``tracked_at``, times strictly increasing per user.

    Examples
    --------
    >>> from nextloc.data.synthetic_mobility import generate_staypoints
    >>> sp, places = generate_staypoints(n_users=2, n_days=3, seed=1)
    >>> fixes = generate_positionfixes(sp, places, interval_s=60)
    >>> list(fixes.columns)
    ['user_id', 'tracked_at', 'latitude', 'longitude']
    >>> bool(fixes.groupby("user_id")["tracked_at"].diff().dropna().gt(pd.Timedelta(0)).all())
    True
    """
    tic = time.perf_counter()
    _check_generate_args(interval_s, stay_noise_m, travel_noise_m, max_gap_h)
    sp = _checked_stays(staypoints)
    lat, lon = _place_coords(sp["location_id"].to_numpy(), places)
    user = sp["user_id"].to_numpy()
    start = _unix_ns(sp["started_at"])
    finish = _unix_ns(sp["finished_at"])
    interval = round(interval_s * _NS_PER_S)
    seg = _segments(user, start, finish, lat, lon, interval, round(max_gap_h * 3600 * _NS_PER_S))
    seg_sigma = _interleave(np.full(len(sp), stay_noise_m), np.full(len(sp), travel_noise_m)) / math.sqrt(2)

    # One row per fix: its segment and its step k within the segment.
    count = np.maximum((seg["last"] - seg["first"]) // interval + 1, 0)
    row_seg = np.repeat(np.arange(len(count)), count)  # (N,)
    first_row = np.cumsum(count) - count
    step_ns = (np.arange(len(row_seg)) - first_row[row_seg]) * interval + seg["first"][row_seg]  # (N,)
    share = step_ns / seg["span"][row_seg]  # (N,); on the way in (0, 1), dlat = dlon = 0 at a stay
    noise = np.random.default_rng(seed).standard_normal((len(row_seg), 2)) * seg_sigma[row_seg, None]  # metres
    fix_lat = seg["lat"][row_seg] + seg["dlat"][row_seg] * share
    fix_lon = seg["lon"][row_seg] + seg["dlon"][row_seg] * share
    fixes = pd.DataFrame(
        {
            "user_id": np.repeat(np.repeat(user, 2), count),
            "tracked_at": pd.to_datetime(seg["t0"][row_seg] + step_ns, utc=True),
            "latitude": fix_lat + noise[:, 0] / _M_PER_DEG_LAT,
            "longitude": fix_lon + noise[:, 1] / (_M_PER_DEG_LAT * np.cos(np.radians(fix_lat))),
        }
    )
    logger.info(
        "generated %d position fixes for %d stays of %d users in %.2f s",
        len(fixes), len(sp), len(np.unique(user)), time.perf_counter() - tic,
    )
    return fixes


def write_geolife(fixes: pd.DataFrame, root: str | Path) -> None:
    """Write fixes as a GeoLife 1.3 tree ``root/Data/<user>/Trajectory/<start>.plt``.

    One PLT file per user and GMT day, named after its first fix
    (``YYYYMMDDHHMMSS``), with GeoLife's 6 header lines and rows
    ``lat,lon,0,altitude_ft,days_since_1899-12-30,date,time`` on the GMT clock,
    exactly as in the real data. User folders are the zero-padded integer user
    ids (``000``, ``001``, ...).

    Parameters
    ----------
    fixes : pandas.DataFrame
        Columns ``user_id`` (integers >= 0), ``tracked_at`` (tz-aware),
        ``latitude``, ``longitude``. Times are written to the second (floor)
        and coordinates to 6 decimals, as in GeoLife.
    root : str or Path
        Folder that receives ``Data/``.

    Examples
    --------
    >>> import tempfile, trackintel
    >>> from nextloc.data.synthetic_mobility import generate_staypoints
    >>> fixes = generate_positionfixes(*generate_staypoints(n_users=1, n_days=2, seed=1))
    >>> root = Path(tempfile.mkdtemp())
    >>> write_geolife(fixes, root)
    >>> len(trackintel.io.read_geolife(root / "Data")[0]) == len(fixes)
    True
    """
    tic = time.perf_counter()
    fixes = _sorted_fixes(fixes)
    users = fixes["user_id"].to_numpy()
    if not np.issubdtype(users.dtype, np.integer) or (len(users) and users.min() < 0):
        raise ValueError(f"GeoLife user folders are integers >= 0; got user_id of dtype {users.dtype}")
    seconds = _unix_ns(fixes["tracked_at"]) // _NS_PER_S
    lat, lon = fixes["latitude"].to_numpy(), fixes["longitude"].to_numpy()
    n_files = 0
    for user, begin, end in _runs(users):
        folder = Path(root) / "Data" / f"{user:03d}" / "Trajectory"
        folder.mkdir(parents=True, exist_ok=True)
        rows = _plt_rows(lat[begin:end], lon[begin:end], seconds[begin:end])
        for first, last in _day_runs(seconds[begin:end]):
            name = pd.Timestamp(seconds[begin + first], unit="s").strftime("%Y%m%d%H%M%S")
            with open(folder / f"{name}.plt", "wb") as f:
                f.write(PLT_HEADER.encode())
                f.write(_to_bytes(rows[first:last]))
            n_files += 1
        logger.debug("user %03d: %d fixes written", user, end - begin)
    logger.info("wrote %d fixes in %d PLT files to %s in %.2f s", len(fixes), n_files, root, time.perf_counter() - tic)


def write_diy(
    fixes: pd.DataFrame, folder: str | Path, n_files: int = 1, *, timezone: str = "Asia/Jakarta"
) -> None:
    """Write fixes as DIY-layout CSV files ``folder/part-000.csv`` ...

    Columns ``user_id`` (a UUID string, :func:`diy_user_id` of the integer id),
    ``latitude``, ``longitude`` (7 decimals, about 1 cm) and ``tracked_at``
    (ISO 8601 local time with its offset, e.g. ``2024-01-01T08:00:00+07:00``).
    Rows keep their order and are split into ``n_files`` contiguous parts of
    nearly equal size, so one user's fixes may span two files, as they may in
    real exports. Each file is written a million rows at a time.

    Parameters
    ----------
    fixes : pandas.DataFrame
        Columns ``user_id`` (integers), ``tracked_at`` (tz-aware), ``latitude``,
        ``longitude``. Times are written to the second (floor).
    folder : str or Path
        Output folder (created if missing).
    n_files : int, default 1
        Number of CSV files.
    timezone : str, default "Asia/Jakarta"
        Zone of the written local times.

    Examples
    --------
    >>> import tempfile
    >>> from nextloc.data.synthetic_mobility import generate_staypoints
    >>> fixes = generate_positionfixes(*generate_staypoints(n_users=1, n_days=2, seed=1))
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_diy(fixes, folder)
    >>> pd.read_csv(folder / "part-000.csv", nrows=1)["tracked_at"].iloc[0].endswith("+07:00")
    True
    """
    tic = time.perf_counter()
    if n_files < 1:
        raise ValueError(f"n_files={n_files} must be >= 1")
    missing = [c for c in FIX_COLUMNS if c not in fixes.columns]
    if missing:
        raise ValueError(f"fixes need columns {FIX_COLUMNS}; missing {missing}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unique_users, user_index = np.unique(fixes["user_id"].to_numpy(), return_inverse=True)
    uuids = np.array([diy_user_id(u) for u in unique_users.tolist()], dtype="S36")
    bounds = np.linspace(0, len(fixes), n_files + 1).round().astype(np.int64)
    for part in range(n_files):
        with open(folder / f"part-{part:03d}.csv", "wb") as f:
            f.write((",".join(DIY_COLUMNS) + "\n").encode())
            for begin in range(bounds[part], bounds[part + 1], _CHUNK_ROWS):
                rows = slice(begin, min(begin + _CHUNK_ROWS, bounds[part + 1]))
                f.write(_to_bytes(_diy_rows(uuids[user_index[rows]], fixes.iloc[rows], timezone)))
    logger.info(
        "wrote %d fixes in %d DIY CSV files to %s in %.2f s", len(fixes), n_files, folder, time.perf_counter() - tic
    )


def diy_user_id(user_id: int) -> str:
    """The UUID-like DIY user id of an integer user id (deterministic).

    Examples
    --------
    >>> diy_user_id(0) == diy_user_id(0) != diy_user_id(1)
    True
    >>> len(diy_user_id(0))
    36
    """
    return str(uuid.uuid5(_USER_NAMESPACE, str(int(user_id))))


def move_places(places: pd.DataFrame, latitude: float, longitude: float) -> pd.DataFrame:
    """Shift places so that their mean lies at ``(latitude, longitude)``, keeping distances in metres.

    The synthetic city is centred on Beijing; DIY data lie around Yogyakarta
    (about -7.80, 110.37).

    Examples
    --------
    >>> from nextloc.data.synthetic_mobility import generate_staypoints
    >>> _, places = generate_staypoints(n_users=2, n_days=2)
    >>> moved = move_places(places, -7.8, 110.37)
    >>> round(float(moved["latitude"].mean()), 6), round(float(moved["longitude"].mean()), 6)
    (-7.8, 110.37)
    """
    lat0, lon0 = places["latitude"].mean(), places["longitude"].mean()
    north_m = (places["latitude"] - lat0) * _M_PER_DEG_LAT
    east_m = (places["longitude"] - lon0) * _M_PER_DEG_LAT * math.cos(math.radians(lat0))
    moved = places.copy()
    moved["latitude"] = latitude + north_m / _M_PER_DEG_LAT
    moved["longitude"] = longitude + east_m / (_M_PER_DEG_LAT * math.cos(math.radians(latitude)))
    return moved


def _check_generate_args(interval_s: float, stay_noise_m: float, travel_noise_m: float, max_gap_h: float) -> None:
    if not interval_s >= 1:
        raise ValueError(f"interval_s={interval_s} must be >= 1 second")
    if stay_noise_m < 0 or travel_noise_m < 0:
        raise ValueError(f"noise must be >= 0 metres; got stay_noise_m={stay_noise_m}, travel_noise_m={travel_noise_m}")
    if max_gap_h < 0:
        raise ValueError(f"max_gap_h={max_gap_h} must be >= 0")


def _checked_stays(staypoints: pd.DataFrame) -> pd.DataFrame:
    """Stays sorted by user and start; one-line errors for missing columns, naive times, overlaps."""
    missing = [c for c in STAY_COLUMNS if c not in staypoints.columns]
    if missing:
        raise ValueError(f"staypoints need columns {STAY_COLUMNS}; missing {missing}")
    for col in ("started_at", "finished_at"):
        if getattr(staypoints[col].dtype, "tz", None) is None:
            raise ValueError(f"staypoints.{col} must be tz-aware datetimes; got {staypoints[col].dtype}")
    sp = staypoints[STAY_COLUMNS].sort_values(["user_id", "started_at"], kind="stable").reset_index(drop=True)
    bad = sp["finished_at"] < sp["started_at"]
    same_user = sp["user_id"].eq(sp["user_id"].shift(-1))
    bad |= same_user & (sp["started_at"].shift(-1) < sp["finished_at"])
    if bad.any():
        row = sp[bad].iloc[0]
        raise ValueError(
            f"stay of user {row['user_id']} at {row['started_at']} ends before it starts or overlaps the next stay"
        )
    return sp


def _place_coords(location_id: np.ndarray, places: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    coords = places.set_index("location_id")[["latitude", "longitude"]]
    unknown = np.setdiff1d(location_id, coords.index.to_numpy())
    if len(unknown):
        raise ValueError(f"{len(unknown)} location ids of the stays are not in places, e.g. {unknown[:5].tolist()}")
    rows = coords.index.get_indexer(location_id)
    return coords["latitude"].to_numpy()[rows], coords["longitude"].to_numpy()[rows]


def _segments(user, start, finish, lat, lon, interval: int, max_gap_ns: int) -> dict[str, np.ndarray]:
    """Stays and the ways between them as interleaved segments: 2i is stay i, 2i+1 the way to stay i+1.

    A segment's fixes lie at times ``t0 + offset`` for offsets ``first, first +
    interval, ...`` up to ``last`` (inclusive), at ``(lat, lon) + share * (dlat, dlon)``
    with ``share = offset / span``. A stay covers both its ends; a way starts
    one interval after ``finished_at`` and ends before the next ``started_at``;
    an untracked gap has ``last < first`` (no fixes).
    """
    n = len(start)  # the last stay of all has no way onwards; [:n] keeps n = 0 working
    gap = np.append(start[1:] - finish[:-1], 0)[:n]
    tracked = np.append(user[1:] == user[:-1], False)[:n] & (gap > 0) & (gap <= max_gap_ns)
    next_lat, next_lon = np.append(lat[1:], 0.0)[:n], np.append(lon[1:], 0.0)[:n]
    return {
        "t0": _interleave(start, finish),
        "first": _interleave(np.zeros_like(start), np.full_like(start, interval)),
        "last": _interleave(finish - start, np.where(tracked, gap - 1, -1)),
        "span": _interleave(np.ones_like(start), np.maximum(gap, 1)),
        "lat": _interleave(lat, lat),
        "lon": _interleave(lon, lon),
        "dlat": _interleave(np.zeros_like(lat), np.where(tracked, next_lat - lat, 0.0)),
        "dlon": _interleave(np.zeros_like(lon), np.where(tracked, next_lon - lon, 0.0)),
    }


def _unix_ns(times: pd.Series) -> np.ndarray:
    """Nanoseconds since the Unix epoch of tz-aware times."""
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def _interleave(even: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """``[even[0], odd[0], even[1], odd[1], ...]``."""
    return np.stack([even, odd], axis=1).ravel()


def _sorted_fixes(fixes: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FIX_COLUMNS if c not in fixes.columns]
    if missing:
        raise ValueError(f"fixes need columns {FIX_COLUMNS}; missing {missing}")
    if getattr(fixes["tracked_at"].dtype, "tz", None) is None:
        raise ValueError(f"fixes.tracked_at must be tz-aware datetimes; got {fixes['tracked_at'].dtype}")
    users, times = fixes["user_id"].to_numpy(), _unix_ns(fixes["tracked_at"])
    in_order = (users[1:] > users[:-1]) | ((users[1:] == users[:-1]) & (times[1:] >= times[:-1]))
    return fixes if in_order.all() else fixes.sort_values(["user_id", "tracked_at"], kind="stable")


def _runs(values: np.ndarray):
    """``(value, begin, end)`` of each run of equal consecutive values."""
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    begins, ends = np.append(0, cuts), np.append(cuts, len(values))
    for begin, end in zip(begins.tolist(), ends.tolist()):
        if end > begin:
            yield values[begin].item(), begin, end


def _day_runs(seconds: np.ndarray):
    """``(begin, end)`` of each GMT day in sorted Unix seconds."""
    for _, begin, end in _runs(seconds // _S_PER_DAY):
        yield begin, end


def _plt_rows(lat: np.ndarray, lon: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """PLT rows ``lat,lon,0,altitude,days,date,time\\n`` of one user as a byte matrix (see :func:`_rows`)."""
    whole_days, second_of_day = np.divmod(seconds - _EXCEL_EPOCH_S, _S_PER_DAY)
    # 10 decimals of the day fraction without float error; trailing zeros cut as in GeoLife
    fraction = (second_of_day * 10**10 + _S_PER_DAY // 2) // _S_PER_DAY
    stamps = _text_codes(seconds.astype("datetime64[s]").astype("S19"))  # 2008-10-23T02:53:04
    stamps[:, 10] = ord(",")  # -> 2008-10-23,02:53:04
    return _rows(
        _decimal_codes(np.rint(lat * 1e6).astype(np.int64), 6),
        _decimal_codes(np.rint(lon * 1e6).astype(np.int64), 6),
        _text_codes(np.full(len(seconds), f"0,{_ALTITUDE_FT}".encode())),
        _decimal_codes(whole_days * 10**10 + fraction, 10, strip_zeros=True),
        stamps,
    )


def _diy_rows(uuids: np.ndarray, chunk: pd.DataFrame, timezone: str) -> np.ndarray:
    """DIY rows ``user_id,latitude,longitude,tracked_at\\n`` as a byte matrix (see :func:`_rows`)."""
    utc_s = _unix_ns(chunk["tracked_at"]) // _NS_PER_S
    local = pd.DatetimeIndex(chunk["tracked_at"]).tz_convert(timezone).tz_localize(None).as_unit("ns").asi8
    local_s = local // _NS_PER_S
    offsets, which = np.unique(local_s - utc_s, return_inverse=True)
    labels = [f"{'-' if o < 0 else '+'}{abs(o) // 3600:02d}:{abs(o) % 3600 // 60:02d}" for o in offsets.tolist()]
    return _rows(
        _text_codes(uuids),
        _decimal_codes(np.rint(chunk["latitude"].to_numpy() * 1e7).astype(np.int64), 7),
        _decimal_codes(np.rint(chunk["longitude"].to_numpy() * 1e7).astype(np.int64), 7),
        np.hstack([
            _text_codes(local_s.astype("datetime64[s]").astype("S19")),  # ISO 8601, 'T' separator
            _text_codes(np.array(labels, dtype="S6"))[which],
        ]),
    )


def _to_bytes(rows: np.ndarray) -> bytes:
    """The text of a byte matrix: rows concatenated, NUL padding dropped."""
    return rows.tobytes().replace(b"\0", b"")


def _rows(*fields: np.ndarray) -> np.ndarray:
    """Comma-separated fields plus a newline, as one ``(N, width)`` uint8 matrix padded with NUL."""
    n = len(fields[0])
    comma = np.full((n, 1), ord(","), dtype=np.uint8)
    parts = [part for field in fields for part in (field, comma)]
    parts[-1] = np.full((n, 1), ord("\n"), dtype=np.uint8)
    return np.hstack(parts)


def _text_codes(strings: np.ndarray) -> np.ndarray:
    """``(N, width)`` uint8 matrix of a bytes array (``S`` dtype), NUL padded."""
    strings = np.ascontiguousarray(strings)
    return strings.view(np.uint8).reshape(len(strings), strings.dtype.itemsize).copy()


def _decimal_codes(scaled: np.ndarray, decimals: int, strip_zeros: bool = False) -> np.ndarray:
    """Digits of ``scaled / 10**decimals`` as a NUL-padded uint8 matrix, e.g. ``(39984702, 6) -> 39.984702``.

    The characters are computed with a few vectorised integer operations per
    digit position, not a ``%`` per value. ``strip_zeros`` drops trailing zeros
    of the fraction (and the point if nothing is left of it).
    """
    magnitude = np.abs(scaled)
    whole, fraction = np.divmod(magnitude, 10**decimals)
    n_int = len(str(int(whole.max()))) if len(whole) else 1
    n_digits = np.ones(len(whole), dtype=np.int64)
    for j in range(1, n_int):
        n_digits += whole >= 10**j
    codes = np.zeros((len(whole), n_int + 2 + decimals), dtype=np.uint8)  # sign, integer, point, fraction
    for j in range(n_int):  # j-th digit from the right of the integer part; NUL beyond its length
        codes[:, n_int - j] = np.where(j < n_digits, ord("0") + whole // 10**j % 10, 0)
    negative = np.flatnonzero(scaled < 0)
    codes[negative, n_int - n_digits[negative]] = ord("-")
    codes[:, n_int + 1] = ord(".")
    for j in range(decimals):
        codes[:, n_int + 2 + j] = ord("0") + fraction // 10 ** (decimals - 1 - j) % 10
    if strip_zeros:
        tail = codes[:, n_int + 1 :]  # point and fraction
        trailing = np.cumprod(((tail == ord("0")) | (tail == ord(".")))[:, ::-1], axis=1)[:, ::-1]
        tail[trailing.astype(bool)] = 0
    return codes
