"""Model-free next-location guesses, reported beside every run as a floor to beat."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def most_frequent_of_user(train: pd.DataFrame, split: SplitTensors) -> torch.Tensor:
    """Predict each sample's user's most frequent training location."""
    counts = train.groupby(["user_id", "location_id"]).size().reset_index(name="n")
    top = counts.sort_values(["user_id", "n", "location_id"], ascending=[True, False, True]).drop_duplicates("user_id")
    table = np.ones(int(split.user.max()) + 1, dtype=np.int64)  # users unseen in train: class 1
    table[top["user_id"].to_numpy()] = top["location_id"].to_numpy()
    return torch.as_tensor(table)[split.user[split.target_index]]


def baseline_accuracy(train: pd.DataFrame, split: SplitTensors) -> dict:
    """acc@1 in percent of each baseline on ``split``."""
    target = split.location[split.target_index]
    return {
        "most_frequent_in_history_acc@1": float(100.0 * (most_frequent_in_history(split) == target).double().mean()),
        "most_frequent_of_user_acc@1": float(100.0 * (most_frequent_of_user(train, split) == target).double().mean()),
    }
