import math

import pytest
import torch

from nextloc.config import OptimConfig, SchedulerConfig
from nextloc.training.optim import (
    build_optimizer,
    build_scheduler,
    clear_gradients,
    clip_gradients,
    warmup_cosine,
    warmup_linear,
)


def adam(lr=1e-3):
    """One parameter with a gradient of ones, and Adam over it."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    return p, torch.optim.Adam([p], lr=lr)


def lr_after(scheduler, optimizer, steps):
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


class TestWarmupLinear:
    def test_factor_rises_from_zero_then_falls_to_zero(self):
        """Warm-up 4, total 20: 0 at step 0, 1/4 at 1, 1 at 4, 1/2 at 12, 0 at 20."""
        f = warmup_linear(4, 20)
        assert [f(s) for s in (0, 1, 4, 12, 20)] == pytest.approx([0.0, 0.25, 1.0, 0.5, 0.0])

    def test_factor_stays_zero_after_the_decay_ends(self):
        f = warmup_linear(4, 20)
        assert [f(s) for s in (21, 100)] == [0.0, 0.0]

    def test_no_warm_up_starts_at_full_rate(self):
        """Warm-up 0, total 10: factor 1 at step 0, 0.5 at step 5."""
        f = warmup_linear(0, 10)
        assert (f(0), f(5)) == pytest.approx((1.0, 0.5))


class TestWarmupCosine:
    def test_factor_rises_from_zero_then_follows_half_a_cosine_to_the_floor(self):
        """Warm-up 4, total 20, floor 0.1: 0, 1/4, 1 at step 4, midway (step 12) 0.55, 0.1 at 20 and after."""
        f = warmup_cosine(4, 20, 0.1)
        assert [f(s) for s in (0, 1, 4, 8, 12, 20, 30)] == pytest.approx(
            [0.0, 0.25, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 0.55, 0.1, 0.1])

    def test_the_pointer_recipe_peaks_after_five_epochs_and_ends_at_its_floor(self):
        _, optimizer = adam(lr=6.5e-4)
        config = SchedulerConfig(name="warmup_cosine", warmup_epochs=5, decay_epochs=50, final_factor=1e-6 / 6.5e-4)
        scheduler = build_scheduler(optimizer, config, batches_per_epoch=3)
        assert lr_after(scheduler, optimizer, 15) == pytest.approx(6.5e-4)
        assert lr_after(scheduler, optimizer, 135) == pytest.approx(1e-6)


class TestBuildScheduler:
    def test_first_update_uses_lr_zero(self):
        p, optimizer = adam()
        scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=2, decay_epochs=50), batches_per_epoch=5)
        assert optimizer.param_groups[0]["lr"] == 0.0
        optimizer.step()
        assert torch.equal(p.detach(), torch.ones(3))
        scheduler.step()
        optimizer.step()
        assert (p.detach() < 1).all()

    def test_lr_reaches_the_base_lr_after_the_warm_up_epochs(self):
        """Warm-up 2 epochs of 5 batches: after 10 steps, lr = 1e-3."""
        _, optimizer = adam()
        scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=2, decay_epochs=50), batches_per_epoch=5)
        assert lr_after(scheduler, optimizer, 5) == pytest.approx(5e-4)
        assert lr_after(scheduler, optimizer, 5) == pytest.approx(1e-3)

    def test_lr_at_the_start_of_epoch_8_is_8_75e_4(self):
        """docs/reference.md: warm-up 2, decay to 0 at epoch 50: 1e-3 * (50 - 8) / (50 - 2) = 8.75e-4;
        two early-stopping scalings by 0.1 then give 8.75e-5 and 8.75e-6."""
        _, optimizer = adam()
        scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=2, decay_epochs=50), batches_per_epoch=7)
        assert lr_after(scheduler, optimizer, 8 * 7) == pytest.approx(8.75e-4)
        for expected in (8.75e-5, 8.75e-6):
            for group in optimizer.param_groups:  # what training does on a trigger
                group["lr"] *= 0.1
            assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)

    def test_lr_is_zero_at_the_decay_end(self):
        _, optimizer = adam()
        scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=2, decay_epochs=50), batches_per_epoch=3)
        assert lr_after(scheduler, optimizer, 50 * 3) == 0.0

    def test_constant_schedule_keeps_the_base_lr(self):
        _, optimizer = adam(lr=2e-3)
        scheduler = build_scheduler(optimizer, SchedulerConfig(name="constant"), batches_per_epoch=5)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
        assert lr_after(scheduler, optimizer, 12) == pytest.approx(2e-3)


class TestBuildOptimizer:
    def test_adam_takes_lr_betas_and_weight_decay_from_the_config(self):
        config = OptimConfig(name="adam", lr=2e-3, betas=[0.8, 0.99], weight_decay=1e-4)
        optimizer = build_optimizer([torch.nn.Parameter(torch.ones(2))], config)
        group = optimizer.param_groups[0]
        assert type(optimizer) is torch.optim.Adam
        assert (group["lr"], group["betas"], group["weight_decay"]) == (2e-3, (0.8, 0.99), 1e-4)

    def test_default_config_is_the_reference_adam(self):
        """docs/reference.md: Adam, lr 1e-3, betas (0.9, 0.999), weight decay 1e-6."""
        group = build_optimizer([torch.nn.Parameter(torch.ones(2))], OptimConfig()).param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-6)

    def test_adamw_decouples_weight_decay_and_takes_eps(self):
        """AdamW with lr 0.1 and decay 0.5 shrinks a weight with a zero gradient by lr * decay; Adam would not."""
        config = OptimConfig(name="adamw", lr=0.1, betas=[0.9, 0.98], eps=1e-9, weight_decay=0.5)
        p = torch.nn.Parameter(torch.ones(2))
        optimizer = build_optimizer([p], config)
        assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["eps"] == 1e-9
        p.grad = torch.zeros(2)
        optimizer.step()
        torch.testing.assert_close(p.detach(), torch.full((2,), 1 - 0.1 * 0.5))

    def test_sgd_takes_lr_momentum_and_weight_decay_from_the_config(self):
        config = OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-5)
        optimizer = build_optimizer([torch.nn.Parameter(torch.ones(2))], config)
        group = optimizer.param_groups[0]
        assert type(optimizer) is torch.optim.SGD
        assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 1e-5)


def parameters_with_gradients(scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((5, 3), (7,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale
    return params


class TestGradients:
    @pytest.mark.parametrize("scale", [1e-3, 0.15, 0.3, 10.0, float("nan")])
    def test_clipping_gives_clip_grad_norm_bit_for_bit(self, scale):
        """Total norms 0.005, 0.79, 1.57, 52 and NaN against max_norm 1."""
        expected, params = parameters_with_gradients(scale), parameters_with_gradients(scale)
        torch.nn.utils.clip_grad_norm_(expected, 1.0)
        clip_gradients(params, 1.0)
        for p, q in zip(params, expected):
            torch.testing.assert_close(p.grad, q.grad, atol=0, rtol=0, equal_nan=True)

    def test_clipping_at_exactly_the_threshold_matches_too(self):
        """At norm == max_norm, clip_grad_norm_ still scales by max_norm / (norm + 1e-6) < 1."""
        params = parameters_with_gradients(1.0)
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        expected = parameters_with_gradients(1.0)
        torch.nn.utils.clip_grad_norm_(expected, norm)
        clip_gradients(params, norm)
        assert not torch.equal(params[0].grad, parameters_with_gradients(1.0)[0].grad)  # it did rescale
        for p, q in zip(params, expected):
            assert torch.equal(p.grad, q.grad)

    def test_clearing_sets_every_gradient_to_none(self):
        params = parameters_with_gradients(1.0)
        clear_gradients(params)
        assert all(p.grad is None for p in params)
