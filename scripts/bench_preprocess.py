"""Raw DIY CSV -> staypoints: nextloc's streaming pipeline against trackintel on one whole frame (no Hydra).

Usage::

    python scripts/bench_preprocess.py --rows 1e6 1e7 [--days 30 --interval 30 --seed 0]
        [--n-jobs 0] [--coverage] [--no-baseline] [--repeat 1] [--workdir DIR] [--keep]

Data. For each ``--rows`` size, DIY-layout CSV files (``user_id`` UUID,
``latitude``, ``longitude``, ``tracked_at`` ISO 8601 with ``+07:00``) are
generated from the synthetic mobility model
(:func:`nextloc.data.synthetic_mobility.generate_staypoints` in Asia/Jakarta,
places moved to Yogyakarta, :func:`nextloc.data.raw_synthetic.generate_positionfixes`
with a fix every ``--interval`` seconds, :func:`~nextloc.data.raw_synthetic.write_diy`).
Every user is simulated for the same ``--days``; a size is reached by adding
users, never by making users longer, so the largest user (what a worker holds)
is bounded by ``days * 86400 / interval`` fixes at every size. Users are
generated and written in batches of about 2.5 M rows, one CSV file per batch.

Streaming (what is measured). The raw -> staypoints stage of
:mod:`nextloc.data.preprocess`, calling its stage functions directly (not
``preprocess()`` end to end, so DBSCAN and the sample builder, which the
baseline does not do, are left out):

1. ``raw.partition_csv_by_user`` (chunked ``read_csv`` + parse, Parquet per
   user and chunk) into a fresh work folder, in the measured process;
2. ``preprocess._staypoints_by_user`` with ``n_jobs`` workers
   (``--n-jobs 0`` = all cores): per user ``generate_user_staypoints``
   (trackintel sliding staypoints + activity flag), then the staypoint tables
   read back and concatenated.

Parameters are DIY's (``conf/dataset/diy.yaml``: 100 m, 30 min, gap 24 h,
activity 25 min). By default the coverage filter is switched off
(``min_coverage = mean_coverage = None``), so a worker does exactly what the
baseline does; ``--coverage`` adds rows with DIY's coverage filter on, where
each worker also builds triplegs and the weekly tracking quality.

Whole-frame baseline (at the smallest size only; ``--no-baseline`` skips it):
pandas ``read_csv`` of the same CSV files, ``to_datetime(format="ISO8601")``,
one ``Positionfixes`` GeoDataFrame of all users, trackintel
``generate_staypoints(method="sliding", distance_metric="haversine",
dist_threshold=100, time_threshold=30, gap_threshold=1440, n_jobs=1)`` and
``create_activity_flag(time_threshold=25)``.

Measurement. Every configuration runs in its own fresh interpreter (this
script with ``--child``), so peaks never mix. Inside it a background thread
samples every 0.2 s the resident memory of the whole process tree: VmRSS from
``/proc/<pid>/status`` summed over the process and all its descendants (found
through ``/proc/<pid>/task/*/children``, recursively), and also Pss from
``/proc/<pid>/smaps_rollup``. Forked workers share the parent's pages copy on
write, which the VmRSS sum counts once per process; the Pss sum splits shared
pages between the processes that map them, so it is the closer figure of what
the tree really holds. CPU time (user + system of the process and its reaped
workers) is printed beside wall time: it is less sensitive to other load on the
machine, so its ratio is the steadier check of linear growth. Wall times exclude interpreter start and imports; the
memory figures include the imported libraries (``base``: the tree's VmRSS
right before the work starts). The printed ratios compare rows of one run;
absolute times drift on shared machines (``--repeat N`` reports the fastest of
N runs and the highest peak of them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIY_YAML = ROOT / "conf" / "dataset" / "diy.yaml"
FULL_DIY_ROWS = 165e6
YOGYAKARTA = (-7.80, 110.37)
BATCH_ROWS = 2_500_000  # rows per generated batch of users = per CSV file
SAMPLE_S = 0.2


# ---------------------------------------------------------------- memory of a process tree


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids.extend(int(k) for k in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _kb_field(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:  # the process ended between listing and reading
        pass
    return 0


def tree_memory(root: int) -> tuple[int, int]:
    """(VmRSS sum, Pss sum) in bytes over the process tree of ``root``."""
    pids = tree_pids(root)
    rss = sum(_kb_field(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_kb_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss * 1024, pss * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the pool's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


class PeakSampler:
    """Background thread recording the peak VmRSS and Pss sums of this process's tree."""

    def __init__(self, interval: float = SAMPLE_S):
        self.interval, self.peak_rss, self.peak_pss, self.samples = interval, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, pss = tree_memory(os.getpid())
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


# ---------------------------------------------------------------- children: one configuration each


def diy_params(coverage: bool, n_jobs: int):
    from omegaconf import OmegaConf

    from nextloc.config import PreprocessConfig

    values = OmegaConf.to_container(OmegaConf.load(DIY_YAML))["preprocess"]
    values["n_jobs"] = n_jobs
    if not coverage:
        values["min_coverage"] = values["mean_coverage"] = None
    return PreprocessConfig(**values)


def child_stream(csv_dir: Path, work: Path, coverage: bool, n_jobs: int) -> dict:
    from nextloc.data import raw
    from nextloc.data.preprocess import _staypoints_by_user

    params = diy_params(coverage, n_jobs)
    shutil.rmtree(work, ignore_errors=True)
    base = tree_memory(os.getpid())[0]
    cpu0 = cpu_seconds()
    with PeakSampler() as peak:
        tic = time.perf_counter()
        counts = raw.partition_csv_by_user(raw.diy_files(csv_dir), work / "fixes")
        t_partition = time.perf_counter() - tic
        sources = sorted(p for p in (work / "fixes").iterdir() if p.is_dir() and not p.name.startswith("."))
        sp, _, _ = _staypoints_by_user(sources, params, work / "staypoints")
        wall = time.perf_counter() - tic
    cpu = cpu_seconds() - cpu0
    shutil.rmtree(work, ignore_errors=True)
    return {"rows": counts["rows"], "users": len(sources), "staypoints": len(sp), "wall": wall, "cpu": cpu,
            "stage1": t_partition, "stage2": wall - t_partition, "peak_rss": peak.peak_rss,
            "peak_pss": peak.peak_pss, "base": base, "samples": peak.samples,
            "workers": min(params.n_jobs or os.cpu_count() or 1, len(sources))}


def child_whole(csv_dir: Path) -> dict:
    import warnings

    import geopandas as gpd
    import pandas as pd
    import trackintel as ti

    base = tree_memory(os.getpid())[0]
    cpu0 = cpu_seconds()
    with PeakSampler() as peak:
        tic = time.perf_counter()
        frame = pd.concat([pd.read_csv(f, dtype={"user_id": str, "tracked_at": str})
                           for f in sorted(csv_dir.glob("*.csv"))], ignore_index=True)
        frame["tracked_at"] = pd.to_datetime(frame["tracked_at"], format="ISO8601", utc=True)
        pfs = ti.Positionfixes(gpd.GeoDataFrame(
            frame[["user_id", "tracked_at"]], crs="EPSG:4326",
            geometry=gpd.points_from_xy(frame["longitude"], frame["latitude"])))
        del frame
        t_read = time.perf_counter() - tic
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pfs, sp = pfs.generate_staypoints(method="sliding", distance_metric="haversine", dist_threshold=100,
                                              time_threshold=30, gap_threshold=1440, n_jobs=1)
            sp = sp.create_activity_flag(method="time_threshold", time_threshold=25)
        wall = time.perf_counter() - tic
    cpu = cpu_seconds() - cpu0
    return {"rows": len(pfs), "users": int(pfs["user_id"].nunique()), "staypoints": len(sp), "wall": wall, "cpu": cpu,
            "stage1": t_read, "stage2": wall - t_read, "peak_rss": peak.peak_rss, "peak_pss": peak.peak_pss,
            "base": base, "samples": peak.samples, "workers": 1}


def run_child(args: list[str]) -> dict:
    """Run this script with ``--child ...`` in a fresh interpreter; its last stdout line is the result."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench child {args[:1]} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- data


def generate_csvs(folder: Path, rows: int, days: int, interval: float, seed: int) -> dict:
    """DIY CSVs of at least ``rows`` fixes: users of ``days`` days each, added until the count is reached."""
    from nextloc.data.raw_synthetic import generate_positionfixes, move_places, write_diy
    from nextloc.data.synthetic_mobility import generate_staypoints

    tic = time.perf_counter()
    per_user = 0.65 * days * 86_400 / interval  # ~65 % of a day is tracked at one fix per interval
    n_users = max(2, math.ceil(1.5 * rows / per_user))  # headroom; only as many as needed are written
    staypoints, places = generate_staypoints(n_users, days, seed, timezone="Asia/Jakarta")
    places = move_places(places, *YOGYAKARTA)
    folder.mkdir(parents=True, exist_ok=True)
    written, users, largest, batch_users, part = 0, 0, 0, [], 0
    by_user = dict(tuple(staypoints.groupby("user_id", sort=True)))

    def flush(batch):
        nonlocal written, part, largest
        fixes = generate_positionfixes(staypoints[staypoints["user_id"].isin(batch)], places,
                                       interval_s=interval, seed=seed + part)
        largest = max(largest, int(fixes.groupby("user_id").size().max()))
        tmp = folder / f".batch-{part}"
        write_diy(fixes, tmp)
        (tmp / "part-000.csv").rename(folder / f"part-{part:03d}.csv")
        tmp.rmdir()
        written += len(fixes)
        part += 1

    pending = 0
    for user in sorted(by_user):
        if written + pending >= rows:
            break
        batch_users.append(user)
        users += 1
        pending += _estimate_fixes(by_user[user], interval)
        if pending >= BATCH_ROWS:
            flush(batch_users)
            batch_users, pending = [], 0
    if batch_users:
        flush(batch_users)
    if written < 0.9 * rows:
        raise SystemExit(f"generated only {written} of {rows} rows; raise the user headroom")
    return {"rows": written, "users": users, "files": part, "largest_user": largest,
            "seconds": time.perf_counter() - tic}


def _estimate_fixes(stays, interval: float) -> int:
    """Fixes of one user's stays plus tracked travel (gaps up to 6 h), as generate_positionfixes makes them."""
    import pandas as pd

    start = pd.DatetimeIndex(stays["started_at"]).as_unit("s").asi8
    finish = pd.DatetimeIndex(stays["finished_at"]).as_unit("s").asi8
    gaps = start[1:] - finish[:-1]
    tracked_gaps = gaps[(gaps > 0) & (gaps <= 6 * 3600)]
    return int(((finish - start) // interval + 1).sum() + (tracked_gaps // interval).sum())


# ---------------------------------------------------------------- report


def _gb(b: float) -> str:
    return f"{b / 2**30:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=float, nargs="+", default=[1e6, 1e7], help="sizes in rows (default 1e6 1e7)")
    parser.add_argument("--days", type=int, default=30, help="days per user (default 30)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between fixes (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=0, help="workers of the streaming stage; 0 = all cores")
    parser.add_argument("--coverage", action="store_true", help="also run with DIY's coverage filter on")
    parser.add_argument("--no-baseline", action="store_true", help="skip the whole-frame baseline")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per configuration; the fastest is reported, with the highest peak of all")
    parser.add_argument("--workdir", help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "stream":
            result = child_stream(Path(rest[0]), Path(rest[1]), rest[2] == "1", int(rest[3]))
        else:
            result = child_whole(Path(rest[0]))
        print(json.dumps(result))
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_preprocess."))
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    print(f"bench_preprocess: {cores} cores, n_jobs={args.n_jobs or cores}, days/user={args.days}, "
          f"interval={args.interval:g} s, data in {work}", flush=True)
    results = []  # (label, size label, data info, result)
    try:
        sizes = sorted(int(r) for r in args.rows)
        for size in sizes:
            label = f"{size / 1e6:g}M"
            csv_dir = work / f"diy-{label}"
            if not any(csv_dir.glob("*.csv")):
                shutil.rmtree(csv_dir, ignore_errors=True)
                info = generate_csvs(csv_dir, size, args.days, args.interval, args.seed)
                (csv_dir / "info.json").write_text(json.dumps(info))
            info = json.loads((csv_dir / "info.json").read_text())
            print(f"data {label}: {info['rows']:,} rows, {info['users']} users, {info['files']} files, "
                  f"largest user {info['largest_user']:,} rows", flush=True)
            configs = [("stream", ["stream", str(csv_dir), str(work / "pipeline"), "0", str(args.n_jobs)])]
            if args.coverage:
                configs.append(("stream+coverage",
                                ["stream", str(csv_dir), str(work / "pipeline"), "1", str(args.n_jobs)]))
            if size == sizes[0] and not args.no_baseline:
                configs.append(("whole frame", ["whole", str(csv_dir)]))
            for name, child_args in configs:
                runs = [run_child(child_args) for _ in range(max(1, args.repeat))]
                result = dict(min(runs, key=lambda r: r["wall"]))
                result["peak_rss"] = max(r["peak_rss"] for r in runs)
                result["peak_pss"] = max(r["peak_pss"] for r in runs)
                result["cpu"] = min(r["cpu"] for r in runs)
                results.append((name, label, info, result))
                print(f"  {name:<16} {result['wall']:7.1f} s  peak RSS {_gb(result['peak_rss'])} GB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    head = (f"{'configuration':<16} {'size':>5} {'rows':>11} {'users':>5} {'proc':>4} {'wall s':>7} "
            f"{'stage1 s':>8} {'stage2 s':>8} {'cpu s':>7} {'rows/s':>9} {'peak RSS GB':>11} {'peak PSS GB':>11} "
            f"{'base GB':>7}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, label, _, r in results:
        print(f"{name:<16} {label:>5} {r['rows']:>11,} {r['users']:>5} {r['workers'] + (name != 'whole frame'):>4} "
              f"{r['wall']:>7.1f} {r['stage1']:>8.1f} {r['stage2']:>8.1f} {r['cpu']:>7.1f} "
              f"{r['rows'] / r['wall']:>9,.0f} "
              f"{_gb(r['peak_rss']):>11} {_gb(r['peak_pss']):>11} {_gb(r['base']):>7}")
    print("stage1: streaming = partition CSV by user; whole frame = read_csv + parse + GeoDataFrame.\n"
          "stage2: streaming = per-user staypoints in workers + concat; whole frame = staypoints + activity flag.\n"
          "cpu: user + system CPU seconds of the whole tree (less sensitive than wall time to other load).\n"
          "proc: processes in the tree (streaming: the main process + workers).")

    print()
    for name in ("stream", "stream+coverage"):
        rows = [(label, r) for n, label, _, r in results if n == name]
        if len(rows) < 2:
            continue
        (l0, r0), (l1, r1) = rows[0], rows[-1]
        n_ratio = r1["rows"] / r0["rows"]
        print(f"{name}: {l1}/{l0}: rows x{n_ratio:.2f}, wall time x{r1['wall'] / r0['wall']:.2f}, "
              f"CPU time x{r1['cpu'] / r0['cpu']:.2f} (linear: x{n_ratio:.2f}), "
              f"peak RSS x{r1['peak_rss'] / r0['peak_rss']:.2f}, "
              f"peak PSS x{r1['peak_pss'] / r0['peak_pss']:.2f} (flat: <= 1.5)")
    whole = [(label, r) for n, label, _, r in results if n == "whole frame"]
    if whole:
        label, w = whole[0]
        for name in ("stream", "stream+coverage"):
            s = next((r for n, lab, _, r in results if n == name and lab == label), None)
            if s:
                print(f"{name} vs whole frame at {label}: wall time x{s['wall'] / w['wall']:.2f} "
                      f"(speed-up x{w['wall'] / s['wall']:.2f}), peak RSS x{s['peak_rss'] / w['peak_rss']:.2f}, "
                      f"peak PSS x{s['peak_pss'] / w['peak_pss']:.2f}")
        print(f"whole frame: {w['rows'] / w['wall']:,.0f} rows/s -> full DIY ({FULL_DIY_ROWS / 1e6:.0f} M rows) "
              f"{FULL_DIY_ROWS / (w['rows'] / w['wall']) / 60:.0f} min on one core, and memory growing with the rows")
    for name in ("stream", "stream+coverage"):
        rows = [r for n, _, _, r in results if n == name]
        if rows:
            r = rows[-1]
            rate = r["rows"] / r["wall"]
            s1 = FULL_DIY_ROWS / (r["rows"] / r["stage1"])
            s2 = FULL_DIY_ROWS / (r["rows"] / r["stage2"])
            print(f"{name}: {rate:,.0f} rows/s at the largest size -> full DIY ({FULL_DIY_ROWS / 1e6:.0f} M rows) "
                  f"about {FULL_DIY_ROWS / rate / 60:.0f} min on this {cores}-core machine "
                  f"(stage 1 {s1 / 60:.0f} min on one core, stage 2 {s2 / 60:.0f} min on {r['workers']} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
