"""The run configuration: a dataclass schema, and the one place a Hydra config becomes plain values.

Everything below ``train.py`` receives these dataclasses, never a DictConfig.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nextloc.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    """Resolvers that ``conf/config.yaml`` uses for the run directory of ``resume=``."""
    OmegaConf.register_new_resolver("nextloc_run_dir", lambda resume, default: resume or default, replace=True)


def _positive(section: str, obj: Any, *keys: str) -> None:
    """Raise naming ``section.key=value`` for the first key that is not a finite number > 0."""
    prefix = f"{section}." if section else ""
    for key in keys:
        value = getattr(obj, key)
        if not value > 0:  # NaN too
            raise ConfigError(f"{prefix}{key}={value} must be > 0")
        if not math.isfinite(value):
            raise ConfigError(f"{prefix}{key}={value} must be finite")


@dataclass
class PreprocessConfig:
    """Raw GPS -> staypoints -> locations -> samples (docs/reference.md); defaults are GeoLife's.

    Distances in metres, times in minutes. The synthetic data set uses only
    the sample parameters at the end.
    """

    raw_dir: str = "data/raw/geolife/Data"
    timezone: str | None = None  # None: the raw clock (GeoLife: GMT); e.g. Asia/Shanghai
    dist_threshold: float = 200.0  # staypoints: sliding window radius
    time_threshold: float = 30.0  # ... and least stay
    gap_threshold: float = 1440.0  # ... and largest gap between fixes inside a stay
    include_last: bool = True
    activity_time_threshold: float = 25.0  # activity staypoints last longer than this
    min_tracked_days: int = 50  # users need a longer tracked span
    coverage_window_weeks: int = 10  # sliding window of the coverage filter
    min_coverage: float | None = None  # DIY: every window's tracked share above this
    mean_coverage: float | None = None  # DIY: mean window share above this
    eps: float = 20.0  # DBSCAN radius of locations over the whole data set
    num_samples: int = 2  # DBSCAN min samples
    merge_gap: float = 1.0  # merge consecutive staypoints at one location up to this gap
    n_jobs: int = 0  # worker processes for the per-user steps; 0 = all cores
    previous_day: int = 7
    train_fraction: float = 0.6
    validation_fraction: float = 0.8
    min_history: int = 3

    def __post_init__(self) -> None:
        _positive(
            "dataset.preprocess", self, "dist_threshold", "time_threshold", "gap_threshold", "eps",
            "num_samples", "coverage_window_weeks", "min_history",
        )
        for key in ("activity_time_threshold", "min_tracked_days", "merge_gap", "n_jobs", "previous_day"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"dataset.preprocess.{key}={getattr(self, key)} must be >= 0")
        for key in ("min_coverage", "mean_coverage"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"dataset.preprocess.{key}={value} not in [0, 1]")
        if not 0.0 < self.train_fraction < self.validation_fraction < 1.0:
            raise ConfigError(
                f"dataset.preprocess.train_fraction={self.train_fraction} and validation_fraction="
                f"{self.validation_fraction} need 0 < train < validation < 1; try 0.6 and 0.8"
            )
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    f"dataset.preprocess.timezone='{self.timezone}' is not a time zone; use an IANA name "
                    "such as Asia/Shanghai, or null for the raw clock"
                ) from None

    def sample_parameters(self) -> dict:
        """The keyword arguments of :func:`nextloc.data.samples.generate_samples`."""
        keys = ("previous_day", "train_fraction", "validation_fraction", "min_history")
        return {key: getattr(self, key) for key in keys}


@dataclass
class SyntheticConfig:
    """Parameters of the built-in synthetic mobility data set."""

    n_users: int = 30
    n_days: int = 90
    seed: int = 0
    tracked_day_share: float = 0.85
    explore_prob: float = 0.02

    def __post_init__(self) -> None:
        _positive("dataset.synthetic", self, "n_users", "n_days")
        for key in ("tracked_day_share", "explore_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"dataset.synthetic.{key}={getattr(self, key)} not in [0, 1]")


@dataclass
class CheckinConfig:
    """The columns of a check-in CSV (source=checkins): one row per visit to a named place, no GPS track.

    ``time`` holds ISO 8601 text (read in ``preprocess.timezone`` when it has
    no offset) or, with ``time_unit`` ``s``/``ms``, seconds/milliseconds since
    1970 UTC. Optional columns: ``latitude``/``longitude`` (a place's centroid
    and its grid cells, one attribute per size in ``grid_cells``, metres) and
    ``category`` (a place attribute).
    """

    user: str = "user_id"
    place: str = "place_id"
    time: str = "time"
    time_unit: str | None = None  # None: ISO 8601 text; s or ms: since 1970 UTC
    latitude: str | None = None
    longitude: str | None = None
    category: str | None = None
    grid_cells: list[float] = field(default_factory=list)  # cell sizes in metres, e.g. [500, 2000]

    def __post_init__(self) -> None:
        if self.time_unit not in (None, "s", "ms"):
            raise ConfigError(f"dataset.checkins.time_unit='{self.time_unit}' is unknown; use null (ISO 8601), s or ms")
        if (self.latitude is None) != (self.longitude is None):
            raise ConfigError("dataset.checkins.latitude and longitude name both columns or neither")
        if self.grid_cells and self.latitude is None:
            raise ConfigError("dataset.checkins.grid_cells needs the latitude and longitude columns")
        if not all(size > 0 and math.isfinite(size) for size in self.grid_cells):
            raise ConfigError(f"dataset.checkins.grid_cells={list(self.grid_cells)}: sizes in metres, each > 0")


SOURCES = ("synthetic", "geolife", "diy", "checkins", "reference_pickle")  # the reader that makes a processed data set


@dataclass
class DatasetConfig:
    name: str = "synthetic"
    source: str | None = None  # one of SOURCES; None: "synthetic" with a synthetic section, else the name
    processed_dir: str = "data/processed/synthetic"
    batch_size: int = 32
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    synthetic: SyntheticConfig | None = None  # source=synthetic only; None there means the defaults
    checkins: CheckinConfig | None = None  # source=checkins only: the CSV's column names

    def __post_init__(self) -> None:
        if self.reader not in SOURCES:
            raise ConfigError(
                f"dataset.source='{self.reader}' is unknown; set dataset.source to one of {list(SOURCES)}"
            )
        if self.reader != "synthetic" and self.synthetic is not None:
            raise ConfigError(
                f"dataset.synthetic is set but dataset.source={self.reader}: it belongs to source=synthetic "
                "(a preset such as debug=smoke sets it; use that with dataset=synthetic)"
            )
        if (self.checkins is not None) != (self.reader == "checkins"):
            raise ConfigError(
                "dataset.checkins (the check-in CSV's columns) belongs to dataset.source=checkins, and that source "
                f"needs it; source is {self.reader}"
            )
        if self.batch_size < 2:  # the model's BatchNorm needs two samples per training batch
            raise ConfigError(f"dataset.batch_size={self.batch_size} must be >= 2")

    @property
    def reader(self) -> str:
        """The source, inferred for data set configs that predate the key: synthetic, else the name."""
        return self.source or ("synthetic" if self.synthetic is not None else self.name)

    def synthetic_settings(self) -> SyntheticConfig:
        """The synthetic generator's parameters (source=synthetic)."""
        return self.synthetic or SyntheticConfig()


OPTIMIZERS = ("adam", "adamw", "sgd")  # adamw: decoupled weight decay
SCHEDULES = ("constant", "warmup_linear", "warmup_cosine")


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = 1e-8  # adam, adamw
    momentum: float = 0.0  # sgd
    weight_decay: float = 1e-6
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name='{self.name}' is unknown; choose one of {list(OPTIMIZERS)}")
        _positive("optim", self, "lr", "grad_clip", "eps")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)} must be two numbers in [0, 1); try [0.9, 0.999]")
        if not (self.weight_decay >= 0 and self.momentum >= 0):
            raise ConfigError(f"optim.weight_decay={self.weight_decay} and optim.momentum={self.momentum} must be >= 0")


@dataclass
class SchedulerConfig:
    name: str = "warmup_linear"
    warmup_epochs: int = 2  # linear warm-up from 0 ...
    decay_epochs: int = 50  # ... then linear (or cosine) decay reaching final_factor at this epoch
    final_factor: float = 0.0  # warmup_cosine: the lr's last share of its peak

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError(f"scheduler.name='{self.name}' is unknown; choose one of {list(SCHEDULES)}")
        if not 0.0 <= self.final_factor < 1.0:
            raise ConfigError(f"scheduler.final_factor={self.final_factor} not in [0, 1)")
        if self.warmup_epochs < 0 or self.decay_epochs <= self.warmup_epochs:
            raise ConfigError(
                f"scheduler.warmup_epochs={self.warmup_epochs} and decay_epochs={self.decay_epochs} "
                "need 0 <= warmup_epochs < decay_epochs"
            )


@dataclass
class EarlyStoppingConfig:
    """Stop on validation loss; each trigger reloads the best model and scales the lr."""

    patience: int = 3
    min_delta: float = 0.001
    max_triggers: int = 3  # the last trigger ends training
    lr_factor: float = 0.1

    def __post_init__(self) -> None:
        _positive("early_stopping", self, "patience", "max_triggers", "lr_factor")
        if not self.min_delta >= 0:
            raise ConfigError(f"early_stopping.min_delta={self.min_delta} must be >= 0")


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: Any = None  # the model's own dataclass, chosen by model.name
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    seed: int = 42
    device: str = "auto"
    max_epochs: int = 100
    threads: int = 0  # torch threads; 0 keeps torch's default
    progress: bool = True  # tqdm bar per epoch on a terminal
    resume: str | None = None  # run directory to continue

    def __post_init__(self) -> None:
        _positive("", self, "max_epochs")
        if self.device not in DEVICES:
            raise ConfigError(f"device='{self.device}' is unknown; choose one of {list(DEVICES)}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range
            raise ConfigError(f"seed={self.seed} must be in [0, 2**32)")
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads} must be >= 0 (0 = torch's default)")


def load_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed Hydra config and convert it to :class:`RunConfig`.

    Raises :class:`ConfigError` with one line naming the key for unknown keys,
    wrong types and invalid values.
    """
    from nextloc.models import model_config_class  # here: preprocessing workers need no torch

    try:
        model_cls = model_config_class(OmegaConf.select(cfg, "model.name", default="lstm"))
        model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(model_cls), cfg.model))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err, section="model")) from None
    try:
        rest = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "model"])
        run = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), rest))
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    run.model = model
    return run


def run_config_from_dict(settings: dict) -> RunConfig:
    """A :class:`RunConfig` from plain values, e.g. a run directory's ``run_config.json``."""
    return load_run_config(OmegaConf.create(settings))


def _one_line(err: OmegaConfBaseException, section: str = "") -> str:
    """OmegaConf's message without its multi-line context block, naming the full key."""
    message = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    if key and section:
        key = f"{section}.{key}"
    return f"{key}: {message}" if key and key not in message else message


def check_resume(run_dir: str | Path) -> None:
    """Refuse a ``resume=`` that is not an earlier run's directory."""
    saved = Path(run_dir) / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={run_dir}: no {saved}; give the directory of an earlier run")


def resumed_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The composed config of an earlier run, to continue it with ``resume=<run_dir>``.

    Only ``threads=`` and ``progress=`` may change: they set how it runs, not what it computes.
    """
    how = [o for o in overrides if o.startswith(("threads=", "progress="))]
    others = [o for o in overrides if not o.startswith("resume=") and o not in how]
    if others:
        raise ConfigError(f"resume= continues a run with its own config; drop the other overrides {others}")
    check_resume(run_dir)
    cfg = OmegaConf.merge(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), OmegaConf.from_dotlist(how))
    cfg.resume = str(run_dir)
    return cfg


def compose_run_config(overrides: list[str]) -> RunConfig:
    """The validated config of ``train.py <overrides>``, for scripts that do not run through ``hydra.main``."""
    return load_run_config(compose(overrides))


def compose(overrides: list[str]) -> DictConfig:
    """Hydra's composition of ``conf/`` with ``overrides``; its multi-line errors become one :class:`ConfigError`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_composition_problem(str(err))) from None


def _composition_problem(message: str) -> str:
    """Hydra's multi-line composition error as one line: the problem, and the choices or the fix."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if lines[0].startswith("Could not override") and "'" in lines[0]:
        key = lines[0].split("'")[1]
        return f"'{key}' is not a key of the config; check its spelling (python train.py --cfg job lists them)"
    if "Available options" in message:
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options")) + 1
        options = [o for o in lines[start:] if not o.startswith(("Config search path", "provider="))]
        return f"{lines[0]}; choose one of {options}"
    return lines[0]
