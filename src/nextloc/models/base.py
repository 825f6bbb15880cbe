"""What every model is: the small protocol between a model and the trainer.

A model receives at construction what the data set provides
(:class:`~nextloc.data.info.DataInfo`)
plus its config's fields, and then

- ``forward(batch) -> (B, L)`` scores every class (higher = more likely; ties
  are allowed, the metrics handle them); ranking, metrics and prediction use it;
- ``losses(batch) -> {name: scalar}`` gives its training objective as named
  parts: the trainer minimises their sum and logs each part;
- ``validation_loss(scores, batch)`` is the loss early stopping watches
  (``None`` for models without one);
- ``probabilities(scores)`` turns scores into the probabilities a prediction
  reports (softmax by default; ``None`` for a mere ranking);
- user 0 in a batch is a user the model has not seen (prediction only): each
  model documents what it does then;
- count-based models set ``fits_by_counting = True`` and implement
  ``fit(train)`` instead: no optimiser, no epochs.

``inputs`` names the per-step features a model reads besides ``location``
(see :data:`nextloc.data.batches.STEP_FEATURES`), so batches carry only those;
``diff`` in particular is computed only for models that ask for it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nextloc.data.batches import Batch, SplitTensors
from nextloc.data.samples import PADDING


class NextLocationModel(nn.Module):
    """Base class of every model; the defaults are those of a softmax classifier over locations."""

    inputs: tuple[str, ...] = ()
    fits_by_counting: bool = False

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """The training objective's parts for one batch (summed for the gradient)."""
        return {"cross_entropy": F.cross_entropy(self(batch), batch.target, ignore_index=PADDING)}

    def validation_loss(self, scores: Tensor, batch: Batch) -> Tensor | None:
        """The loss of ``scores`` (this model's output for ``batch``) that early stopping watches."""
        return F.cross_entropy(scores, batch.target, ignore_index=PADDING)

    def probabilities(self, scores: Tensor) -> Tensor | None:
        """Class probabilities from ``forward``'s scores, for predictions; ``None`` when scores are only a ranking."""
        return scores.softmax(-1)

    def fit(self, train: SplitTensors) -> None:
        """Fit by counting on the training split (count-based models only)."""
        raise NotImplementedError(f"{type(self).__name__} trains by gradient steps, not by counting")


class CountModel(NextLocationModel):
    """A model whose whole state is counts taken from the training split, kept as buffers.

    It has no loss; its size (``num_parameters`` in the results) is the number
    of counts it stores. User 0 (not seen in training) has no counts of its
    own: a user-scoped count model falls back to its other counts, or ties.
    """

    fits_by_counting = True

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} fits by counting; it has no training loss")

    def validation_loss(self, scores: Tensor, batch: Batch) -> None:
        return None

    def probabilities(self, scores: Tensor) -> None:
        return None  # counts and fallbacks rank the classes; they are not a distribution

    def num_counts(self) -> int:
        """How many counts the model stores (buffers named ``counts``; their keys are not counted)."""
        return sum(b.numel() for name, b in self.named_buffers() if name.rsplit(".", 1)[-1] == "counts")


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, or for a count-based model the number of counts it stores."""
    if isinstance(model, CountModel):
        return model.num_counts()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

