"""A trained model as a ``torch.export`` program: scores from plain tensors, without nextloc.

The program takes ``location``, ``length`` and ``user`` and then the model's
per-step inputs (``TrainedRun.model.inputs``, e.g. ``time_slot``, ``weekday``,
``duration``), each ``(B, T)`` int64 with ``T`` the fixed history length given at
export (left-aligned, padded with 0) and ``length``/``user`` ``(B,)``; the
batch size ``B`` is free. It returns the ``(B, L)`` scores. The input names,
``T`` and the location and user tables' sizes are stored in the file as
``nextloc.json`` (``torch.export.load(path, extra_files={"nextloc.json": ""})``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nextloc.data.batches import Batch
from nextloc.errors import ConfigError
from nextloc.io import write_atomic

if TYPE_CHECKING:
    from nextloc.trained import TrainedRun

META = "nextloc.json"
EXAMPLE_BATCH = 2  # export specialises a dimension whose example size is 0 or 1


class PlainInputs(nn.Module):
    """``model`` with tensors for arguments instead of a :class:`Batch`."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, location: Tensor, length: Tensor, user: Tensor, *features: Tensor) -> Tensor:
        batch = Batch(location, length, user, torch.zeros_like(user), dict(zip(self.inputs, features)))
        return self.model(batch)


def input_names(run: TrainedRun) -> list[str]:
    return ["location", "length", "user", *run.model.inputs]


def example_inputs(run: TrainedRun, max_length: int, batch_size: int = EXAMPLE_BATCH) -> tuple[Tensor, ...]:
    """Valid inputs of the exported program: every history ``max_length`` steps long."""
    generator = torch.Generator().manual_seed(0)
    num_locations, num_users = run.data["num_locations"], run.data["num_users"]
    shape = (batch_size, max_length)
    location = torch.randint(2, max(num_locations, 3), shape, generator=generator)
    length = torch.full((batch_size,), max_length)
    user = torch.randint(1, max(num_users, 2), (batch_size,), generator=generator)
    limits = {"time_slot": 96, "weekday": 7, "duration": 96, "diff": 8}
    features = [torch.randint(0, limits.get(name, 1), shape, generator=generator) for name in run.model.inputs]
    return (location, length, user, *features)


def export_run(run: TrainedRun, path: str | Path, max_length: int) -> Path:
    """Write ``run``'s model as a ``.pt2`` program for histories of up to ``max_length`` steps."""
    if max_length < 1:
        raise ConfigError(f"--max-length={max_length}: give the longest history the program takes, at least 1")
    if run.model.fits_by_counting:
        raise ConfigError(f"model '{run.config.model.name}' fits by counting; only gradient-trained models are exported")
    module = PlainInputs(run.model, tuple(run.model.inputs)).eval()
    example = example_inputs(run, max_length)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # nn.LSTM re-assigns its flat weight list while traced; harmless here
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        free = {0: batch}  # dynamic batch size; the trailing *features arrive as one tuple
        shapes = (free, free, free, tuple(free for _ in example[3:]))
        program = torch.export.export(module, example, dynamic_shapes=shapes)
    meta = {"inputs": input_names(run), "max_length": max_length, "num_locations": run.data["num_locations"],
            "num_users": run.data["num_users"], "model": run.config.model.name, "data": run.data.get("name")}
    path = Path(path)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # a file object: torch wants a path ending in .pt2, and tmp does not
            torch.export.save(program, file, extra_files={META: json.dumps(meta)})

    write_atomic(path, save)
    return path
