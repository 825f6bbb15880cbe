"""A model's parameters, module by module: the table ``scripts/model_summary.py`` prints."""

from __future__ import annotations

import pandas as pd
from torch import nn

from nextloc.models.base import CountModel


def parameter_breakdown(model: nn.Module) -> pd.DataFrame:
    """One row per top-level module with parameters (``depth`` 0) and per module below it that holds some (``depth`` 1).

    Columns ``module`` (dotted name below its top-level module), ``type``,
    ``depth`` and ``parameters``; the depth-0 rows add up to the total.
    """
    rows = []
    for name, child in model.named_children():
        total = sum(p.numel() for p in child.parameters())
        if not total:
            continue  # dropout, activations
        rows.append((name, type(child).__name__, 0, total))
        owners = [(n, m) for n, m in child.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
        if len(owners) > 1 or (owners and sum(p.numel() for p in owners[0][1].parameters()) != total):
            rows += [(n, type(m).__name__, 1, sum(p.numel() for p in m.parameters(recurse=False))) for n, m in owners]
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        rows.append(("(own)", type(model).__name__, 0, own))
    return pd.DataFrame(rows, columns=["module", "type", "depth", "parameters"])


def format_breakdown(model: nn.Module) -> str:
    """The breakdown as text, with the total and the size of the parameters and buffers in fp32."""
    table = parameter_breakdown(model)
    total = int(table.loc[table["depth"] == 0, "parameters"].sum())
    lines = [f"{'module':<28} {'type':<18} {'parameters':>12}"]
    for row in table.itertuples(index=False):
        name = "  " * row.depth + row.module
        lines.append(f"{name:<28} {row.type:<18} {row.parameters:>12,}")
    lines.append(f"{'total':<28} {'':<18} {total:>12,}")
    buffers = sum(b.numel() for b in model.buffers())
    size = (total + buffers) * 4 / 2**20
    lines.append(f"fp32 size: {size:.2f} MiB ({total:,} parameters + {buffers:,} buffer values)")
    if isinstance(model, CountModel):
        lines.append("fits by counting: its counts are taken from the training split, so their number "
                     "(num_parameters in test_results.json) depends on the data")
    return "\n".join(lines)
