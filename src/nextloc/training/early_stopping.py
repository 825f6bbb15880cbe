"""Early stopping with reload-best and learning-rate decay (docs/reference.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


class Decision(Enum):
    IMPROVED = "improved"  # new best: save it
    WAIT = "wait"
    TRIGGER = "trigger"  # reload the best model, scale the lr, keep training
    STOP = "stop"  # last trigger: training ends


@dataclass
class EarlyStopping:
    """Counts epochs without a strict improvement of the validation loss.

    A loss improves when it is lower than the best by more than
    ``min_delta``. After ``patience`` epochs without improvement it triggers
    and the counter restarts; the best loss carries over. Trigger number
    ``max_triggers`` stops training.

    Examples
    --------
    >>> stopper = EarlyStopping(patience=1, min_delta=0.0, max_triggers=2)
    >>> [stopper.step(loss, epoch).value for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.4])]
    ['improved', 'improved', 'trigger', 'stop']
    """

    patience: int
    min_delta: float
    max_triggers: int
    best_loss: float | None = None
    best_epoch: int = -1
    counter: int = 0
    triggers: int = 0

    def step(self, loss: float, epoch: int) -> Decision:
        if self.best_loss is None or loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.counter = loss, epoch, 0
            return Decision.IMPROVED
        self.counter += 1
        if self.counter < self.patience:
            return Decision.WAIT
        self.counter = 0
        self.triggers += 1
        return Decision.STOP if self.triggers >= self.max_triggers else Decision.TRIGGER

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
