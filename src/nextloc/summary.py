"""One table of a sweep's jobs, and mean ± std over seeds per configuration.

A job is a run directory with ``run_config.json`` (the validated config the
run claimed its directory with) or ``failed.json`` (a job refused before
that, with its overrides). Its settings come from those files, never from
``.hydra/``; its status is ``finished`` (``test_results.json``), ``failed``,
``pruned`` (``pruned.json``, an Optuna trial stopped early), ``incomplete``,
or ``unreadable`` (one of those files is damaged: the job is listed, naming the
file, and the rest of the table stands). Ranking always uses a validation
metric, never a test one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from nextloc.training.run import CONFIG, FAILED, RESULTS, flatten_config

log = logging.getLogger(__name__)

METRICS = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg", "f1")
KNOWN = ("acc@1_known", "acc@5_known", "mrr_known")  # test samples whose target was seen in training
# the per-configuration table: validation acc@1 (what ranks), every test metric, and the size
SCOREBOARD = ("val_acc@1", *(f"test_{m}" for m in (*METRICS, *KNOWN)), "num_parameters")
FACTS = ("num_parameters", "epochs_run", "best_epoch", "wall_time_s")
GROUPS = ("dataset", "model", "optim", "scheduler")  # config groups: ``model.name`` is shown as ``model``


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The run directories of the jobs under ``sweep_dir``."""
    marks = [*Path(sweep_dir).glob(f"**/{CONFIG}"), *Path(sweep_dir).glob(f"**/{FAILED}")]
    return sorted({mark.parent for mark in marks})


def collect_jobs(sweep_dir: Path) -> pd.DataFrame:
    """One row per job under ``sweep_dir``: its settings, status, metrics and facts."""
    rows = []
    for job_dir in job_dirs(sweep_dir):
        row = {"job": str(job_dir.relative_to(sweep_dir))}
        try:
            row |= _job(job_dir)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("%s: listed as unreadable, a file of it is damaged (%s)", job_dir, err)
            row |= {"status": "unreadable", "error": f"{type(err).__name__}: {err}"}
        rows.append(row)
    jobs = pd.DataFrame(rows)
    first = [c for c in jobs.columns if c not in ("job", "status", "error") and not _is_result(c)]
    return jobs[["job", *first, "status", "error", *[c for c in jobs.columns if _is_result(c)]]] if rows else jobs


def _job(job_dir: Path) -> dict:
    """One job's settings, status and results; raises when a file is damaged."""
    failed = _json(job_dir / FAILED) if (job_dir / FAILED).is_file() else None
    if (job_dir / CONFIG).is_file():
        settings = settings_columns(_json(job_dir / CONFIG))
    else:  # refused before it claimed the directory: only its overrides are known
        settings = dict(o.split("=", 1) for o in failed.get("overrides", []) if "=" in o)
    row = {**settings, "status": "incomplete", "error": ""}
    if (job_dir / RESULTS).is_file():
        results = _json(job_dir / RESULTS)
        row["status"] = "finished"
        row |= {f"val_{m}": results["validation"][m] for m in METRICS}
        row |= {f"test_{m}": results["test"][m] for m in METRICS}
        row |= {f"test_{m}": results["test"].get(m) for m in KNOWN}
        row |= {fact: results[fact] for fact in FACTS}
        return row
    if failed is not None:
        row |= {"status": "failed", "error": failed["error"]}
    elif (job_dir / "pruned.json").is_file():  # written by tuning
        row |= {"status": "pruned", "error": _json(job_dir / "pruned.json")["error"]}
    return row


def _json(file: Path):
    """A job's JSON file; a damaged one raises naming the file."""
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file.name}: {err}") from None


def settings_columns(settings: dict) -> dict:
    """A run's settings as columns keyed as overrides are: ``optim.lr``, and ``optim`` for ``optim.name``."""
    def column(key: str) -> str:
        section, _, leaf = key.rpartition(".")
        return section if leaf == "name" and section in GROUPS else key

    return {column(key): value for key, value in flatten_config(settings).items()}


def _is_result(column: str) -> bool:
    return column.startswith(("val_", "test_")) or column in FACTS


def swept_keys(jobs: pd.DataFrame) -> list[str]:
    """Setting keys (columns before ``status``) whose value differs between jobs."""
    keys = list(jobs.columns[1 : list(jobs.columns).index("status")])
    return [k for k in keys if jobs[k].nunique() > 1]  # a key that only some jobs have (a model's own) is not swept


def rank_jobs(jobs: pd.DataFrame, metric: str = "acc@1") -> pd.DataFrame:
    """Jobs ordered by validation ``metric``, best first; failed and incomplete jobs last."""
    column = f"val_{metric}"
    if column not in jobs:
        return jobs
    return jobs.sort_values(column, ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def group_seeds(jobs: pd.DataFrame, metric: str = "acc@1") -> pd.DataFrame:
    """Mean and std over seeds of each configuration's finished jobs, ranked by validation ``metric``."""
    finished = jobs[jobs["status"] == "finished"]
    if finished.empty:
        return pd.DataFrame()
    keys = [k for k in swept_keys(jobs) if k != "seed"]
    columns = [f"{split}_{m}" for split in ("val", "test") for m in METRICS]
    columns += [c for c in (*(f"test_{m}" for m in KNOWN), "num_parameters") if c in finished]
    finished = finished.astype({c: float for c in columns})
    grouped = finished.groupby(keys, dropna=False) if keys else finished.groupby(lambda _: "all")
    table = grouped[columns].agg(["mean", "std"])
    table.columns = [f"{c}_{stat}" for c, stat in table.columns]
    table.insert(0, "seeds", grouped.size())
    table = table.sort_values(f"val_{metric}_mean", ascending=False).reset_index()
    return table.rename(columns={"index": "configuration"})


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; numbers with 2 decimals."""
    def cell(value):
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def mean_std_table(grouped: pd.DataFrame, keys: list[str], columns=SCOREBOARD) -> pd.DataFrame:
    """``mean ± std`` strings per configuration for the paper-style table (the parameter count as its mean)."""
    out = grouped[[*keys, "seeds"]].copy()
    for column in columns:
        if f"{column}_mean" not in grouped:
            continue
        mean, std = grouped[f"{column}_mean"], grouped[f"{column}_std"].fillna(0.0)
        if column == "num_parameters":
            out["parameters"] = [f"{a:,.0f}" for a in mean]
        else:
            out[column] = [f"{a:.2f} ± {b:.2f}" for a, b in zip(mean, std)]
    return out
