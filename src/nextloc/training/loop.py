"""One training epoch and one evaluation pass; nothing model-specific."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nextloc.data.batches import SplitTensors
from nextloc.data.samples import PADDING
from nextloc.errors import NextlocError
from nextloc.metrics import MetricAccumulator
from nextloc.training.optim import clear_gradients, clip_gradients


class DivergedError(NextlocError):
    """The training loss became NaN or infinite."""


def train_epoch(
    model: nn.Module,
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
) -> float:
    """Train on every full, shuffled batch once; return the mean batch loss.

    ``scheduler`` (when given) steps after every optimiser step. No metrics
    are computed on training batches. Raises :class:`DivergedError` naming the
    epoch and step when a loss is not finite.
    """
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    batches = split.batches(batch_size, shuffle=True, drop_last=True, generator=generator)
    total = split.num_batches(batch_size, drop_last=True)
    loss_sum = 0.0
    bar = tqdm(batches, total=total, desc=f"epoch {epoch}", leave=False, disable=None if progress else True)
    for step, batch in enumerate(bar):
        batch = batch.to(device)
        loss = F.cross_entropy(model(batch), batch.target, ignore_index=PADDING)
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
        loss_sum += value
        if step % 20 == 0:
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return loss_sum / max(total, 1)


@torch.inference_mode()
def evaluate(model: nn.Module, split: SplitTensors, *, batch_size: int, device: torch.device) -> MetricAccumulator:
    """Run ``model`` over a split in order (last batch kept) and collect its metrics."""
    model.eval()
    metrics = MetricAccumulator()
    for batch in split.batches(batch_size, shuffle=False, drop_last=False):
        batch = batch.to(device)
        logits = model(batch)
        loss = F.cross_entropy(logits, batch.target, ignore_index=PADDING)
        metrics.update(logits, batch.target, batch.user, loss)
    return metrics
