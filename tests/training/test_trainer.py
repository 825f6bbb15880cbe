"""The trainer's early-stopping path: schedule, reload of the best model, lr decay, the end."""

import math
from types import SimpleNamespace

import torch
from torch import nn

from nextloc.config import EarlyStoppingConfig, OptimConfig, RunConfig, SchedulerConfig
from nextloc.models.lstm import LSTMConfig
from nextloc.training import trainer as trainer_module
from nextloc.training.checkpoint import load_checkpoint

BATCHES = 10  # training batches per epoch


class ScriptedModel(nn.Linear):
    """A 2 x 2 linear layer standing in for a model trained by gradient steps."""

    fits_by_counting = False

    def __init__(self):
        super().__init__(2, 2)


class ScriptedSplit:
    """A training split of 10 batches; only its size matters to the trainer."""

    def num_batches(self, batch_size, drop_last):
        return BATCHES


def scripted_trainer(tmp_path, monkeypatch, losses):
    """A trainer whose epochs step the schedule (when given one), nudge the weights, and see ``losses``."""
    config = RunConfig(
        model=LSTMConfig(), optim=OptimConfig(lr=1e-3), scheduler=SchedulerConfig(warmup_epochs=2, decay_epochs=50),
        early_stopping=EarlyStoppingConfig(patience=1, min_delta=0.001, max_triggers=3),
    )
    model = ScriptedModel()
    lrs, scheduled = [], []

    def fake_train_epoch(model, split, optimizer, scheduler, **kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduled.append(scheduler is not None)
        for _ in range(BATCHES):
            optimizer.step()  # no gradients: only the schedule moves
            if scheduler is not None:
                scheduler.step()
        with torch.no_grad():
            model.weight.add_(1.0)  # every epoch changes the weights
        return {"loss": 0.0}

    script = iter(losses)

    def fake_evaluate(*args, **kwargs):
        loss = next(script)
        return SimpleNamespace(compute=lambda: {k: 0.0 for k in trainer_module.REPORTED} | {"loss_batch_mean": loss, "loss": loss})

    monkeypatch.setattr(trainer_module, "train_epoch", fake_train_epoch)
    monkeypatch.setattr(trainer_module, "evaluate", fake_evaluate)
    trainer = trainer_module.Trainer(config, model, {"train": ScriptedSplit(), "validation": None}, torch.device("cpu"), tmp_path)
    return trainer, lrs, scheduled


class TestTrainerEarlyStopping:
    def test_triggers_reload_the_best_model_decay_the_lr_and_the_third_ends_training(self, tmp_path, monkeypatch):
        """Losses 3, 2, 2.5, 2.6, 2.7 with patience 1: best at epoch 1, triggers after epochs 2, 3 and 4.

        Warm-up over 20 steps, decay to 0 at step 500: epoch e starts at lr 1e-3 * factor(10 e).
        The schedule stops at the first trigger (after epoch 2, lr then (500-30)/480 * 1e-3),
        and each trigger multiplies the current lr by 0.1.
        """
        trainer, lrs, scheduled = scripted_trainer(tmp_path, monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 9.9])
        trainer.fit()
        at_trigger = 1e-3 * (500 - 30) / 480
        expected = [0.0, 1e-3 * 0.5, 1e-3, at_trigger * 0.1, at_trigger * 0.01]
        assert len(lrs) == 5 and trainer.finished and trainer.stopper.triggers == 3
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(lrs, expected)), lrs
        assert scheduled == [True, True, True, False, False]
        best = load_checkpoint(tmp_path / trainer_module.BEST)
        assert best["epoch"] == 1
        # triggers 1 and 2 reloaded the best weights, the stop did not: best + the last epoch's nudge
        # (without the reloads they would be best + 3)
        assert torch.equal(trainer.model.weight, best["model"]["weight"] + 1.0)

    def test_a_resumed_trainer_continues_with_the_saved_state(self, tmp_path, monkeypatch):
        """State saved after the first trigger: a new trainer on the same directory picks up lr and counters."""
        trainer, _, _ = scripted_trainer(tmp_path, monkeypatch, [3.0, 2.0, 2.5])
        for _ in range(3):
            trainer._epoch(SimpleNamespace(add_scalar=lambda *a: None, flush=lambda: None))
        resumed, lrs, scheduled = scripted_trainer(tmp_path, monkeypatch, [2.6, 2.7])
        assert (resumed.epoch, resumed.stopper.triggers) == (3, 1)
        assert resumed.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]
        assert torch.equal(resumed.model.weight, trainer.model.weight)
        resumed.fit()
        assert scheduled == [False, False] and resumed.finished
