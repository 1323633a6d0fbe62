"""In-process runs: a config validated, CIFAR-10 pretraining, the hub cache, a tracker that dies."""

import torch
import torchvision

from retino.config.validation import validate_config
from retino.models.pretrained import hub_checkpoint_dir
from retino.training.optimization import registered_choices
from tests.conftest import TINY, compose_config

# torchvision's own file names for the IMAGENET1K_V1 weights, as they lie in the hub cache.
HUB_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}


def validate(overrides):
    validate_config(compose_config(overrides), registered_choices())


def cifar_cfg_overrides(tmp_path):
    return [f"data.root={tmp_path / 'demo'}", *TINY, "pretrained=true", "pretrain=cifar10",
            f"pretrain.root={tmp_path / 'cifar'}", "pretrain.download=false", "pretrain.epochs=2",
            "pretrain.batch_size=8", f"pretrain.cache_dir={tmp_path / 'ck'}"]


def fill_hub_cache(name: str) -> dict[str, torch.Tensor]:
    """Save torchvision's model of that name where torchvision would have downloaded it."""
    state = getattr(torchvision.models, name)(weights=None).state_dict()
    folder = hub_checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / HUB_FILES[name])
    return state


class DiesAfterEpoch:
    """A tracker whose job is killed once epoch N is checkpointed and logged."""

    def __init__(self, epoch):
        self.epoch = epoch

    def log_metrics(self, metrics, step):
        if step == self.epoch:
            raise KeyboardInterrupt

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        pass

    def logged_steps(self, key):
        return set()

    def log_artifact(self, path):
        pass
