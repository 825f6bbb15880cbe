import pytest
import torch

from nextloc.errors import ConfigError
from nextloc.training.run import flatten_config, resolve_device


class TestResolveDevice:
    def test_auto_picks_cuda_only_when_present(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert resolve_device("auto") == torch.device("cpu")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device("auto") == torch.device("cuda")

    def test_cuda_without_a_device_is_a_config_error(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ConfigError, match="device=cuda"):
            resolve_device("cuda")


class TestFlatten:
    def test_nested_keys_are_dotted_and_lists_become_strings(self):
        """TensorBoard's HParams accept only scalars and strings."""
        assert flatten_config({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 1, "resume": None}) == {
            "optim.lr": 0.1, "optim.betas": "[0.9, 0.99]", "seed": 1, "resume": "None",
        }
