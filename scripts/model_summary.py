"""Print a model's parameters module by module, without training and without the data.

    python scripts/model_summary.py model=lstm dataset=geolife [--num-locations L --num-users U] [key=value ...]

The overrides are those of ``train.py``. The location and user table sizes
(padding and the unseen class included) come from ``--num-locations`` /
``--num-users``, else from the processed data set when it is present, else
from the reference's published sizes for GeoLife and DIY (docs/reference.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from nextloc.config import compose_run_config
from nextloc.data.datasets import processed_path
from nextloc.data.info import DataInfo
from nextloc.data.store import METADATA
from nextloc.errors import ConfigError, NextlocError
from nextloc.models import build_model
from nextloc.models.breakdown import format_breakdown

PUBLISHED_SIZES = {"geolife": (1187, 46), "diy": (7038, 693)}  # the reference's L and U (docs/reference.md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=lstm dataset=geolife")
    parser.add_argument("--num-locations", type=int, help="size of the location table L")
    parser.add_argument("--num-users", type=int, help="size of the user table U")
    args = parser.parse_intermixed_args(argv)  # overrides before or after the options
    try:
        config = compose_run_config(args.overrides)
        num_locations, num_users, source = table_sizes(config.dataset, args.num_locations, args.num_users)
        model = build_model(config.model, DataInfo(num_locations, num_users))
    except NextlocError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{config.model.name} on {config.dataset.name}: L = {num_locations} locations, U = {num_users} users "
          f"(padding and unseen included; {source})")
    print(format_breakdown(model))
    return 0


def table_sizes(dataset, num_locations: int | None, num_users: int | None) -> tuple[int, int, str]:
    """``(L, U, where they come from)``; see the module docstring for the order."""
    if num_locations is not None and num_users is not None:
        if num_locations < 3 or num_users < 2:
            raise ConfigError("--num-locations must be >= 3 and --num-users >= 2 (padding and unseen included)")
        return num_locations, num_users, "as given"
    if num_locations is not None or num_users is not None:
        raise ConfigError("give both --num-locations and --num-users, or neither")
    metadata = processed_path(dataset) / METADATA
    if metadata.is_file():
        sizes = json.loads(metadata.read_text())
        return sizes["num_locations"], sizes["num_users"], f"from {metadata}"
    if dataset.name in PUBLISHED_SIZES:
        return (*PUBLISHED_SIZES[dataset.name], "the reference's published sizes; the data set is not here")
    raise ConfigError(
        f"no processed data set '{dataset.name}' here to take the table sizes from; "
        "give --num-locations and --num-users"
    )


if __name__ == "__main__":
    sys.exit(main())
