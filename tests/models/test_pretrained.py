import socket
import time
from pathlib import Path

import pytest
import torch
import torchvision

from retino.core.errors import ConfigError, WeightsUnavailableError
from retino.models.pretrained import (
    hub_checkpoint_dir,
    load_backbone_weights,
    resolve_imagenet_weights,
)
from retino.training.pipeline import prepare_model
from tests.conftest import compose_config
from tests.helpers.runs import fill_hub_cache


@pytest.fixture
def offline(monkeypatch):
    """Any connection attempt fails at once, as on a machine without internet."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_pretrained_true_loads_backbone_from_hub_cache(name, offline):
    state = fill_hub_cache(name)
    model = prepare_model(compose_config([f"model={name}", "pretrained=true"]))
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert model.fc.out_features == 5


def test_missing_weights_offline_fail_fast_naming_file_and_folder(offline):
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_imagenet_weights("resnet18", "IMAGENET1K_V1", None)
    assert time.monotonic() - started < 5
    assert "resnet18-f37072fd.pth" in str(err.value)
    assert str(hub_checkpoint_dir()) in str(err.value)
    assert "pretrain.weights=" in str(err.value)


def test_local_weights_file_is_used_and_checked(tmp_path, offline):
    path = tmp_path / "my_resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    cfg = compose_config(["pretrained=true", f"pretrain.weights={path}"])
    prepare_model(cfg)  # loads without touching the hub cache or network
    assert not hub_checkpoint_dir().exists()
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        resolve_imagenet_weights("resnet18", "IMAGENET1K_V1", str(tmp_path / "nope.pth"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = Path(tmp_path / "r50.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = compose_config(["model=resnet18"])
    with pytest.raises(WeightsUnavailableError, match="does not match"):
        load_backbone_weights(prepare_model(model), path)


def test_a_network_torchvision_does_not_know_has_no_imagenet_weights_and_says_what_instead():
    """A network of retino's own (docs/architecture.md, "A model") with pretrained=true: the
    job stopped on torchvision's bare "Unknown model" traceback."""
    from retino.models.pretrained import imagenet_weights_url

    with pytest.raises(ConfigError, match="resnet10 has no ImageNet weights") as refused:
        imagenet_weights_url("resnet10", "IMAGENET1K_V1")
    # (not pretrain=cifar10, which only retino's ResNets take: validation refuses it for others)
    assert "pretrained=false" in str(refused.value) and "pretrain.weights=" in str(refused.value)
    assert "pretrain=cifar10" not in str(refused.value)
