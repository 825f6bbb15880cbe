"""Two model-free floors reported beside every run: the ``mostfreq`` model with either scope."""

from __future__ import annotations

import torch

from nextloc.data.batches import SplitTensors
from nextloc.data.info import DataInfo
from nextloc.data.store import ProcessedData
from nextloc.models.mostfreq import MostFreqModel
from nextloc.training.loop import evaluate

BATCH = 512


def baseline_accuracy(data: ProcessedData, splits: dict[str, SplitTensors]) -> dict:
    """Test acc@1 in percent of the history's and of the user's most frequent location (ties averaged)."""
    info = DataInfo(data.num_locations, data.num_users)
    result = {}
    for scope, key in (("history", "most_frequent_in_history_acc@1"), ("user", "most_frequent_of_user_acc@1")):
        model = MostFreqModel(info, scope=scope)
        model.fit(splits["train"])
        metrics = evaluate(model, splits["test"], batch_size=BATCH, device=torch.device("cpu"))
        result[key] = metrics.compute()["acc@1"]
    return result
