"""Files a stranger may have written: nothing retino reads runs code from them, and each is
refused by name."""

from omegaconf import OmegaConf

from tests.conftest import compose_config


def test_a_run_folders_config_yaml_cannot_hand_hydra_a_callback(tmp_path, caplog):
    """`retino.reproduce` turned every key of config.yaml into an override: a `hydra:` key with
    callbacks ran a callable. Keys outside the schema are refused by name, before run.py."""
    from retino.reproduce import main as reproduce_main

    marker = tmp_path / "payload-ran"
    config = OmegaConf.to_container(compose_config(["+preset=smoke"]), resolve=True)
    config["hydra"] = {"callbacks": {"evil": {"_target_": "pathlib.Path.touch",
                                              "self": str(marker)}}}
    config["extra_key"] = 1
    folder = tmp_path / "run"
    folder.mkdir()
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    assert reproduce_main([str(folder)]) == 2
    assert "not retino's config: extra_key, hydra" in caplog.text
    assert not marker.exists()
