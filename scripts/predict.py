"""Predict next places with a trained run, or export its model.

    python scripts/predict.py <run dir> <visits.csv> [--k 10] [--at TIME] [-o predictions.csv] [--force]
    python scripts/predict.py <run dir> --export model.pt2 [--max-length 64] [--force]

The visits CSV has one visit per line: ``user_id``, ``started_at``,
``finished_at`` (ISO 8601; without an offset they are read in the data set's
time zone) and ``location_id`` (the data set's raw place id) or ``latitude``
and ``longitude``. Each user's history is built as in training, before
``--at`` (default: after the user's last visit); the output has one line per
user and rank (see ``nextloc.prediction``), on stdout or in ``-o``. The
export is a ``torch.export`` program for histories of up to ``--max-length``
steps and any batch size (see ``nextloc.export``). Exit code 2 and one line
for a mistake; nothing is written then, and an existing output file is kept
unless ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from nextloc.data.raw import readable_csv
from nextloc.errors import DataError, NextlocError, storage_error
from nextloc.io import write_atomic
from nextloc.trained import load_run

log = logging.getLogger("predict")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parse(argv)
    try:
        _main(args)
    except (NextlocError, OSError) as err:
        log.error("error: %s", storage_error(err) or err)
        return 2
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="directory of a finished run (train.py's outputs/<date>/<time>)")
    parser.add_argument("visits", type=Path, nargs="?", help="CSV of visits to predict from")
    parser.add_argument("--k", type=int, default=10, help="places per user (default 10)")
    parser.add_argument("--at", help="prediction time for every user, e.g. 2024-03-01T08:00 (default: each "
                                     "user's last visit)")
    parser.add_argument("-o", "--out", type=Path, help="CSV to write the predictions to (default: stdout)")
    parser.add_argument("--export", type=Path, metavar="FILE", help="write the model as a torch.export program")
    parser.add_argument("--max-length", type=int, default=64, help="history steps of the exported program")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    if (args.visits is None) == (args.export is None):
        parser.error("give either a visits CSV or --export FILE")
    return args


def _main(args: argparse.Namespace) -> None:
    out = args.export or args.out
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; choose another file or add --force")
    run = load_run(args.run_dir)
    if args.export is not None:
        from nextloc.export import export_run  # torch.export: only when asked for

        export_run(run, args.export, args.max_length)
        log.info("wrote %s (histories of up to %d steps, any batch size)", args.export, args.max_length)
        return
    with readable_csv(args.visits):
        visits = pd.read_csv(args.visits, dtype={"user_id": str})
    if visits.empty:
        raise DataError(f"{args.visits}: holds no visit")
    predictions = run.predict(visits, k=args.k, at=args.at)
    if args.out is None:
        predictions.to_csv(sys.stdout, index=False)
        return
    write_atomic(args.out, lambda tmp: predictions.to_csv(tmp, index=False))
    log.info("wrote %d predictions for %d users to %s", len(predictions), predictions["user_id"].nunique(), args.out)


if __name__ == "__main__":
    sys.exit(main())
