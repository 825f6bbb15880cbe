"""The notebooks run top to bottom on tiny synthetic data, and are committed without outputs."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, env: dict) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def text_of(cell) -> str:
    """Everything a cell displayed as text."""
    return "\n".join(out.get("data", {}).get("text/plain", "") + out.get("text", "") for out in cell.outputs)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_data_exploration_runs_and_writes_its_figures(tmp_path):
    overrides = f"dataset.processed_dir={tmp_path / 'data'} dataset.synthetic.n_users=6 dataset.synthetic.n_days=60"
    notebook = execute("01_data_exploration.ipynb", {"NEXTLOC_OUTPUTS": str(tmp_path), "NEXTLOC_OVERRIDES": overrides})
    figures = sorted(p.name for p in (tmp_path / "01_data_exploration").glob("*.png"))
    assert figures == ["history_lengths.png", "hour_and_weekday.png", "locations.png", "visits_and_popularity.png"]
    shares = text_of(notebook.cells[6])
    assert "target in history (%)" in shares and "unseen target (%)" in shares


def test_results_runs_a_demonstration_sweep_and_writes_its_figures(tmp_path):
    notebook = execute("02_results.ipynb", {"NEXTLOC_OUTPUTS": str(tmp_path), "NEXTLOC_SWEEP": ""})
    figures = sorted(p.name for p in (tmp_path / "02_results").glob("*.png"))
    assert figures == ["accuracy_by_days_ago.png", "accuracy_per_user.png", "learning_curves.png"]
    table = text_of(notebook.cells[4])
    assert "±" in table and "lstm" in table and "markov" in table
