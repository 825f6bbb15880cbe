"""Train and evaluate a next-location model: ``python train.py [dataset=...] [key=value ...]``.

Hydra composes ``conf/``; :func:`nextloc.config.load_run_config` validates it
once; :func:`nextloc.training.run.run` does the rest. ``resume=<run dir>``
continues a killed run from its last completed epoch with its own config.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nextloc.config import load_run_config, register_resolvers, resumed_config
from nextloc.errors import NextlocError
from nextloc.training.run import run

log = logging.getLogger("nextloc")

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; return its best validation acc@1 so that sweepers can optimise it."""
    try:
        if cfg.resume:
            cfg = resumed_config(Path(cfg.resume), HydraConfig.get().overrides.task)
        config = load_run_config(cfg)
        results = run(config, HydraConfig.get().runtime.output_dir)
    except NextlocError as err:
        log.error("%s", err)
        if HydraConfig.get().mode.name == "MULTIRUN":
            return None  # the other jobs of the sweep go on
        sys.exit(2)
    return results["validation"]["acc@1"]


if __name__ == "__main__":
    main()
