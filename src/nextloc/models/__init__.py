"""Model registry: a model is one module with a config dataclass and a :class:`NextLocationModel`.

To add a model, write ``models/<name>.py`` with ``<Name>Config`` (``name``
plus sizes and switches, validated in ``__post_init__``) and the model class,
whose constructor takes a :class:`~nextloc.data.info.DataInfo` and the
config's other fields as keywords; register both here and add
``conf/model/<name>.yaml``. The protocol is in :mod:`nextloc.models.base`.
"""

from __future__ import annotations

from dataclasses import asdict

from nextloc.data.info import DataInfo
from nextloc.errors import ConfigError
from nextloc.models.base import NextLocationModel, count_parameters
from nextloc.models.lstm import LSTMConfig, LSTMModel
from nextloc.models.markov import MarkovConfig, MarkovModel
from nextloc.models.mhsa import MHSAConfig, MHSAModel
from nextloc.models.mostfreq import MostFreqConfig, MostFreqModel
from nextloc.models.persistent import PersistentConfig, PersistentModel
from nextloc.models.pointer import PointerConfig, PointerModel

MODELS: dict[str, tuple[type, type[NextLocationModel]]] = {
    "lstm": (LSTMConfig, LSTMModel),
    "markov": (MarkovConfig, MarkovModel),
    "mhsa": (MHSAConfig, MHSAModel),
    "mostfreq": (MostFreqConfig, MostFreqModel),
    "persistent": (PersistentConfig, PersistentModel),
    "pointer": (PointerConfig, PointerModel),
}

__all__ = ["MODELS", "DataInfo", "NextLocationModel", "build_model", "count_parameters", "model_config_class"]


def model_config_class(name: str) -> type:
    """The config dataclass of model ``name``."""
    if name not in MODELS:
        raise ConfigError(f"model.name='{name}' is unknown; choose one of {sorted(MODELS)}")
    return MODELS[name][0]


def build_model(config, data: DataInfo) -> NextLocationModel:
    """Instantiate the model named by ``config.name`` for a data set."""
    kwargs = asdict(config)
    name = kwargs.pop("name")
    return MODELS[name][1](data, **kwargs)
