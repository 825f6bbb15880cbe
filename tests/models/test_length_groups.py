from itertools import combinations

import numpy as np
import pytest
import torch

from nextloc.models.length_groups import LengthGroups, length_group_sizes


def brute_force_cost(sorted_length, max_groups, size_multiple, length_multiple):
    """The cheapest split by trying every set of boundaries at multiples of ``size_multiple``."""
    n = len(sorted_length)
    padded = -(-sorted_length // length_multiple) * length_multiple
    candidates = list(range(size_multiple, n, size_multiple))
    best = np.inf
    for k in range(max_groups):
        for cuts in combinations(candidates, k):
            bounds = [0, *cuts, n]
            best = min(best, sum((e - s) * padded[s] for s, e in zip(bounds[:-1], bounds[1:])))
    return best


class TestLengthGroupSizes:
    @pytest.mark.parametrize("seed", range(40))
    def test_finds_the_cheapest_split_allowed(self, seed):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 13))
        sorted_length = np.sort(rng.integers(1, 30, n))[::-1]
        max_groups, size_multiple, length_multiple = (int(v) for v in rng.integers(1, 5, 3))
        sizes, steps = length_group_sizes(sorted_length, max_groups, size_multiple, length_multiple)
        starts = np.cumsum([0, *sizes[:-1]])
        assert sum(sizes) == n and 1 <= len(sizes) <= max_groups
        assert all(size % size_multiple == 0 for size in sizes[:-1])
        assert all(step % length_multiple == 0 and step >= sorted_length[s] for s, step in zip(starts, steps))
        cost = sum(size * step for size, step in zip(sizes, steps))
        assert cost == brute_force_cost(sorted_length, max_groups, size_multiple, length_multiple)

    def test_multiples_bound_the_shapes(self):
        """Over many random batches of 32, group sizes and lengths stay on their grids."""
        rng = np.random.default_rng(0)
        shapes = set()
        for _ in range(300):
            sorted_length = np.sort(np.clip(rng.lognormal(2.7, 0.6, 32).astype(int), 1, 90))[::-1]
            shapes.update(zip(*length_group_sizes(sorted_length, 4, 4, 8)))
        assert all(rows % 4 == 0 and steps % 8 == 0 for rows, steps in shapes)
        assert len(shapes) <= 8 * 12  # 8 row counts x 12 lengths up to 96


class TestLengthGroups:
    def field(self, length, width):
        """A (B, width) field whose value encodes (row, step)."""
        return torch.arange(len(length))[:, None] * 1000 + torch.arange(width)[None, :]

    def test_gather_and_split_give_each_group_its_rows_and_steps(self):
        length = torch.tensor([3, 9, 1, 7, 4, 2])
        groups = LengthGroups.plan(length, width=9, max_groups=3, size_multiple=2, length_multiple=4)
        assert groups.order.tolist() == [1, 3, 4, 0, 5, 2]
        blocks = groups.split(groups.gather(self.field(length, 9)).float()[:, None])
        assert [tuple(b.shape) for b in blocks] == [(s, r, 1) for r, s in zip(groups.sizes, groups.steps)]  # time-major
        rows = groups.order.split(groups.sizes)
        for block, group_rows, steps in zip(blocks, rows, groups.steps):
            step = torch.arange(steps).clamp(max=8)  # steps past the width repeat the last column
            expected = step[:, None] + group_rows[None, :] * 1000
            assert torch.equal(block[..., 0], expected.float())

    def test_last_steps_are_in_batch_order(self):
        length = torch.tensor([3, 9, 1, 7, 4, 2, 5])
        groups = LengthGroups.plan(length, width=9, max_groups=3, size_multiple=2, length_multiple=4)
        blocks = groups.split(groups.gather(self.field(length, 9)).float()[:, None])
        last = groups.last_steps(blocks)[:, 0]
        assert torch.equal(last, (torch.arange(7) * 1000 + length - 1).float())

    def test_one_group_is_the_padded_batch(self):
        length = torch.tensor([2, 5, 3])
        groups = LengthGroups.plan(length, width=5)
        assert groups.sizes == [3] and groups.steps == [5]
        (block,) = groups.split(groups.gather(self.field(length, 5))[:, None])
        assert torch.equal(block[..., 0], self.field(length, 5)[groups.order].T)
