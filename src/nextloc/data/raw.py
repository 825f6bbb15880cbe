"""Raw GPS readers: GeoLife PLT trees and DIY CSV files, one user at a time.

Both produce position fixes with ``user_id``, ``tracked_at`` (tz-aware),
``latitude`` and ``longitude``. GeoLife is already split by user on disk;
DIY CSVs are read in chunks and partitioned by user into Parquet files, so
that no step ever holds the whole data set.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nextloc.data.time_features import ZONE_SUFFIX
from nextloc.errors import DataError

log = logging.getLogger(__name__)

GEOLIFE_URL = "https://www.microsoft.com/en-us/download/details.aspx?id=52367"
PLT_HEADER_LINES = 6
PLT_COLUMNS = ["latitude", "longitude", "zero", "altitude", "days", "date", "time"]
DIY_COLUMNS = ["user_id", "latitude", "longitude", "tracked_at"]
FIX_COLUMNS = ["user_id", "tracked_at", "latitude", "longitude"]


def geolife_users(raw_dir: Path) -> list[Path]:
    """The user folders of a GeoLife tree; explains where to get the data if there are none."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(
            f"GeoLife raw folder {raw_dir.resolve()} does not exist. Download GeoLife 1.3 from {GEOLIFE_URL}, "
            f"unpack it so that the user folders 000, 001, ... are in {raw_dir}, or set dataset.preprocess.raw_dir"
        )
    users = sorted(p for p in raw_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not users or not any(any((u / "Trajectory").glob("*.plt")) for u in users):
        raise DataError(f"{raw_dir.resolve()}: no user folders with Trajectory/*.plt files; is it GeoLife's Data folder?")
    return users


def read_geolife_user(user_dir: Path) -> tuple[pd.DataFrame, int]:
    """Position fixes of one GeoLife user (GMT clock) and the number of malformed lines skipped."""
    files = sorted((Path(user_dir) / "Trajectory").glob("*.plt"))
    if not files:
        raise DataError(f"{user_dir}: user folder without Trajectory/*.plt files")
    raw = pd.concat([_read_plt(f) for f in files], ignore_index=True)
    lines = sum(max(_count_lines(f) - PLT_HEADER_LINES, 0) for f in files)  # a file may be shorter than its header
    fixes = pd.DataFrame(
        {
            "user_id": int(Path(user_dir).name),
            "tracked_at": pd.to_datetime(raw["date"] + " " + raw["time"], format="%Y-%m-%d %H:%M:%S", utc=True, errors="coerce"),
            "latitude": pd.to_numeric(raw["latitude"], errors="coerce"),
            "longitude": pd.to_numeric(raw["longitude"], errors="coerce"),
        }
    )
    valid = fixes.notna().all(axis=1) & fixes["latitude"].between(-90, 90) & fixes["longitude"].between(-180, 180)
    fixes = fixes[valid].sort_values("tracked_at", kind="stable").reset_index(drop=True)
    return fixes, int(lines - len(fixes))


def _read_plt(file: Path) -> pd.DataFrame:
    """The rows of one PLT file as text; a file that is not text is refused naming it."""
    try:
        return pd.read_csv(file, skiprows=PLT_HEADER_LINES, header=None, names=PLT_COLUMNS, dtype=str,
                           on_bad_lines="skip", engine="python")
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=PLT_COLUMNS, dtype=str)
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{file}: not a readable PLT text file ({type(err).__name__}); remove or replace it") from None


def _count_lines(file: Path) -> int:
    with open(file, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def diy_files(raw_dir: Path) -> list[Path]:
    """The CSV files of a DIY folder."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(
            f"DIY raw folder {raw_dir.resolve()} does not exist; put the DIY CSV files "
            f"(columns {DIY_COLUMNS}) there or set dataset.preprocess.raw_dir"
        )
    files = sorted(raw_dir.glob("*.csv"))
    if not files:
        raise DataError(f"{raw_dir.resolve()}: no *.csv files")
    return files


def partition_csv_by_user(files: list[Path], out_dir: Path, chunk_rows: int = 2_000_000) -> dict:
    """Stream DIY CSVs in chunks into ``out_dir/<user>/<chunk>.parquet``; return counts.

    A chunk already written (from an interrupted earlier run) is skipped.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = 0
    for file in files:
        with readable_csv(file):
            header = pd.read_csv(file, nrows=0).columns
            missing = [c for c in DIY_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{file}: lacks columns {missing}; found {list(header)}")
            chunks = pd.read_csv(file, usecols=DIY_COLUMNS, dtype={"user_id": str, "tracked_at": str},
                                 chunksize=chunk_rows)
            for i, chunk in enumerate(tqdm(chunks, desc=f"partition {file.name}", unit="chunk", disable=None)):
                rows += len(chunk)
                done = out_dir / ".done" / f"{file.stem}-{i}"
                if done.exists():
                    continue
                fixes = _parse_diy_chunk(chunk, file, i * chunk_rows)
                for user, part in fixes.groupby("user_id", sort=False):
                    user_dir = out_dir / _safe_name(user)
                    user_dir.mkdir(exist_ok=True)
                    part.to_parquet(user_dir / f"{file.stem}-{i}.parquet", index=False)
                done.parent.mkdir(exist_ok=True)
                done.touch()
    return {"rows": rows}


@contextmanager
def readable_csv(file: Path):
    """Turn pandas' errors for a file that is not a CSV (empty, binary, another encoding) into one line."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: empty ({file.stat().st_size} bytes, no header line); remove it or fill it") from None
    except UnicodeDecodeError:
        line, byte = _first_undecodable(file)
        raise DataError(f"{file}:{line}: not UTF-8 text (byte {byte!r}); save the file as UTF-8") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{file}: not a readable CSV ({str(err).strip()})") from None


def read_partition(user_dir: Path) -> pd.DataFrame:
    """All fixes of one partitioned user, sorted by time."""
    fixes = pd.concat([pd.read_parquet(f) for f in sorted(Path(user_dir).glob("*.parquet"))], ignore_index=True)
    return fixes.sort_values("tracked_at", kind="stable").reset_index(drop=True)


def _first_undecodable(file: Path, block_size: int = 1 << 24) -> tuple[int, bytes]:
    """Line number and value of the first byte of ``file`` that is not UTF-8 (pandas only gives a buffer offset)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(file, "rb") as f:
        while block := f.read(block_size):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                return line + block[: err.start].count(b"\n"), err.object[err.start : err.start + 1]
            line += block.count(b"\n")
    return line, b""


def _parse_diy_chunk(chunk: pd.DataFrame, file: Path, chunk_start: int) -> pd.DataFrame:
    def first_row(bad: pd.Series) -> int:
        return chunk_start + int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header line

    if chunk["user_id"].isna().any():
        raise DataError(f"{file}:{first_row(chunk['user_id'].isna())}: no user_id")
    lat = pd.to_numeric(chunk["latitude"], errors="coerce")
    lon = pd.to_numeric(chunk["longitude"], errors="coerce")
    unparseable = lat.isna() | lon.isna()
    if unparseable.any():
        raise DataError(
            f"{file}:{first_row(unparseable)}: unparseable coordinates "
            f"{chunk['latitude'][unparseable].iloc[0]}, {chunk['longitude'][unparseable].iloc[0]}; "
            "give latitude and longitude in decimal degrees"
        )
    outside = ~lat.between(-90, 90) | ~lon.between(-180, 180)
    if outside.any():
        raise DataError(
            f"{file}:{first_row(outside)}: coordinates {lat[outside].iloc[0]}, {lon[outside].iloc[0]} out of range "
            "(latitude within [-90, 90], longitude within [-180, 180]; are the columns swapped?)"
        )
    text = chunk["tracked_at"].astype(str)
    zoned = text.str.contains(ZONE_SUFFIX, regex=True)
    if not zoned.all():
        value = text[~zoned].iloc[0]
        problem = ("has no time zone (e.g. +07:00); DIY needs one"
                   if pd.notna(pd.to_datetime(value, format="ISO8601", errors="coerce")) else "is not an ISO 8601 time")
        raise DataError(f"{file}:{first_row(~zoned)}: tracked_at {value!r} {problem}")
    tracked_at = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    if tracked_at.isna().any():
        raise DataError(
            f"{file}:{first_row(tracked_at.isna())}: tracked_at {text[tracked_at.isna()].iloc[0]!r} "
            "is not an ISO 8601 time"
        )
    return pd.DataFrame({"user_id": chunk["user_id"], "tracked_at": tracked_at, "latitude": lat, "longitude": lon})


def _safe_name(user: str) -> str:
    """A folder name for a raw user id (DIY ids are UUID-like strings); the hash keeps ids apart."""
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(user))[:64]
    return f"{readable}-{hashlib.sha256(str(user).encode()).hexdigest()[:8]}"
