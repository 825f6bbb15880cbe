"""Summarise a sweep: ``python scripts/summarize.py <sweep dir> [--metric acc@1] [--plot]``.

Prints one table of all jobs (the settings that differ between them, validation and test metrics,
parameter count, epochs, wall time, status and error) ranked by the
validation metric, and writes it as ``summary.csv`` and ``summary.md`` into
the sweep directory. Jobs that differ only in ``seed`` are grouped into
``summary_by_config.csv`` / ``.md`` with mean ± std. ``--plot`` writes PNG
figures of the validation metric against each swept hyperparameter into
``plots/``, and for an Optuna study (``study.db`` in the directory) its
optimisation history.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from nextloc.io import write_atomic
from nextloc.tuning import STORAGE_FILE
from nextloc.summary import METRICS, collect_jobs, group_seeds, mean_std_table, rank_jobs, swept_keys, to_markdown


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="acc@1", choices=METRICS, help="validation metric that ranks the jobs")
    parser.add_argument("--plot", action="store_true", help="write PNG figures into <sweep dir>/plots/")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir}: no such folder; give a sweep directory (outputs/multirun/<date>/<time>)",
              file=sys.stderr)
        return 2
    jobs = collect_jobs(args.sweep_dir)
    if jobs.empty:
        print(f"error: no jobs (run directories with run_config.json or failed.json) under {args.sweep_dir}", file=sys.stderr)
        return 2
    keys = swept_keys(jobs)
    columns = ["job", *keys, *[c for c in jobs.columns if c.startswith(("val_", "test_"))],
               *[c for c in ("num_parameters", "epochs_run", "wall_time_s", "status", "error") if c in jobs]]
    table = rank_jobs(jobs, args.metric)[columns]
    _write(args.sweep_dir / "summary", table)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(index=False))
    grouped = group_seeds(jobs, args.metric)
    if not grouped.empty and "seed" in keys:
        paper = mean_std_table(grouped, [k for k in keys if k != "seed"])
        _write(args.sweep_dir / "summary_by_config", paper)
        print("\nmean ± std over seeds:\n" + paper.to_string(index=False))
    if args.plot:
        _plot(jobs, keys, args.metric, args.sweep_dir / "plots")
    print(f"\nwritten: {args.sweep_dir / 'summary.csv'} and .md")
    return 0


def _write(stem: Path, table: pd.DataFrame) -> None:
    write_atomic(stem.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False))
    write_atomic(stem.with_suffix(".md"), lambda tmp: tmp.write_text(to_markdown(table)))


def _plot(jobs: pd.DataFrame, keys: list[str], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = jobs[jobs["status"] == "finished"]
    out.mkdir(parents=True, exist_ok=True)
    for key in [k for k in keys if k != "seed"]:
        values = pd.to_numeric(finished[key], errors="coerce")
        x = values if values.notna().all() else finished[key].astype(str)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(x, finished[f"val_{metric}"])
        ax.set_xlabel(key)
        ax.set_ylabel(f"validation {metric} (%)")
        if values.notna().all() and (values > 0).all() and values.max() / values.min() >= 100:
            ax.set_xscale("log")
        fig.tight_layout()
        _save_png(out / f"val_{metric}_vs_{key}.png", fig)
    study_file = out.parent / STORAGE_FILE
    if study_file.is_file():  # an Optuna study: its optimisation history too
        import optuna

        storage = f"sqlite:///{study_file.resolve()}"
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = optuna.visualization.matplotlib.plot_optimization_history(study)
            _save_png(out / f"history_{summary.study_name}.png", ax.figure)


def _save_png(path: Path, fig) -> None:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
