"""The schema and the --help page registered with Hydra's ConfigStore: the only module of this
stage that imports Hydra, so that training and data can read the config stage without it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig

from retino import PROJECT_ROOT
from retino.config.help import help_text
from retino.config.schema import Config
from retino.core.errors import ConfigError


@cache
def register_configs() -> None:
    """Register the schema (`retino_schema`) and the --help page written from it, once per
    process: Hydra's ConfigStore is the process's, and writing the help page takes a twentieth
    of a second, which every composition paid again (7 s of the tests' 230)."""
    store = ConfigStore.instance()
    store.store(name="retino_schema", node=Config)
    store.store(group="hydra/help", name="retino_help",  # python run.py --help
                node={"app_name": "retino", "header": "", "footer": "",
                      "template": help_text(Config)})


def composed(overrides: Sequence[str]) -> DictConfig:
    """The main config with these overrides, composed by Hydra from conf/ as run.py composes
    it (a command other than run.py that takes run.py's overrides); ConfigError naming the
    valid choices for an unknown group option or key."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except HydraException as err:
        raise ConfigError(str(err)) from err
