"""A whole run: data, model, training with early stopping, test, and the run directory's files.

The run directory holds (SPEC §7)::

    .hydra/config.yaml         the composed config (written by Hydra)
    run_config.json            the validated config; a directory serves one config only
    train.log                  everything logged (written by Hydra's logging)
    tensorboard/               scalars per epoch, and the HParams entry of the run
    checkpoints/best.pt        weights of the best validation epoch
    checkpoints/last.pt        the full state after the last completed epoch (for resume=)
    test_results.json          test and best-validation metrics, counts and run facts
    test_per_user.csv          test metrics per user
    failed.json                the error, when a job of a sweep or search failed
    .lock                      locked while a process uses the directory
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter

from nextloc import __version__
from nextloc.baselines import baseline_accuracy
from nextloc.config import RunConfig
from nextloc.data.batches import SplitTensors
from nextloc.data.datasets import load_dataset
from nextloc.data.samples import SPLITS
from nextloc.errors import ConfigError, DataError, RunInUse
from nextloc.io import exclusive_lock, write_atomic, write_json
from nextloc.models import build_model, count_parameters
from nextloc.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from nextloc.training.early_stopping import Decision, EarlyStopping
from nextloc.training.loop import evaluate, train_epoch
from nextloc.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

RESULTS = "test_results.json"
CONFIG = "run_config.json"
FAILED = "failed.json"
LOCK = ".lock"
PER_USER = "test_per_user.csv"
BEST, LAST = "checkpoints/best.pt", "checkpoints/last.pt"
REPORTED = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg", "f1", "loss")


def run(
    config: RunConfig, run_dir: str | Path, on_epoch: Callable[[int, dict], None] | None = None, wait: bool = False
) -> dict:
    """Train and test one model as ``config`` says, writing every artefact into ``run_dir``.

    Continues from ``run_dir/checkpoints/last.pt`` when that directory ran the
    same config before. ``on_epoch(epoch, validation_metrics)`` is called after
    every epoch (a search reports to its pruner there and may raise to stop
    the run). Returns the content of ``test_results.json``. One process at a
    time uses a run directory: another one stops with :class:`RunInUse`, or
    with ``wait`` waits until the first one ends and then continues its run.
    """
    run_dir = Path(run_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(run_dir / LOCK))
        except BlockingIOError:
            if not wait:
                raise RunInUse(
                    f"{run_dir} is in use by another process right now; wait for it to end, "
                    "or give this run a directory of its own"
                ) from None
            log.info("%s is in use by another process; waiting for it to end", run_dir)
            stack.enter_context(exclusive_lock(run_dir / LOCK, wait=True))
        return _run(config, run_dir, on_epoch)


def record_failure(run_dir: Path, err: Exception) -> None:
    """Write ``failed.json``, so that summaries list the job as failed; never into a directory in use elsewhere."""
    if not isinstance(err, RunInUse):
        write_json(run_dir / FAILED, {"status": "failed", "error": f"{type(err).__name__}: {err}"})


def _run(config: RunConfig, run_dir: Path, on_epoch: Callable[[int, dict], None] | None) -> dict:
    _claim(run_dir, config)
    if (run_dir / RESULTS).is_file():
        log.info("%s has finished already; its results stay as they are", run_dir)
        return json.loads((run_dir / RESULTS).read_text())
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset)
    splits = {s: SplitTensors(data.staypoints[s], data.samples[s]) for s in SPLITS}
    batch_size = config.dataset.batch_size
    if len(splits["train"]) < batch_size:
        raise ConfigError(
            f"dataset.batch_size={batch_size} exceeds the {len(splits['train'])} training samples; lower it"
        )
    _seed_everything(config.seed)
    model = build_model(config.model, data.num_locations, data.num_users).to(device)
    log.info(
        "model %s: %d parameters, device %s, %d torch threads",
        config.model.name, count_parameters(model), device, torch.get_num_threads(),
    )
    trainer = _Trainer(config, model, splits, device, run_dir, on_epoch)
    trainer.fit()
    results = trainer.test(data.metadata, data.users)
    results["baselines"] = baseline_accuracy(splits["train"], splits["test"])
    write_json(run_dir / RESULTS, results)
    log.info("test: %s", _summary(results["test"]))
    return results


def _claim(run_dir: Path, config: RunConfig) -> None:
    """Record the run's config in its directory, or check that a directory in use ran the same config.

    A directory with the same config continues (``resume=``, or a sweep
    started again in the same sweep directory); one with another config is
    refused, so results are never overwritten.
    """
    settings = _settings(config)
    file = run_dir / CONFIG
    if not file.is_file():
        write_json(file, settings)
    elif json.loads(file.read_text()) != settings:
        raise ConfigError(f"{run_dir} holds a run with another config; give this run a directory of its own")


def _settings(config: RunConfig) -> dict:
    """The config as JSON values, without the keys that do not change results.

    ``resume`` only says where a run continues; ``threads`` (set per launcher)
    and ``progress`` only change how it runs.
    """
    settings = json.loads(json.dumps(asdict(config)))
    for key in ("resume", "threads", "progress"):
        settings.pop(key)
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


def _summary(metrics: dict) -> str:
    return " ".join(f"{k}={metrics[k]:.4g}" for k in REPORTED)


class _Trainer:
    """The mutable state of one run's training: what a checkpoint saves and restores."""

    def __init__(self, config: RunConfig, model, splits, device, run_dir: Path, on_epoch=None) -> None:
        self.config, self.model, self.splits, self.device, self.run_dir = config, model, splits, device, run_dir
        self.on_epoch = on_epoch
        self.batch_size = config.dataset.batch_size
        self.optimizer = build_optimizer(model.parameters(), config.optim)
        batches = splits["train"].num_batches(self.batch_size, drop_last=True)
        self.scheduler = build_scheduler(self.optimizer, config.scheduler, batches)
        es = config.early_stopping
        self.stopper = EarlyStopping(es.patience, es.min_delta, es.max_triggers)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch, self.elapsed = 0, 0.0
        self.finished = False
        if (run_dir / LAST).is_file():  # _claim checked that it is this config's
            self._restore(load_checkpoint(run_dir / LAST))

    def fit(self) -> None:
        """Train until early stopping's last trigger or ``max_epochs``."""
        writer = SummaryWriter(self.run_dir / "tensorboard", purge_step=self.epoch)
        try:
            while not self.finished and self.epoch < self.config.max_epochs:
                self._epoch(writer)
        finally:
            writer.close()

    def _epoch(self, writer: SummaryWriter) -> None:
        started = time.perf_counter()
        epoch, lr = self.epoch, self.optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(
            self.model, self.splits["train"], self.optimizer,
            self.scheduler if self.stopper.triggers == 0 else None,  # the schedule ends at the first trigger
            batch_size=self.batch_size, grad_clip=self.config.optim.grad_clip, generator=self.generator,
            device=self.device, epoch=epoch, progress=self.config.progress,
        )
        validation = evaluate(self.model, self.splits["validation"], batch_size=self.batch_size, device=self.device)
        validation = validation.compute()
        decision = self.stopper.step(validation["loss_batch_mean"], epoch)
        if decision is Decision.IMPROVED:
            save_checkpoint(self.run_dir / BEST, {"model": self.model.state_dict(), "epoch": epoch, "validation": validation})
        elif decision is Decision.TRIGGER:
            self.model.load_state_dict(load_checkpoint(self.run_dir / BEST)["model"])
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.early_stopping.lr_factor
        self.finished = decision is Decision.STOP
        self.elapsed += time.perf_counter() - started
        self.epoch += 1
        log.info(
            "epoch %d: train loss %.4f | val %s | lr %.3g | %s (%d/%d) | %.1fs",
            epoch, train_loss, _summary(validation), lr, decision.value, self.stopper.triggers,
            self.stopper.max_triggers, time.perf_counter() - started,
        )
        writer.add_scalar("train/loss", train_loss, epoch)
        writer.add_scalar("train/lr", lr, epoch)
        for key in REPORTED:
            writer.add_scalar(f"val/{key}", validation[key], epoch)
        writer.flush()
        save_checkpoint(self.run_dir / LAST, self._state())
        if self.on_epoch is not None:
            self.on_epoch(epoch, validation)

    def test(self, metadata: dict, users: pd.DataFrame) -> dict:
        """Evaluate the best checkpoint on the test split; write the per-user CSV; return the results."""
        best = load_checkpoint(self.run_dir / BEST)
        self.model.load_state_dict(best["model"])
        metrics = evaluate(self.model, self.splits["test"], batch_size=self.batch_size, device=self.device)
        per_user = users.merge(metrics.per_user(), on="user_id", how="inner")  # raw ids first
        write_atomic(self.run_dir / PER_USER, lambda tmp: per_user.to_csv(tmp, index=False))
        results = {
            "dataset": self.config.dataset.name,
            "model": self.config.model.name,
            "seed": self.config.seed,
            "num_parameters": count_parameters(self.model),
            "epochs_run": self.epoch,
            "best_epoch": best["epoch"],
            "early_stopping_triggers": self.stopper.triggers,
            "wall_time_s": round(self.elapsed, 3),
            "device": str(self.device),
            "nextloc_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "test": metrics.compute(),
            "validation": best["validation"],
            "data": {k: metadata[k] for k in ("num_locations", "num_users", "splits")} | metadata.get("extra", {}),
            "config": _settings(self.config),
        }
        self._log_hparams(results)
        return results

    def _log_hparams(self, results: dict) -> None:
        """One HParams entry: the flattened config and the final validation and test metrics."""
        hparams = _flatten(asdict(self.config))
        metrics = {f"hparams/val_{k}": results["validation"][k] for k in REPORTED}
        metrics |= {f"hparams/test_{k}": results["test"][k] for k in REPORTED}
        with SummaryWriter(self.run_dir / "tensorboard") as writer:
            writer.add_hparams(hparams, metrics, run_name=".")

    def _state(self) -> dict:
        return {
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "finished": self.finished,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "rng": rng_state(self.generator),
        }

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # e.g. written by a version whose model named its parameters differently
            first = str(err).splitlines()[0]
            raise DataError(f"{self.run_dir / LAST}: does not fit this model ({first}); start a new run") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stopping"])
        restore_rng_state(state["rng"], self.generator)
        self.epoch, self.elapsed, self.finished = state["epoch"], state["elapsed"], state["finished"]
        log.info("resuming %s after epoch %d", self.run_dir, self.epoch - 1)


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; values TensorBoard cannot show become strings."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
