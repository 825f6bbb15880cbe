"""A whole run: data, model, training with early stopping, test, and the run directory's files.

The run directory holds (docs/reference.md)::

    run_config.json            the validated config; a directory serves one config only
    .hydra/                    the composed config and overrides (train.py), once the directory is claimed
    train.log                  everything logged (written by Hydra's logging)
    tensorboard/               scalars per epoch, and the HParams entry of the run
    checkpoints/best.pt        weights of the best validation epoch (a count-based model's counts)
    checkpoints/last.pt        the full state after the last completed epoch (for resume=)
    data/locations.parquet     the data set's location table (encoded id <-> raw id, centroid), when it has one
    data/users.parquet         encoded user id <-> raw user id
    data/data.json             the data set's name, table sizes and fingerprint
    test_results.json          test and best-validation metrics, counts and run facts
    test_per_user.csv          test metrics per user
    failed.json                the error and overrides, when a job of a sweep or search failed
    .lock                      exists while a process uses the directory
"""

from __future__ import annotations

import json
import logging
import platform
import random
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from nextloc import __version__
from nextloc.baselines import baseline_accuracy
from nextloc.config import RunConfig, run_config_from_dict
from nextloc.data.batches import SplitTensors
from nextloc.data.datasets import load_dataset
from nextloc.data.info import DataInfo
from nextloc.data.samples import SPLITS
from nextloc.data.store import LOCATIONS, USERS, ProcessedData, fingerprint
from nextloc.errors import ConfigError, RunInUse, RunOfAnotherConfig
from nextloc.io import atomic_directory, exclusive_lock, remove_temporaries, write_atomic, write_json
from nextloc.models import build_model, count_parameters
from nextloc.training.trainer import REPORTED, Trainer, summary

log = logging.getLogger(__name__)

RESULTS = "test_results.json"
CONFIG = "run_config.json"
FAILED = "failed.json"
LOCK = ".lock"
PER_USER = "test_per_user.csv"
DATA = "data"  # copies of the data set's tables, so that a trained model can be used without its data folder
DATA_INFO = "data.json"


def run(
    config: RunConfig,
    run_dir: str | Path,
    on_epoch: Callable[[int, dict], None] | None = None,
    wait: bool = False,
    on_claim: Callable[[], None] | None = None,
) -> dict:
    """Train and test one model as ``config`` says, writing every artefact into ``run_dir``.

    Continues from ``run_dir/checkpoints/last.pt`` when that directory ran the
    same config before. Nothing is written into ``run_dir`` until it is known
    to be this config's and the data and model are ready; then ``on_claim()``
    is called (the caller's own record of the run goes there). ``on_epoch(epoch,
    validation_metrics)`` is called after every epoch (a search reports to its
    pruner there and may raise to stop the run). Returns the content of
    ``test_results.json``. One process at a time uses a run directory: another
    one stops with :class:`RunInUse`, or with ``wait`` waits until the first
    one ends and then continues its run.
    """
    run_dir = Path(run_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(run_dir / LOCK, remove=True))
        except BlockingIOError:
            if not wait:
                raise RunInUse(
                    f"{run_dir} is in use by another process right now; wait for it to end, "
                    "or give this run a directory of its own"
                ) from None
            log.info("%s is in use by another process; waiting for it to end", run_dir)
            stack.enter_context(exclusive_lock(run_dir / LOCK, wait=True, remove=True))
        settings = _check_claim(run_dir, config)
        if (run_dir / RESULTS).is_file():
            log.info("%s has finished already; its results stay as they are", run_dir)
            return json.loads((run_dir / RESULTS).read_text())
        prepared = _prepare(config)  # a wrong value or damaged data found here leaves the directory as it was
        if not (run_dir / CONFIG).is_file():
            write_json(run_dir / CONFIG, settings)
        if on_claim is not None:
            on_claim()
        return _run(config, run_dir, prepared, on_epoch)


def record_failure(run_dir: Path, err: Exception, overrides: list[str]) -> None:
    """Write ``failed.json`` with the job's overrides, so that summaries list the job as failed.

    Never into a directory that another process uses or that holds another config's run.
    """
    if not isinstance(err, (RunInUse, RunOfAnotherConfig)):
        write_json(run_dir / FAILED, {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                      "overrides": list(overrides)})


def _prepare(config: RunConfig) -> tuple:
    """Device, data, seeded model and split tensors of a run; raises on a user mistake before anything is written."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset)
    _seed_everything(config.seed)
    model = build_model(config.model, DataInfo.from_tables(data.num_locations, data.num_users, data.locations))
    model.to(device)
    splits = {s: SplitTensors(data.staypoints[s], data.samples[s], model.inputs) for s in SPLITS}
    batch_size = config.dataset.batch_size
    if len(splits["train"]) < batch_size and not model.fits_by_counting:
        raise ConfigError(
            f"dataset.batch_size={batch_size} exceeds the {len(splits['train'])} training samples; lower it"
        )
    return device, data, model, splits


def _run(config: RunConfig, run_dir: Path, prepared: tuple, on_epoch: Callable[[int, dict], None] | None) -> dict:
    device, data, model, splits = prepared
    for folder in (run_dir, run_dir / "checkpoints"):  # what a killed process was writing; nobody else writes here now
        remove_temporaries(folder)
    log.info(
        "model %s: %s, device %s, %d torch threads", config.model.name,
        "fits by counting" if model.fits_by_counting else f"{count_parameters(model)} parameters",
        device, torch.get_num_threads(),
    )
    _copy_data_tables(data, run_dir / DATA)
    trainer = Trainer(config, model, splits, device, run_dir, on_epoch)
    trainer.fit()
    metrics, best = trainer.test()
    per_user = data.users.merge(metrics.per_user(), on="user_id", how="inner")  # raw ids first
    write_atomic(run_dir / PER_USER, lambda tmp: per_user.to_csv(tmp, index=False))
    results = {
        "dataset": config.dataset.name,
        "model": config.model.name,
        "seed": config.seed,
        "num_parameters": count_parameters(model),
        "epochs_run": trainer.epoch,
        "best_epoch": best["epoch"],
        "early_stopping_triggers": trainer.triggers,
        "wall_time_s": round(trainer.elapsed, 3),
        "device": str(device),
        "nextloc_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "test": metrics.compute(),
        "validation": best["validation"],
        "baselines": baseline_accuracy(data, splits),
        "data": {k: data.metadata[k] for k in ("num_locations", "num_users", "splits")} | data.metadata.get("extra", {}),
        "config": _settings(config),
    }
    _log_hparams(run_dir, config, results)
    write_json(run_dir / RESULTS, results)
    log.info("test: %s", summary(results["test"]))
    return results


def _copy_data_tables(data: ProcessedData, out: Path) -> None:
    """Copy the location and user tables and the data set's fingerprint into the run directory, in one rename."""
    info = {
        "name": data.metadata.get("name"),
        "num_locations": data.num_locations,
        "num_users": data.num_users,
        "fingerprint": fingerprint(data.metadata),
        "has_location_table": data.locations is not None,
    }
    if (out / DATA_INFO).is_file():
        if json.loads((out / DATA_INFO).read_text())["fingerprint"] != info["fingerprint"]:
            raise RunOfAnotherConfig(f"{out}: this run was trained on other data; give this run a directory of its own")
        return
    shutil.rmtree(out, ignore_errors=True)  # a copy that a killed process left incomplete
    with atomic_directory(out) as tmp:
        if data.locations is not None:
            data.locations.to_parquet(tmp / LOCATIONS, index=False)
        data.users.to_parquet(tmp / USERS, index=False)
        write_json(tmp / DATA_INFO, info)


def _check_claim(run_dir: Path, config: RunConfig) -> dict:
    """The run's settings, once it is clear that ``run_dir`` is new or ran the same config.

    A directory with the same config continues (``resume=``, or a sweep
    started again in the same sweep directory); one with another config is
    refused before anything is written into it, so records are never rewritten.
    """
    settings = _settings(config)
    file = run_dir / CONFIG
    if not file.is_file():
        return settings
    try:  # through the schema, so that keys added since it was written take their defaults
        recorded = _settings(run_config_from_dict(json.loads(file.read_text())))
    except (ConfigError, json.JSONDecodeError):
        recorded = None
    if recorded != settings:
        raise RunOfAnotherConfig(f"{run_dir} holds a run with another config; give this run a directory of its own")
    return settings


def _settings(config: RunConfig) -> dict:
    """The config as JSON values, without the keys that do not change results.

    ``resume`` only says where a run continues; ``threads`` (set per launcher)
    and ``progress`` only change how it runs.
    """
    settings = json.loads(json.dumps(asdict(config)))
    for key in ("resume", "threads", "progress"):
        settings.pop(key)
    settings["dataset"]["source"] = config.dataset.reader
    return settings


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log_hparams(run_dir: Path, config: RunConfig, results: dict) -> None:
    """One HParams entry: the flattened config and the final validation and test metrics."""
    metrics = {
        f"hparams/{prefix}_{k}": results[split][k]
        for split, prefix in (("validation", "val"), ("test", "test"))
        for k in REPORTED if results[split].get(k) is not None
    }
    with SummaryWriter(run_dir / "tensorboard") as writer:
        writer.add_hparams(flatten_config(asdict(config)), metrics, run_name=".")


def flatten_config(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; values TensorBoard cannot show become strings."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
