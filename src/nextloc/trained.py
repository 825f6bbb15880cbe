"""A finished run directory as a usable model: ``nextloc.load_run(run_dir)``.

Everything comes from the run directory itself (its validated config, the
copies of the data set's tables and the best checkpoint); neither Hydra nor
the original data folder is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nextloc.config import RunConfig, run_config_from_dict
from nextloc.data.info import DataInfo
from nextloc.data.store import LOCATIONS, USERS
from nextloc.errors import DataError
from nextloc.models import build_model
from nextloc.models.base import NextLocationModel
from nextloc.training.checkpoint import load_checkpoint
from nextloc.training.run import CONFIG, DATA, DATA_INFO
from nextloc.training.trainer import BEST


@dataclass
class TrainedRun:
    """A trained model in eval mode with its config and the tables of the data set it was trained on.

    ``locations`` maps encoded location ids to raw ids and centroids (``None``
    when the data set had no location table), ``users`` encoded to raw user
    ids; ``data`` holds the data set's name, table sizes and ``fingerprint``.
    ``predict`` turns visits into each user's most likely next places.
    """

    model: NextLocationModel
    config: RunConfig
    locations: pd.DataFrame | None
    users: pd.DataFrame
    data: dict
    best_epoch: int | None
    run_dir: Path

    def predict(self, visits: pd.DataFrame, k: int = 10, at=None) -> pd.DataFrame:
        """Top-``k`` next places of each user of ``visits``, after ``at`` (default: each user's last visit).

        See :mod:`nextloc.prediction` for the columns of ``visits`` and of the result.
        """
        from nextloc.prediction import predict_visits

        return predict_visits(self, visits, k=k, at=at)


def load_run(run_dir: str | Path) -> TrainedRun:
    """Load the model of a finished run with its best weights (on the CPU).

    Examples
    --------
    >>> run = load_run("outputs/2026-11-23/10-00-00")  # doctest: +SKIP
    >>> scores = run.model(batch)  # (B, L)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    for needed in (CONFIG, BEST, f"{DATA}/{DATA_INFO}", f"{DATA}/{USERS}"):
        if not (run_dir / needed).is_file():
            hint = "give the directory of a finished run"
            if needed.startswith(DATA) and (run_dir / BEST).is_file():
                hint = "the run predates run directories that keep their data tables; train it again"
            raise DataError(f"{run_dir / needed}: missing; {hint}")
    config = run_config_from_dict(json.loads((run_dir / CONFIG).read_text()))
    info = json.loads((run_dir / DATA / DATA_INFO).read_text())
    locations = pd.read_parquet(run_dir / DATA / LOCATIONS) if info["has_location_table"] else None
    users = pd.read_parquet(run_dir / DATA / USERS)
    model = build_model(config.model, DataInfo.from_tables(info["num_locations"], info["num_users"], locations))
    best = load_checkpoint(run_dir / BEST)
    model.load_state_dict(best["model"])
    return TrainedRun(model.eval(), config, locations, users, info, best["epoch"], run_dir)
