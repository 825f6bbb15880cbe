import pytest
from nextloc.config import CONF_DIR, RunConfig, compose_run_config
from nextloc.models.lstm import LSTMConfig
from nextloc.errors import ConfigError

CONF = CONF_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def load(*overrides: str) -> RunConfig:
    return compose_run_config(list(overrides))


class TestLoadRunConfig:
    @pytest.mark.parametrize(
        "override",
        [f"{group}={option}" for group in ("dataset", "model", "optim", "scheduler", "debug", "experiment") for option in options(group)],
    )
    def test_every_group_option_composes_and_validates(self, override):
        config = load(override)
        group, option = override.split("=")
        if group not in ("debug", "experiment"):
            assert getattr(config, group).name == option

    def test_defaults_follow_the_reference(self):
        """docs/reference.md: Adam 1e-3, weight decay 1e-6, warm-up 2 / decay 50 epochs, patience 3, seed 42."""
        config = load()
        assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == ("adam", 1e-3, 1e-6)
        assert (config.scheduler.warmup_epochs, config.scheduler.decay_epochs) == (2, 50)
        assert (config.early_stopping.patience, config.early_stopping.min_delta) == (3, 0.001)
        assert (config.seed, config.max_epochs, config.dataset.name) == (42, 100, "synthetic")
        assert isinstance(config.model, LSTMConfig)

    @pytest.mark.parametrize(
        "dataset, embed_dim, hidden_size, fc_dropout, batch_size",
        [("geolife", 32, 128, 0.2, 32), ("diy", 96, 192, 0.1, 256)],
    )
    def test_model_sizes_follow_the_dataset(self, dataset, embed_dim, hidden_size, fc_dropout, batch_size):
        config = load(f"dataset={dataset}")
        model = config.model
        assert (model.embed_dim, model.hidden_size, model.fc_dropout) == (embed_dim, hidden_size, fc_dropout)
        assert config.dataset.batch_size == batch_size

    def test_command_line_overrides_win_over_dataset_sizes(self):
        assert load("dataset=diy", "model.hidden_size=64").model.hidden_size == 64

    def test_diy_splits_at_80_and_90_percent(self):
        p = load("dataset=diy").dataset.preprocess
        assert (p.train_fraction, p.validation_fraction) == (0.8, 0.9)

    @pytest.mark.parametrize(
        "override, key",
        [
            ("model.hidden_size=0", "model.hidden_size=0"),
            ("model.embed_dim=-4", "model.embed_dim=-4"),
            ("model.fc_dropout=1.0", "model.fc_dropout=1.0"),
            ("model.lstm_dropout=-0.1", "model.lstm_dropout=-0.1"),
            ("optim.lr=0", "optim.lr=0"),
            ("optim.lr=-0.001", "optim.lr=-0.001"),
            ("dataset.batch_size=0", "dataset.batch_size=0"),
            ("dataset.batch_size=1", "dataset.batch_size=1"),
            ("optim.betas=[0.9]", r"optim.betas=\[0.9\]"),
            ("dataset=geolife dataset.preprocess.timezone=Mars/Olympus", "timezone='Mars/Olympus'"),
            ("early_stopping.patience=0", "early_stopping.patience=0"),
            ("max_epochs=0", "max_epochs=0"),
            ("device=tpu", "device='tpu'"),
            ("model.sequence=zigzag", "model.sequence='zigzag'"),
            ("model.group_size_multiple=0", "model.group_size_multiple=0"),
            ("model.group_length_multiple=-8", "model.group_length_multiple=-8"),
            ("optim.lr=nan", "optim.lr=nan"),
            ("optim.lr=inf", "optim.lr=inf must be finite"),
            ("optim.lrr=1e-3", "'optim.lrr' is not a key of the config; check its spelling"),
            ("model=transformer", r"Could not find 'model/transformer'; choose one of \['lstm'"),
            ("model.hidden_size=abc", "model.hidden_size: Value 'abc'"),
            ("early_stopping.min_delta=nan", "early_stopping.min_delta=nan"),
            ("optim.weight_decay=nan", "optim.weight_decay=nan"),
            ("seed=-1", "seed=-1"),
            ("seed=4294967296", "seed=4294967296"),
            ("dataset=geolife debug=smoke", "dataset.synthetic is set but dataset.source=geolife"),
            ("dataset.source=gpx", "dataset.source='gpx'"),
            ("model=markov model.fallback=[weekly]", "model.fallback"),
        ],
    )
    def test_invalid_values_name_the_key_and_value(self, override, key):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load(*override.split())

    def test_unknown_key_is_named(self):
        with pytest.raises(ConfigError, match="hiden_size"):
            load("+model.hiden_size=3")

    def test_wrong_type_is_named(self):
        with pytest.raises(ConfigError, match="batch_size"):
            load("dataset.batch_size=many")


class TestExperiments:
    @pytest.mark.parametrize("name, dataset, hidden_size", [("lstm_geolife", "geolife", 128), ("lstm_diy", "diy", 192)])
    def test_experiment_selects_its_dataset_and_sizes(self, name, dataset, hidden_size):
        config = load(f"experiment={name}")
        assert (config.dataset.name, config.model.hidden_size, config.model.init) == (dataset, hidden_size, "reference")

    @pytest.mark.parametrize("file", sorted((CONF / "experiment").glob("*.yaml")))
    def test_experiment_file_names_its_command(self, file):
        assert f"python train.py experiment={file.stem}" in file.read_text().splitlines()[1]


class TestResumedConfig:
    def test_threads_and_progress_may_change_nothing_else(self, tmp_path):
        from omegaconf import OmegaConf

        from nextloc.config import resumed_config
        from nextloc.errors import ConfigError

        (tmp_path / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create({"seed": 3, "threads": 0, "progress": True, "resume": None}),
                       tmp_path / ".hydra" / "config.yaml")
        cfg = resumed_config(tmp_path, [f"resume={tmp_path}", "threads=1", "progress=false"])
        assert (cfg.seed, cfg.threads, cfg.progress, cfg.resume) == (3, 1, False, str(tmp_path))
        with pytest.raises(ConfigError, match=r"drop the other overrides \['seed=4'\]"):
            resumed_config(tmp_path, [f"resume={tmp_path}", "threads=1", "seed=4"])
