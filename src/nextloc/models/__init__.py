"""Model registry: a model is one module with a config dataclass and an ``nn.Module``.

To add a model, write ``models/<name>.py`` with ``<Name>Config`` (sizes and
switches, validated in ``__post_init__``) and the module class, whose
constructor takes ``num_locations``, ``num_users`` and the config's fields as
keywords; register both here and add ``conf/model/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict

from torch import nn

from nextloc.errors import ConfigError
from nextloc.models.lstm import LSTMConfig, LSTMModel

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "lstm": (LSTMConfig, LSTMModel),
}


def model_config_class(name: str) -> type:
    """The config dataclass of model ``name``."""
    if name not in MODELS:
        raise ConfigError(f"model.name='{name}' is unknown; choose one of {sorted(MODELS)}")
    return MODELS[name][0]


def build_model(config, num_locations: int, num_users: int) -> nn.Module:
    """Instantiate the model named by ``config.name`` for a data set's table sizes."""
    kwargs = asdict(config)
    name = kwargs.pop("name")
    return MODELS[name][1](num_locations=num_locations, num_users=num_users, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
