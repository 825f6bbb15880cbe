"""What a data set tells a model at construction: table sizes and per-location attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from nextloc.data.samples import UNSEEN

LOCATION_COLUMNS = ("location_id", "raw_location_id", "latitude", "longitude", "n_staypoints", "n_users")


@dataclass
class DataInfo:
    """Table sizes, and per-location attribute columns when the data set has them.

    ``location_attributes[name]`` holds one integer code per location id
    (``(L,)``; 0 for padding, for "not seen in training" and for locations
    without the attribute). Attributes are the integer columns of the location
    table beyond :data:`LOCATION_COLUMNS` (a category, a grid cell, ...).
    """

    num_locations: int
    num_users: int
    location_attributes: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, num_locations: int, num_users: int, locations: pd.DataFrame | None) -> DataInfo:
        """Sizes from the metadata, attributes from the location table (``None``: the data set has none)."""
        attributes = {}
        if locations is not None:
            known = locations[locations["location_id"] > UNSEEN]
            ids = torch.as_tensor(known["location_id"].to_numpy(), dtype=torch.long)
            for name in locations.columns:
                if name in LOCATION_COLUMNS or not pd.api.types.is_integer_dtype(locations[name]):
                    continue
                codes = torch.zeros(num_locations, dtype=torch.long)
                codes[ids] = torch.as_tensor(known[name].to_numpy(), dtype=torch.long)
                attributes[name] = codes
        return cls(num_locations, num_users, attributes)
