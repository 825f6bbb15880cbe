"""Raw GPS -> processed data set (docs/reference.md), streaming by user.

Stages, each resumable after a crash from what the earlier run finished:

1. (DIY) the CSVs are read in chunks and partitioned by user into Parquet;
2. every user's fixes become staypoints with activity flag and tracking
   quality in worker processes (one user in memory per worker);
3. on the much smaller staypoint table: user quality filter, activity
   staypoints, DBSCAN locations over the whole data set (trackintel), noise
   dropped, consecutive staypoints at one location merged, time features,
   then the sample builder and the processed format.

Intermediate results live in ``.<out>.work/`` beside the output. They are
removed when the data set has been written, or when it cannot be (a raw file
is wrong: nothing can be reused once it is mended), and not reused when the
raw files have changed since they were made (``raw.json`` there records each
file's size and modification time).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import trackintel as ti
from tqdm import tqdm

from nextloc.config import DatasetConfig, PreprocessConfig
from nextloc.data import raw
from nextloc.data.samples import SPLITS, generate_samples
from nextloc.data.staypoints import CRS, generate_user_staypoints
from nextloc.data.store import write_processed
from nextloc.data.time_features import staypoint_time_features
from nextloc.errors import DataError
from nextloc.io import remove_temporaries, write_atomic, write_json

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent ends


def preprocess(config: DatasetConfig, out: Path, parameters: dict) -> Path:
    """Build the processed data set of ``config`` from its raw data into the new folder ``out``."""
    params = config.preprocess
    work = _work_folder(out, Path(params.raw_dir))
    try:
        sources = _user_sources(config.reader, Path(params.raw_dir), work)
        stats = {"users_raw": len(sources)}
        sp, quality, stats["malformed_lines"] = _staypoints_by_user(sources, params, work / "staypoints")
        sp, filter_stats = filter_staypoints(sp, quality, params)
        stats |= filter_stats
        sp, locations, location_stats = generate_locations(sp, params)
        stats |= location_stats
        sample_set = generate_samples(staypoint_time_features(sp, params.timezone), **params.sample_parameters())
        stats |= sample_statistics(sample_set)
        write_processed(out, sample_set, name=config.name, parameters=parameters, locations=locations,
                        extra={"statistics": stats})
    except DataError:
        shutil.rmtree(work, ignore_errors=True)  # the raw data must change first
        raise
    log.info("statistics of %s (also in its %s):\n%s", out, "metadata.json", format_statistics(stats))
    shutil.rmtree(work, ignore_errors=True)
    return out


def _work_folder(out: Path, raw_dir: Path) -> Path:
    """``.<out>.work/``, keeping what an interrupted run made from the same raw files; call under the data lock."""
    work = out.with_name(f".{out.name}.work")
    signature = {
        str(f.relative_to(raw_dir)): [f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(raw_dir.rglob("*")) if f.is_file()
    }
    record = work / "raw.json"
    if work.exists():
        try:
            same = json.loads(record.read_text()) == signature
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("%s: the raw files changed since it was made (or it is damaged); starting over", work)
            shutil.rmtree(work)
    if work.exists():
        log.info("continuing from %s, left by an interrupted run", work)
        remove_temporaries(work / "staypoints")  # users whose write was killed run again
    else:
        work.mkdir(parents=True)
        write_json(record, signature)
    return work


def _user_sources(source: str, raw_dir: Path, work: Path) -> list[Path]:
    """One path per user: a GeoLife user folder or a partition of the DIY CSVs."""
    if source == "geolife":
        return raw.geolife_users(raw_dir)
    files = raw.diy_files(raw_dir)
    if raw.partition_csv_by_user(files, work / "fixes")["rows"] == 0:
        raise DataError(f"{raw_dir}: its CSV files hold no rows, only headers")
    return sorted(p for p in (work / "fixes").iterdir() if p.is_dir() and not p.name.startswith("."))


def _staypoints_by_user(sources: list[Path], params: PreprocessConfig, out_dir: Path):
    """Run the per-user step in worker processes; skip users finished by an earlier run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sources if not (out_dir / f"{s.name}.json").exists()]
    n_jobs = params.n_jobs or os.cpu_count() or 1
    if todo:
        workers = min(n_jobs, len(todo))
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            jobs = pool.map(_user_job, todo, [params] * len(todo), [out_dir] * len(todo))
            for _ in tqdm(jobs, total=len(todo), desc="staypoints", unit="user", disable=None):
                pass
    frames, quality, malformed = [], {}, 0
    for source in sources:
        info = json.loads((out_dir / f"{source.name}.json").read_text())
        quality[info["user_id"]] = info["quality"]
        malformed += info["malformed_lines"]
        frames.append(pd.read_parquet(out_dir / f"{source.name}.parquet"))
    frames = [f for f in frames if len(f)]
    if not frames:
        raise DataError(f"no staypoint in any of {len(sources)} users; loosen dataset.preprocess.dist_threshold "
                        "or dataset.preprocess.time_threshold")
    return pd.concat(frames, ignore_index=True), quality, malformed


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when its parent ends, even by ``kill -9``.

    Forked workers inherit the parent's open files, its data-creation lock
    among them; a worker that outlived its parent would hold that lock, and
    every later run would wait for it forever.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the line above took effect
        os._exit(1)


def _user_job(source: Path, params: PreprocessConfig, out_dir: Path) -> None:
    """Worker: fixes of one user -> staypoints parquet + quality json (json last: it marks done)."""
    if source.parent.name == "fixes":
        fixes, malformed = raw.read_partition(source), 0
    else:
        fixes, malformed = raw.read_geolife_user(source)
    if fixes.empty:
        raise DataError(f"{source}: no readable GPS fixes")
    user_id = fixes["user_id"].iloc[0]
    sp, quality = generate_user_staypoints(fixes, params)
    write_atomic(out_dir / f"{source.name}.parquet", lambda tmp: sp.to_parquet(tmp, index=False))
    info = {"user_id": str(user_id), "quality": quality, "malformed_lines": malformed, "fixes": len(fixes)}
    write_json(out_dir / f"{source.name}.json", info)


def filter_staypoints(sp: pd.DataFrame, quality: dict, params: PreprocessConfig) -> tuple[pd.DataFrame, dict]:
    """Users passing the tracking-quality filter, activity staypoints only; with what each removed."""
    q = pd.DataFrame.from_dict(quality, orient="index")
    long_enough = q.index[q["tracked_days"] > params.min_tracked_days]
    covered = q.loc[long_enough]
    if params.min_coverage is not None:
        covered = covered[covered["min_coverage"] > params.min_coverage]
    if params.mean_coverage is not None:
        covered = covered[covered["mean_coverage"] > params.mean_coverage]
    stats = {
        "staypoints_raw": len(sp),
        "users_removed_by_tracked_days": len(q) - len(long_enough),
        "users_removed_by_coverage": len(long_enough) - len(covered),
    }
    if covered.empty:
        which = (f"min_tracked_days={params.min_tracked_days}" if long_enough.empty
                 else f"min_coverage={params.min_coverage} / mean_coverage={params.mean_coverage}")
        raise DataError(f"the tracking-quality filter ({which}) removed all {len(q)} users; loosen it, "
                        f"e.g. dataset.preprocess.min_tracked_days=0 dataset.preprocess.min_coverage=null")
    kept = sp[sp["user_id"].astype(str).isin(covered.index)]
    activity = kept[kept["is_activity"]]
    stats |= {"staypoints_removed_with_users": len(sp) - len(kept),
              "staypoints_removed_not_activity": len(kept) - len(activity)}
    if activity.empty:
        raise DataError("no activity staypoint is left; lower dataset.preprocess.activity_time_threshold")
    return activity.reset_index(drop=True), stats


def generate_locations(sp: pd.DataFrame, params: PreprocessConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """DBSCAN locations over all users (trackintel), noise dropped, same-location neighbours merged."""
    gsp = ti.Staypoints(
        gpd.GeoDataFrame(sp, geometry=gpd.points_from_xy(sp["longitude"], sp["latitude"]), crs=CRS)
    )
    gsp.index.name = "id"
    gsp, locs = gsp.generate_locations(
        method="dbscan", epsilon=params.eps, num_samples=params.num_samples, distance_metric="haversine",
        agg_level="dataset", n_jobs=params.n_jobs or -1,
    )
    locs = locs[~locs.index.duplicated()]  # agg_level="dataset" repeats a location once per user
    located = gsp[gsp["location_id"].notna()].copy()
    if located.empty:
        raise DataError(f"DBSCAN found no location (eps={params.eps} m, num_samples={params.num_samples}); "
                        "raise dataset.preprocess.eps or lower dataset.preprocess.num_samples")
    located["location_id"] = located["location_id"].astype(np.int64)
    with warnings.catch_warnings():  # trackintel concatenates with the empty tripleg table
        warnings.simplefilter("ignore", FutureWarning)
        merged = located.merge_staypoints(  # no triplegs: merge across any gap up to merge_gap
            triplegs=pd.DataFrame(columns=["user_id", "started_at", "finished_at"]),
            max_time_gap=pd.Timedelta(minutes=params.merge_gap), agg={"location_id": "first"},
        )
    merged = pd.DataFrame(merged).reset_index(drop=True)[["user_id", "started_at", "finished_at", "location_id"]]
    centers = locs.loc[locs.index.isin(merged["location_id"])]
    table = pd.DataFrame({"location_id": centers.index.to_numpy(np.int64),
                          "latitude": centers["center"].y.to_numpy(), "longitude": centers["center"].x.to_numpy()})
    stats = {"staypoints_removed_noise": len(gsp) - len(located), "staypoints_merged": len(located) - len(merged),
             "locations_found": len(locs)}
    return merged, table, stats


def sample_statistics(sample_set) -> dict:
    stats = {"users_dropped_without_samples": sample_set.dropped_users, "users": sample_set.num_users - 1,
             "locations": sample_set.num_locations - 2}
    for split in SPLITS:
        samples = sample_set.samples[split]
        length = (samples["history_end"] - samples["history_start"]).to_numpy()
        stats |= {f"{split}_staypoints": len(sample_set.staypoints[split]), f"{split}_samples": len(samples),
                  f"{split}_mean_history": round(float(length.mean()), 2) if len(length) else 0.0,
                  f"{split}_max_history": int(length.max()) if len(length) else 0}
    return stats


def format_statistics(stats: dict) -> str:
    """The statistics as an aligned two-column table."""
    width = max(map(len, stats))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in stats.items())
