"""Model-free next-location guesses, reported beside every run as a floor to beat."""

from __future__ import annotations

import torch

from nextloc.data.batches import SplitTensors


def most_frequent_in_history(split: SplitTensors, chunk: int = 512) -> torch.Tensor:
    """Predict each sample's most frequent history location (the earliest one on ties)."""
    predictions = []
    for batch in split.batches(chunk, shuffle=False, drop_last=False):
        loc = batch.location  # (B, T), 0 = padding
        same = (loc[:, :, None] == loc[:, None, :]) & (loc[:, None, :] != 0)
        counts = same.sum(dim=2)  # (B, T): how often step t's location occurs in the history
        predictions.append(loc.gather(1, counts.argmax(dim=1, keepdim=True)).squeeze(1))
    return torch.cat(predictions)


def most_frequent_of_user(train: SplitTensors, split: SplitTensors) -> torch.Tensor:
    """Predict each sample's user's most frequent training target (the lowest id on ties).

    Counting training targets, not staypoint rows, gives the same answer for
    data sets whose tables repeat staypoints (those imported from pickles).
    """
    users = int(max(train.user.max(), split.user.max())) + 1
    classes = int(max(train.location.max(), split.location.max())) + 1
    user, location = train.user[train.target_index], train.location[train.target_index]
    counts = torch.bincount(user * classes + location, minlength=users * classes).view(users, classes)
    counts[:, 0] = -1  # padding is never a guess; users without training targets get class 1
    return counts.argmax(dim=1)[split.user[split.target_index]]


def baseline_accuracy(train: SplitTensors, split: SplitTensors) -> dict:
    """acc@1 in percent of each baseline on ``split``."""
    target = split.location[split.target_index]
    return {
        "most_frequent_in_history_acc@1": float(100.0 * (most_frequent_in_history(split) == target).double().mean()),
        "most_frequent_of_user_acc@1": float(100.0 * (most_frequent_of_user(train, split) == target).double().mean()),
    }
