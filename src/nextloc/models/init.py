"""Parameter initialisations selectable by ``model.init``."""

from __future__ import annotations

from torch import nn

INITS = ("reference", "xavier", "pytorch")


def initialise(model: nn.Module, init: str) -> None:
    """Apply the named initialisation in place; ``pytorch`` keeps the layers' defaults."""
    if init == "reference":
        reference_init(model)
    elif init == "xavier":  # the mhsa reference: matrices only; biases and norms keep PyTorch's defaults
        for param in model.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param.data)
    elif init != "pytorch":
        raise ValueError(f"init={init!r} is unknown; choose one of {INITS}")


def reference_init(model: nn.Module) -> None:
    """The reference implementation's initialisation, needed to reproduce its curves.

    Xavier-uniform for every 2-D parameter (embeddings included), orthogonal
    LSTM ``weight_hh``; every parameter named ``*bias*`` is zeroed and its slice
    ``[n//4 : n//2]`` set to 1. That slice is the LSTM's forget gate, but the
    reference applies the rule to every bias (output layer and norms too), and
    so does this function.
    """
    for name, param in model.named_parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param.data)
        if "weight_hh" in name:
            nn.init.orthogonal_(param.data)
        if "bias" in name:
            n = param.shape[0]
            param.data.zero_()
            param.data[n // 4 : n // 2] = 1.0
