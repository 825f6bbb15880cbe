"""Check-in CSVs -> processed data set: each check-in is a visit, each venue a location (docs/data.md).

No staypoint detection and no clustering: a check-in already names its place.
A check-in has no duration; its ``duration`` is 0 minutes (a constant input,
so a model learns nothing from it: run with ``model.use_duration=false`` to
save the table). Cleaning, counted in the statistics: rows whose user, place
or time is empty are dropped, and so are repeated check-ins (same user, place
and time). A venue whose rows name several categories gets its most frequent
one (ties: the first in alphabetical order); its centroid is the mean of its
rows' coordinates, missing ones left out. Categories and grid cells become
integer attribute columns of the location table (0: unknown).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from nextloc.config import CheckinConfig, DatasetConfig
from nextloc.data.raw import readable_csv
from nextloc.data.samples import generate_samples
from nextloc.data.store import write_processed
from nextloc.data.time_features import first_row, no_missing, parse_times, staypoint_time_features
from nextloc.errors import DataError

log = logging.getLogger(__name__)
METRES_PER_DEGREE = 111_320.0  # along a meridian; along a parallel times cos(latitude)


def build_checkins(config: DatasetConfig, out: Path, parameters: dict) -> Path:
    """Read the check-in CSVs in ``preprocess.raw_dir`` and write the processed data set into the new folder ``out``."""
    from nextloc.data.preprocess import format_statistics, sample_statistics  # not at import: trackintel

    params, columns = config.preprocess, config.checkins
    frame = read_checkins(checkin_files(Path(params.raw_dir)), columns, params.timezone)
    visits, stats = clean_checkins(frame)
    locations = venue_table(visits, columns)
    visits = visits.assign(started_at=visits["time"], finished_at=visits["time"], location_id=visits["place"],
                           user_id=visits["user"])
    sample_set = generate_samples(staypoint_time_features(visits, params.timezone), **params.sample_parameters())
    stats |= sample_statistics(sample_set)
    write_processed(out, sample_set, name=config.name, parameters=parameters, locations=locations,
                    extra={"statistics": stats})
    log.info("statistics of %s (also in its %s):\n%s", out, "metadata.json", format_statistics(stats))
    return out


def checkin_files(raw_dir: Path) -> list[Path]:
    """The ``*.csv`` and ``*.csv.gz`` files of ``raw_dir``, sorted."""
    if not raw_dir.is_dir():
        raise DataError(f"no check-in folder {raw_dir}; put the CSV files there or set dataset.preprocess.raw_dir")
    files = sorted(f for f in raw_dir.iterdir() if f.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise DataError(f"{raw_dir} holds no .csv or .csv.gz file")
    return files


def read_checkins(files: list[Path], columns: CheckinConfig, timezone: str | None) -> pd.DataFrame:
    """One row per check-in: ``user``, ``place`` (text ids), ``time`` (UTC), ``latitude``, ``longitude``, ``category``.

    A row whose user, place or time is empty or unreadable is one :class:`DataError` naming its file and row.
    """
    wanted = {"user": columns.user, "place": columns.place, "time": columns.time, "latitude": columns.latitude,
              "longitude": columns.longitude, "category": columns.category}
    wanted = {field: name for field, name in wanted.items() if name is not None}
    text = {name: str for field, name in wanted.items() if field in ("user", "place", "time", "category")}
    frames = []
    for file in files:
        with readable_csv(file):
            header = pd.read_csv(file, nrows=0).columns
            missing = [f"{name} (dataset.checkins.{field})" for field, name in wanted.items() if name not in header]
            if missing:
                raise DataError(f"{file}: no column {', '.join(missing)}; it has {list(header)}")
            frame = pd.read_csv(file, usecols=list(wanted.values()), dtype=text)
        frame = frame.rename(columns={name: field for field, name in wanted.items()})
        try:
            for field in ("user", "place"):
                no_missing(frame, field)
            frames.append(frame.assign(time=_times(frame, columns.time_unit, timezone)))
        except DataError as err:
            raise DataError(f"{file}: {err}") from None
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise DataError(f"{files[0].parent}: its check-in files hold no rows, only headers")
    numbers = pd.to_numeric(frame["place"], errors="coerce")
    if numbers.notna().all() and (numbers == numbers.round()).all():  # whole numbers stay numbers, as GPS places
        frame["place"] = numbers.astype(np.int64)
    return frame


def clean_checkins(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The check-ins in time order per user without repeats (same user, place and time), and how many there were."""
    unique = frame.drop_duplicates(["user", "place", "time"])
    unique = unique.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
    stats = {"checkins_raw": len(frame), "checkins_removed_duplicate": len(frame) - len(unique),
             "users_raw": unique["user"].nunique(), "places_raw": unique["place"].nunique()}
    return unique, stats


def venue_table(visits: pd.DataFrame, columns: CheckinConfig) -> pd.DataFrame:
    """One row per venue: raw ``location_id``, centroid, and the ``category`` / ``cell_<size>m`` attribute codes."""
    venues = pd.DataFrame(index=pd.Index(np.sort(visits["place"].unique()), name="place"))
    if "latitude" in visits:
        coordinates = visits[["latitude", "longitude"]].apply(pd.to_numeric, errors="coerce")
        centroid = coordinates.groupby(visits["place"]).mean()  # NaN where a venue has no coordinates at all
        venues = venues.join(centroid)
    else:
        venues = venues.assign(latitude=np.nan, longitude=np.nan)
    if "category" in visits:
        counts = visits.groupby(["place", "category"]).size().rename("n").reset_index()
        counts = counts.sort_values(["place", "n", "category"], ascending=[True, False, True], kind="stable")
        name = counts.drop_duplicates("place").set_index("place")["category"]
        venues["category_name"] = name.reindex(venues.index)
        venues["category"] = _codes(venues["category_name"])
    for size in columns.grid_cells:
        venues[f"cell_{size:g}m"] = grid_cells(venues["latitude"].to_numpy(), venues["longitude"].to_numpy(), size)
    return venues.reset_index().rename(columns={"place": "location_id"})


def grid_cells(latitude: np.ndarray, longitude: np.ndarray, size: float) -> np.ndarray:
    """Codes 1.. of the ``size`` x ``size`` metre cells the points fall in; 0 for points without coordinates.

    Cells are squares of a local equirectangular projection centred on the
    points' mean latitude: exact enough at the scale of one city.
    """
    known = ~(np.isnan(latitude) | np.isnan(longitude))
    codes = np.zeros(len(latitude), dtype=np.int64)
    if not known.any():
        return codes
    shrink = np.cos(np.radians(latitude[known].mean()))
    row = np.floor(latitude[known] * METRES_PER_DEGREE / size).astype(np.int64)
    column = np.floor(longitude[known] * METRES_PER_DEGREE * shrink / size).astype(np.int64)
    cells = pd.MultiIndex.from_arrays([row, column])
    codes[known] = pd.factorize(cells, sort=True)[0] + 1
    return codes


def _codes(values: pd.Series) -> np.ndarray:
    """Codes 1.. in sorted order of the values; 0 for missing ones."""
    return (pd.factorize(values, sort=True)[0] + 1).astype(np.int64)


def _times(frame: pd.DataFrame, unit: str | None, timezone: str | None) -> pd.Series:
    if unit is None:
        return parse_times(frame, "time", timezone)
    no_missing(frame, "time")
    numbers = pd.to_numeric(frame["time"], errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        raise DataError(f"row {first_row(bad)}, column time: {frame['time'][bad].iloc[0]!r} is not a number of "
                        f"{unit} since 1970 (dataset.checkins.time_unit)")
    return pd.to_datetime(numbers, unit=unit, utc=True)
