"""What every registered model may read: its history, the user and the target's day, never the target visit itself."""

import numpy as np
import pandas as pd
import pytest
import torch

from nextloc.config import DatasetConfig, SyntheticConfig
from nextloc.data.batches import SplitTensors
from nextloc.data.datasets import load_dataset
from nextloc.data.info import DataInfo
from nextloc.models import MODELS, build_model, model_config_class

SMALL = {"lstm": {"embed_dim": 8, "hidden_size": 16}}  # sizes that keep the test fast; defaults otherwise


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = DatasetConfig(processed_dir=str(tmp_path_factory.mktemp("processed")),
                           synthetic=SyntheticConfig(n_users=5, n_days=50))
    return load_dataset(config)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_feature_of_the_target_visit_changes_the_scores(data, name):
    """The target row's place, start time, weekday and duration are replaced: every score stays the same.

    Its day stays: ``diff`` (days before the target's day) is a documented input.
    """
    torch.manual_seed(0)
    model = build_model(model_config_class(name)(**SMALL.get(name, {})),
                        DataInfo.from_tables(data.num_locations, data.num_users, data.locations))
    if model.fits_by_counting:
        model.fit(SplitTensors(data.staypoints["train"], data.samples["train"], model.inputs))
    model.eval()
    # each sample's target as a row of its own, at the end: a target row is also in later samples' histories
    staypoints, samples = data.staypoints["test"], data.samples["test"].copy()
    staypoints = pd.concat([staypoints, staypoints.iloc[samples["target_index"]]], ignore_index=True)
    targets = len(data.staypoints["test"]) + np.arange(len(samples))
    samples["target_index"] = targets
    changed = staypoints.copy()
    changed.loc[targets, "location_id"] = 2 + (changed.loc[targets, "location_id"] - 1) % (data.num_locations - 2)
    changed.loc[targets, "start_min"] = (changed.loc[targets, "start_min"] + 577) % 1440
    changed.loc[targets, "weekday"] = (changed.loc[targets, "weekday"] + 3) % 7
    changed.loc[targets, "duration"] = (changed.loc[targets, "duration"] + 1000) % 2880
    index = torch.arange(len(samples))
    with torch.no_grad():
        original = model(SplitTensors(staypoints, samples, model.inputs).batch(index))
        without_target = model(SplitTensors(changed, samples, model.inputs).batch(index))
    assert not torch.equal(SplitTensors(staypoints, samples).batch(index).target,
                           SplitTensors(changed, samples).batch(index).target), "the change missed the targets"
    torch.testing.assert_close(without_target, original, rtol=0, atol=0)
