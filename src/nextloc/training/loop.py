"""One training epoch and one evaluation pass; nothing model-specific."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from nextloc.data.batches import SplitTensors
from nextloc.errors import NextlocError
from nextloc.metrics import MetricAccumulator
from nextloc.models.base import NextLocationModel
from nextloc.training.optim import clear_gradients, clip_gradients


class DivergedError(NextlocError):
    """The training loss became NaN or infinite."""


def train_epoch(
    model: NextLocationModel,
    split: SplitTensors,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    batch_size: int,
    grad_clip: float,
    generator: torch.Generator,
    device: torch.device,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """Train on every full, shuffled batch once; return the mean batch loss and of each of its parts.

    The loss is the sum of the parts of ``model.losses(batch)``; the result
    maps ``loss`` (and, when there are several parts, each part's name) to
    its mean over the batches.
    ``scheduler`` (when given) steps after every optimiser step. No metrics
    are computed on training batches. Raises :class:`DivergedError` naming the
    epoch and step when a loss is not finite.
    """
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    batches = split.batches(batch_size, shuffle=True, drop_last=True, generator=generator)
    total = split.num_batches(batch_size, drop_last=True)
    sums: dict[str, float] = {}
    bar = tqdm(batches, total=total, desc=f"epoch {epoch}", leave=False, disable=None if progress else True)
    for step, batch in enumerate(bar):
        batch = batch.to(device)
        parts = model.losses(batch)
        loss = sum(parts.values())
        value = loss.item()
        if not math.isfinite(value):
            raise DivergedError(
                f"training loss is {value} at epoch {epoch}, step {step}; lower optim.lr or check the data"
            )
        clear_gradients(parameters)
        loss.backward()
        clip_gradients(parameters, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        sums["loss"] = sums.get("loss", 0.0) + value
        if len(parts) > 1:  # a single part is the loss itself: no second sync with the device
            for name, part in parts.items():
                sums[name] = sums.get(name, 0.0) + part.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return {name: total_loss / max(total, 1) for name, total_loss in sums.items()}


@torch.inference_mode()
def evaluate(
    model: NextLocationModel, split: SplitTensors, *, batch_size: int, device: torch.device
) -> MetricAccumulator:
    """Run ``model`` in eval mode over a split in order (last batch kept) and collect its metrics."""
    model.eval()
    metrics = MetricAccumulator()
    for batch in split.batches(batch_size, shuffle=False, drop_last=False):
        batch = batch.to(device)
        scores = model(batch)
        metrics.update(scores, batch.target, batch.user, model.validation_loss(scores, batch))
    return metrics
