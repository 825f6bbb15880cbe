"""``scripts/model_summary.py``: the parameter breakdown of any model without training and without the data."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "model_summary.py"


@pytest.fixture
def summary(tmp_path, capsys):
    """Run the script in-process with no processed data set in reach; return (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("model_summary", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def call(*args):
        code = script.main([*args, f"dataset.processed_dir={tmp_path / 'none'}"])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def rows(text: str) -> dict[str, int]:
    """``{"module": parameters}`` from the printed table (nested names keep their indent)."""
    table = {}
    for line in text.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 2 and parts[-1].replace(",", "").isdigit():
            table[line[: len(line) - len(line.lstrip())] + parts[0]] = int(parts[-1].replace(",", ""))
    return table


def test_lstm_at_geolife_sizes_matches_the_architecture_table(summary):
    code, out, _ = summary("model=lstm", "dataset=geolife")
    assert code == 0 and "L = 1187 locations, U = 46 users" in out and "published sizes" in out
    table = rows(out)
    assert {k: table[k] for k in ("embedding", "  location", "  hour", "  quarter", "  weekday", "  duration")} == {
        "embedding": 42_176, "  location": 37_984, "  hour": 768, "  quarter": 128, "  weekday": 224, "  duration": 3_072}
    assert (table["encoder"], table["  layers.0"], table["  layers.1"], table["norm"]) == (215_040, 82_944, 132_096, 256)
    head = table["user"] + table["residual"] + table["residual_norm"] + table["classifier"]
    assert head == 225_187 and table["total"] == 482_659
    assert "fp32 size: 1.84 MiB" in out


def test_lstm_at_diy_sizes_given_on_the_command_line(summary):
    code, out, _ = summary("model=lstm", "dataset=diy", "--num-locations", "7038", "--num-users", "693")
    assert code == 0 and rows(out)["total"] == 2_847_582 and "as given" in out


def test_a_count_model_says_its_size_comes_from_the_data(summary):
    code, out, _ = summary("model=markov", "dataset=geolife")
    assert code == 0 and "fits by counting" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (("model=lstm", "dataset=synthetic"), "give --num-locations and --num-users"),
        (("model=lstm", "--num-locations", "100"), "give both --num-locations and --num-users"),
        (("model.hidden_size=-1",), "model.hidden_size=-1 must be > 0"),
    ],
)
def test_a_mistake_is_one_line_and_exit_code_2(summary, args, message):
    code, _, err = summary(*args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
