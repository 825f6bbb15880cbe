"""Optimisers and learning-rate schedules named in ``conf/optim`` and ``conf/scheduler``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from nextloc.config import OptimConfig, SchedulerConfig


def build_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam, AdamW (decoupled weight decay) or SGD with the configured lr and weight decay.

    Adam and AdamW run fused (one kernel for all parameters instead of a loop
    over them): the same update, several times cheaper per step on the CPU.
    """
    if config.name in ("adam", "adamw"):
        adam = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
        return adam(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                    weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def clip_gradients(parameters: list[Tensor], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_``, skipping the rescale where it would multiply by exactly 1.

    ``clip_grad_norm_`` always multiplies every gradient by
    ``min(1, max_norm / (norm + 1e-6))``; where that factor is 1 the pass over
    the gradients changes nothing but costs as much as the norm itself.
    """
    norm = nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    if not norm + 1e-6 <= max_norm:  # a NaN norm rescales too (to NaN), as in clip_grad_norm_
        nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)


def clear_gradients(parameters: list[Tensor]) -> None:
    """What ``optimizer.zero_grad(set_to_none=True)`` does, without its tenfold per-call overhead."""
    for p in parameters:
        p.grad = None


def build_scheduler(optimizer, config: SchedulerConfig, batches_per_epoch: int) -> LambdaLR:
    """A per-batch schedule; the warm-ups start at factor 0, so the first update uses lr 0."""
    if config.name == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    warmup, total = config.warmup_epochs * batches_per_epoch, config.decay_epochs * batches_per_epoch
    if config.name == "warmup_cosine":
        return LambdaLR(optimizer, warmup_cosine(warmup, total, config.final_factor))
    return LambdaLR(optimizer, warmup_linear(warmup, total))


def warmup_linear(warmup_steps: int, total_steps: int):
    """Factor rising linearly 0 -> 1 over ``warmup_steps``, then falling to 0 at ``total_steps``.

    Examples
    --------
    >>> f = warmup_linear(2, 10)
    >>> [f(s) for s in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def warmup_cosine(warmup_steps: int, total_steps: int, final_factor: float = 0.0):
    """Factor rising linearly 0 -> 1 over ``warmup_steps``, then half a cosine down to ``final_factor`` at ``total_steps``.

    Examples
    --------
    >>> f = warmup_cosine(2, 10, 0.1)
    >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.55, 0.1, 0.1]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
