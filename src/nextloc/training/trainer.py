"""The trainer: fits any :class:`~nextloc.models.base.NextLocationModel` and tests its best state.

It knows nothing model-specific. A model trained by gradient steps runs
epochs with early stopping (each trigger reloads the best weights and scales
the learning rate; the last one ends training) and a checkpoint per epoch;
a count-based model is fitted once on the training split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from nextloc.config import RunConfig
from nextloc.data.batches import SplitTensors
from nextloc.errors import DataError
from nextloc.metrics import MetricAccumulator
from nextloc.models.base import NextLocationModel, count_parameters
from nextloc.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from nextloc.training.early_stopping import Decision, EarlyStopping
from nextloc.training.loop import evaluate, train_epoch
from nextloc.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

BEST, LAST = "checkpoints/best.pt", "checkpoints/last.pt"
REPORTED = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg", "f1", "loss")


class Trainer:
    """One model's training state in ``run_dir``: what a checkpoint saves and restores.

    ``splits`` maps ``train``, ``validation`` and ``test`` to
    :class:`SplitTensors`. ``on_epoch(epoch, validation_metrics)`` is called
    after every epoch (a search reports to its pruner there and may raise to
    stop the run). A trainer whose ``run_dir`` holds a ``last.pt`` continues
    from it.
    """

    def __init__(
        self,
        config: RunConfig,
        model: NextLocationModel,
        splits: dict[str, SplitTensors],
        device: torch.device,
        run_dir: Path,
        on_epoch: Callable[[int, dict], None] | None = None,
    ) -> None:
        self.config, self.model, self.splits, self.device, self.run_dir = config, model, splits, device, Path(run_dir)
        self.on_epoch = on_epoch
        self.batch_size = config.dataset.batch_size
        self.epoch, self.elapsed = 0, 0.0
        self.finished = False
        if model.fits_by_counting:
            return
        self.optimizer = build_optimizer(model.parameters(), config.optim)
        batches = splits["train"].num_batches(self.batch_size, drop_last=True)
        self.scheduler = build_scheduler(self.optimizer, config.scheduler, batches)
        es = config.early_stopping
        self.stopper = EarlyStopping(es.patience, es.min_delta, es.max_triggers)
        self.generator = torch.Generator().manual_seed(config.seed)
        if (self.run_dir / LAST).is_file():
            self._restore(load_checkpoint(self.run_dir / LAST))

    @property
    def triggers(self) -> int:
        return 0 if self.model.fits_by_counting else self.stopper.triggers

    def fit(self) -> None:
        """Train until early stopping's last trigger or ``max_epochs``; or count, for a count-based model."""
        if self.model.fits_by_counting:
            self._count()
            return
        writer = SummaryWriter(self.run_dir / "tensorboard", purge_step=self.epoch)
        try:
            while not self.finished and self.epoch < self.config.max_epochs:
                self._epoch(writer)
        finally:
            writer.close()

    def test(self) -> tuple[MetricAccumulator, dict]:
        """Evaluate the best checkpoint on the test split: its metrics and the checkpoint (epoch, validation)."""
        best = load_checkpoint(self.run_dir / BEST)
        self.model.load_state_dict(best["model"])
        metrics = evaluate(self.model, self.splits["test"], batch_size=self.batch_size, device=self.device)
        return metrics, best

    def _count(self) -> None:
        started = time.perf_counter()
        self.model.fit(self.splits["train"])  # counts on the CPU, where the split's tensors are
        self.model.to(self.device)
        validation = self._validate()
        save_checkpoint(self.run_dir / BEST, {"model": self.model.state_dict(), "epoch": None, "validation": validation})
        self.elapsed = time.perf_counter() - started
        self.finished = True
        log.info(
            "fitted by counting: %d counts | val %s | %.1fs", count_parameters(self.model), summary(validation), self.elapsed
        )

    def _validate(self) -> dict:
        return evaluate(self.model, self.splits["validation"], batch_size=self.batch_size, device=self.device).compute()

    def _epoch(self, writer: SummaryWriter) -> None:
        started = time.perf_counter()
        epoch, lr = self.epoch, self.optimizer.param_groups[0]["lr"]
        train_losses = train_epoch(
            self.model, self.splits["train"], self.optimizer,
            self.scheduler if self.stopper.triggers == 0 else None,  # the schedule ends at the first trigger
            batch_size=self.batch_size, grad_clip=self.config.optim.grad_clip, generator=self.generator,
            device=self.device, epoch=epoch, progress=self.config.progress,
        )
        validation = self._validate()
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
            epoch, train_losses["loss"], summary(validation), lr, decision.value, self.stopper.triggers,
            self.stopper.max_triggers, time.perf_counter() - started,
        )
        for name, value in train_losses.items():
            writer.add_scalar("train/loss" if name == "loss" else f"train/loss_{name}", value, epoch)
        writer.add_scalar("train/lr", lr, epoch)
        for key in REPORTED:
            writer.add_scalar(f"val/{key}", validation[key], epoch)
        writer.flush()
        save_checkpoint(self.run_dir / LAST, self._state())
        if self.on_epoch is not None:
            self.on_epoch(epoch, validation)

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


def summary(metrics: dict) -> str:
    """The reported metrics on one line (``loss`` left out when the model has none)."""
    return " ".join(f"{k}={metrics[k]:.4g}" for k in REPORTED if metrics.get(k) is not None)
