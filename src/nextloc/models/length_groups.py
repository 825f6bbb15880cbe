"""A batch's histories ordered by length and cut into a few groups, each padded only to its own length.

A recurrent encoder treats sequences independently, so it may run a batch
group by group: the longest histories together, the short ones together,
each group padded only to its own longest member. :class:`LengthGroups` is
that layout. It gathers a ``(B, T)`` history field into one flat run of
positions (group after group, each time-major), splits the embedded positions
back into per-group ``(steps, rows, d)`` blocks, and puts each sequence's
output at its last valid step back in batch order. Time-major is oneDNN's own
RNN layout: batch-first blocks cost a transposed copy of every input, output
and gradient in every layer call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nextloc.data.batches import Batch


@dataclass
class LengthGroups:
    """The layout of one batch; build it with :meth:`plan`.

    ``order`` holds the batch rows, longest history first; ``length`` their
    history lengths; ``sizes[g]`` and ``steps[g]`` the rows and padded steps of
    group ``g``; ``index`` the ``(row * width + step)`` positions of all
    groups, ``sum(sizes[g] * steps[g])`` of them, each group step by step;
    ``last`` each batch row's last valid step among those positions.
    """

    order: Tensor
    length: Tensor
    sizes: list[int]
    steps: list[int]
    index: Tensor
    last: Tensor

    @classmethod
    def plan(
        cls, length: Tensor, width: int, max_groups: int = 1, size_multiple: int = 1, length_multiple: int = 1
    ) -> LengthGroups:
        """Groups of a batch whose history fields are ``(len(length), width)``.

        Group sizes are multiples of ``size_multiple`` (except a last group of
        the remainder) and padded lengths multiples of ``length_multiple``.
        Both bound the number of distinct ``(rows, steps)`` shapes the encoder
        sees: oneDNN builds a kernel per shape and keeps at most 1,024, so with
        unbounded shapes it rebuilds kernels batch after batch and its cache
        grows to gigabytes. Steps past ``width`` repeat the last column; a
        unidirectional encoder never reads them into a valid step's output.
        The index arithmetic runs in NumPy: a handful of tiny arrays, for which
        each torch call would cost more than the work.
        """
        length_sorted, order = torch.sort(length, descending=True)
        sorted_np, order_np = length_sorted.cpu().numpy(), order.cpu().numpy()
        sizes, steps = length_group_sizes(sorted_np, max_groups, size_multiple, length_multiple)
        ends = np.cumsum(sizes)
        starts = ends - sizes  # first sorted row of each group
        offsets = np.cumsum([0] + [n * t for n, t in zip(sizes, steps)])  # first position of each group
        index, last = [], np.empty(len(order_np), dtype=np.int64)
        for g, (start, end, group_steps) in enumerate(zip(starts, ends, steps)):
            rows = order_np[start:end]
            step = np.minimum(np.arange(group_steps), width - 1)
            index.append((step[:, None] + rows[None, :] * width).ravel())  # (steps, rows), time-major
            last[rows] = offsets[g] + (sorted_np[start:end] - 1) * (end - start) + np.arange(end - start)
        index = np.concatenate(index)
        return cls(
            order=order,
            length=length_sorted,
            sizes=sizes,
            steps=steps,
            index=torch.from_numpy(index).to(length.device),
            last=torch.from_numpy(last).to(length.device),
        )

    @classmethod
    def whole(cls, length: Tensor, width: int) -> LengthGroups:
        """One group of all rows in batch order, padded to ``width``, in torch operations only.

        The layout :func:`torch.export` can trace (the batch size stays symbolic);
        it computes the same as :meth:`plan` with more padded steps.
        """
        rows = length.shape[0]
        batch_rows = torch.arange(rows, device=length.device)
        index = torch.arange(width, device=length.device)[:, None] + batch_rows[None, :] * width
        return cls(
            order=batch_rows, length=length, sizes=[rows], steps=[width],
            index=index.reshape(-1), last=(length - 1) * rows + batch_rows,
        )

    def gather(self, field: Tensor) -> Tensor:
        """A ``(B, width)`` history field as the flat positions of all groups: ``(N,)``."""
        return field.reshape(-1)[self.index]

    def split(self, x: Tensor) -> list[Tensor]:
        """Flat positions ``(N, d)`` as one time-major ``(steps, rows, d)`` block per group."""
        blocks = torch.split(x, [rows * steps for rows, steps in zip(self.sizes, self.steps)])
        return [block.view(steps, rows, -1) for block, rows, steps in zip(blocks, self.sizes, self.steps)]

    def last_steps(self, outputs: list[Tensor]) -> Tensor:
        """Each sequence's output at its last valid step, in batch order: ``(B, h)``.

        ``outputs`` are the groups' ``(steps, rows, h)`` results, in the layout of :meth:`split`.
        """
        flat = torch.cat([out.reshape(-1, out.shape[-1]) for out in outputs])
        return flat.index_select(0, self.last)


def by_length(length: Tensor, max_groups: int) -> list[tuple[Tensor, int]]:
    """The batch rows of each length group and the group's padded width, longest group first.

    For models whose samples do not interact (no batch statistics): running
    each group cut to its own width gives the same scores with less padding.

    Examples
    --------
    >>> [(rows.tolist(), width) for rows, width in by_length(torch.tensor([4, 30, 5, 29]), 2)]
    [([1, 3], 30), ([2, 0], 5)]
    """
    length_sorted, order = torch.sort(length, descending=True, stable=True)
    sizes, steps = length_group_sizes(length_sorted.cpu().numpy(), max_groups)
    return list(zip(order.split(sizes), steps))


def run_by_length(fn: Callable[[Batch], Tensor], batch: Batch, max_groups: int) -> Tensor:
    """``fn(batch)`` computed group by group (:func:`by_length`), its ``(B, ...)`` rows put back in batch order.

    Only for per-sample computations (nothing that mixes the rows of a batch);
    under ``torch.export`` (or with one group) the batch runs whole.
    """
    if max_groups == 1 or torch.compiler.is_compiling():
        return fn(batch)
    groups = by_length(batch.length, max_groups)
    if len(groups) == 1:
        return fn(batch)
    out = torch.cat([fn(batch.rows(rows, width)) for rows, width in groups])
    order = torch.cat([rows for rows, _ in groups])
    return out.new_empty(out.shape).index_copy_(0, order, out)


def length_group_sizes(
    sorted_length: np.ndarray, max_groups: int, size_multiple: int = 1, length_multiple: int = 1
) -> tuple[list[int], list[int]]:
    """Rows and padded steps of at most ``max_groups`` consecutive groups of descending lengths.

    A group costs ``rows * steps`` encoder steps, ``steps`` being its longest
    member's length rounded up to ``length_multiple``. Groups start only at
    multiples of ``size_multiple``, and a boundary only helps where the padded
    length changes, so a dynamic programme over those ``K`` candidate starts
    finds the cheapest split in ``max_groups`` vectorised ``(K, K)`` steps.

    Examples
    --------
    >>> length_group_sizes(np.array([90, 40, 38, 20, 19, 18, 5, 4]), 3)
    ([1, 2, 5], [90, 40, 20])
    >>> length_group_sizes(np.array([90, 40, 38, 20, 19, 18, 5, 4]), 3, size_multiple=2, length_multiple=4)
    ([2, 2, 4], [92, 40, 20])
    """
    n = len(sorted_length)
    padded = -(-np.asarray(sorted_length, dtype=np.int64) // length_multiple) * length_multiple
    start = np.arange(0, n, size_multiple)
    # a boundary where the padded length equals the previous candidate's could move there at no cost
    start = start[(start == 0) | (padded[start] != padded[np.maximum(start - size_multiple, 0)])]
    bounds = np.append(start, n)  # candidate group starts, then the end
    k = len(start)
    # cost[s, e]: one group from candidate s up to (not including) bound e
    cost = (bounds[None, :] - start[:, None]) * padded[start][:, None].astype(np.float64)
    cost[np.tril_indices(k, 0, k + 1)] = np.inf  # e must be > s
    best = np.full(k + 1, np.inf)
    best[k] = 0.0  # nothing left to cover
    choices = []
    for _ in range(min(max_groups, k)):
        total = cost + best[None, :]
        choice = total.argmin(axis=1)
        best = np.append(total[np.arange(k), choice], 0.0)
        choices.append(choice)
    sizes, steps, s = [], [], 0
    for choice in reversed(choices):  # the last level holds the first group's best end
        if s == k:
            break
        e = int(choice[s])
        sizes.append(int(bounds[e] - bounds[s]))
        steps.append(int(padded[bounds[s]]))
        s = e
    return sizes, steps
