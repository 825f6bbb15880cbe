"""Write a synthetic raw GPS data set in the GeoLife or DIY layout, with its ground truth.

Usage::

    python scripts/make_raw.py --layout geolife [--users 20 --days 120 --seed 0 --out data/raw/geolife]
    python scripts/make_raw.py --layout diy [--files 4 --out data/raw/diy]

GeoLife: ``OUT/Data/<user>/Trajectory/*.plt`` (the default ``OUT`` puts ``Data``
where ``dataset=geolife`` preprocessing reads it), plus ``OUT/places.csv`` and
``OUT/staypoints.csv``. DIY: ``OUT/part-*.csv`` in Asia/Jakarta time around
Yogyakarta, plus ``OUT/truth/places.csv`` and ``OUT/truth/staypoints.csv`` (in a
sub-folder, so that a ``*.csv`` glob over ``OUT`` finds only the GPS data).
``staypoints.csv`` holds the stays that generated the fixes (``user_id`` as in
the raw data, ``location_id`` of ``places.csv``, ``started_at``, ``finished_at``).

The data set is written into a temporary folder beside ``OUT`` and renamed
when complete; an existing ``OUT`` is never touched (exit code 2).
The defaults give about 5 M fixes (GeoLife: ~320 MB in ~2,000 files; DIY: ~450 MB) in about 10 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from nextloc.data.raw_synthetic import diy_user_id, generate_positionfixes, move_places, write_diy, write_geolife
from nextloc.data.synthetic_mobility import generate_staypoints

logger = logging.getLogger("make_raw")

DEFAULT_OUT = {"geolife": "data/raw/geolife", "diy": "data/raw/diy"}
TIMEZONE = {"geolife": "Asia/Shanghai", "diy": "Asia/Jakarta"}  # the local clock the routines follow
YOGYAKARTA = (-7.80, 110.37)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    out = Path(args.out or DEFAULT_OUT[args.layout])
    if out.exists():
        print(f"make_raw: {out} already exists; remove it or pass another --out", file=sys.stderr)
        return 2
    tic = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the data set should not be
    try:
        _write(args, tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s data set ready in %s (%.1f s)", args.layout, out, time.perf_counter() - tic)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=sorted(DEFAULT_OUT), required=True)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=30, help="seconds between fixes (default 30)")
    parser.add_argument("--files", type=int, default=1, help="DIY only: number of CSV files (default 1)")
    parser.add_argument("--out", help="output folder; default data/raw/geolife (GeoLife) or data/raw/diy (DIY)")
    return parser.parse_args(argv)


def _write(args: argparse.Namespace, folder: Path) -> None:
    staypoints, places = generate_staypoints(args.users, args.days, args.seed, timezone=TIMEZONE[args.layout])
    if args.layout == "diy":
        places = move_places(places, *YOGYAKARTA)
    fixes = generate_positionfixes(staypoints, places, interval_s=args.interval, seed=args.seed)
    truth = staypoints[["user_id", "location_id", "started_at", "finished_at"]].copy()
    if args.layout == "geolife":
        write_geolife(fixes, folder)
        truth_dir = folder
    else:
        write_diy(fixes, folder, n_files=args.files)
        truth["user_id"] = truth["user_id"].map(diy_user_id)
        truth_dir = folder / "truth"
        truth_dir.mkdir()
    places.to_csv(truth_dir / "places.csv", index=False)
    truth.to_csv(truth_dir / "staypoints.csv", index=False)
    logger.info("ground truth: %d staypoints at %d places in %s", len(truth), len(places), truth_dir)


if __name__ == "__main__":
    sys.exit(main())
