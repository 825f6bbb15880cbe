"""How long prediction takes for many users: ``python scripts/bench_predict.py [--run-dir DIR] [--users 10000]``.

Without ``--run-dir`` it trains a one-epoch ``lstm`` on the built-in synthetic
data into a temporary folder first (not timed). The visits are random: each
user gets ``--visits`` visits at known places over the ten days before the
prediction time. Prints the seconds for reading nothing from disk and
predicting the top 10 places of every user, and the users per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nextloc.config import RunConfig
from nextloc.trained import load_run
from nextloc.training.run import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: train a small one first)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--visits", type=int, default=30, help="visits per user")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            run(RunConfig(max_epochs=1, progress=False), run_dir)
        trained = load_run(run_dir)
        visits = random_visits(trained, args.users, args.visits)
        print(f"{args.users:,} users, {len(visits):,} visits, {torch.get_num_threads()} torch threads")
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            predictions = trained.predict(visits, k=10)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"predict, best of {args.repeat}: {best:.2f} s ({args.users / best:,.0f} users/s); "
              f"{len(predictions):,} rows")


def random_visits(trained, n_users: int, per_user: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    places = trained.locations.loc[trained.locations["location_id"] > 1, "raw_location_id"].to_numpy()
    n = n_users * per_user
    start = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.sort(rng.uniform(0, 10 * 1440, n)), unit="min")
    return pd.DataFrame({
        "user_id": np.repeat([f"user{i}" for i in range(n_users)], per_user),
        "location_id": rng.choice(places, n),
        "started_at": start.strftime("%Y-%m-%dT%H:%M:%S"),
        "finished_at": (start + pd.to_timedelta(rng.uniform(5, 240, n), unit="min")).strftime("%Y-%m-%dT%H:%M:%S"),
    })


if __name__ == "__main__":
    main()
