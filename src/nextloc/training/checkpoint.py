"""Checkpoints written atomically and loaded with ``weights_only=True``; RNG state capture."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from nextloc.errors import DataError
from nextloc.io import write_atomic


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts only) in one rename."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # through a Python file, a full disk keeps its OSError (as the error's context)
            torch.save(state, file)

    write_atomic(path, save)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except Exception as err:  # truncated or foreign files raise several types
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a training epoch draws from, as checkpoint-safe values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": generator.get_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "random": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["shuffle"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    r = state["random"]
    random.setstate((r["version"], tuple(r["internal"]), r["gauss"]))
