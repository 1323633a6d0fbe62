"""The schema and the --help page registered with Hydra's ConfigStore: the only module of this
stage that imports Hydra, so that training and data can read the config stage without it."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from retino.config.help import help_text
from retino.config.schema import Config


def register_configs() -> None:
    """Register the schema (`retino_schema`) and the --help page written from it."""
    store = ConfigStore.instance()
    store.store(name="retino_schema", node=Config)
    store.store(group="hydra/help", name="retino_help",  # python run.py --help
                node={"app_name": "retino", "header": "", "footer": "",
                      "template": help_text(Config)})
