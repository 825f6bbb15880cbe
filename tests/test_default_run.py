"""The README's promises about the default run (slow: `pytest -m slow`) and the CUDA path (`pytest -m gpu`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def train(tmp_path, *overrides):
    result = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", f"dataset.processed_dir={tmp_path / 'data'}",
         *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "test_results.json").read_text())


@pytest.mark.slow
def test_default_model_clearly_beats_the_most_frequent_guesses_and_stays_below_the_oracle(tmp_path):
    results = train(tmp_path)
    acc = results["test"]["acc@1"]
    assert acc > max(results["baselines"].values()) + 5.0
    assert acc < results["data"]["oracle_acc@1"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", ["lstm", "markov"])
def test_device_auto_trains_on_cuda(tmp_path, model):
    results = train(tmp_path, "debug=smoke", "device=auto", f"model={model}")
    assert results["device"].startswith("cuda")
