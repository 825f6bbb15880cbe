"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors run fastest, and most reproducibly, on one thread."""
    torch.set_num_threads(1)
