"""Pretrained weights: find them (local file, torch hub cache, download), check them, load them.

ImageNet weights come from torchvision's URLs into the torch hub cache
(`$TORCH_HOME/hub/checkpoints`), exactly where torchvision itself keeps them, so a file cached by
torchvision is reused and a file copied there by hand (clusters without internet) is found.
"""

from __future__ import annotations

import logging
import re
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from retino.core.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0  # an offline machine must fail within seconds, not hang on a socket
_STALL_TIMEOUT_S = 60.0  # seconds without a byte before a download is given up
HEAD_KEYS = ("fc.weight", "fc.bias")  # the 1000-class ImageNet head, replaced by our own


def imagenet_weights_url(model_name: str, variant: str) -> str:
    """torchvision's download URL for e.g. ('resnet18', 'IMAGENET1K_V1')."""
    weights_enum = torchvision.models.get_model_weights(model_name)
    valid = [w.name for w in weights_enum]
    if variant not in valid:
        raise ConfigError(f"pretrain.variant={variant!r} does not exist for {model_name}; "
                          f"valid: {', '.join(valid)}.")
    return weights_enum[variant].url


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str, target: Path) -> None:
    # A HEAD request first (honours HTTPS_PROXY): an offline machine fails here within seconds.
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                           timeout=_PROBE_TIMEOUT_S).close()
    # torchvision's file names carry the first hex digits of the SHA-256; check them.
    match = re.search(r"-([a-f0-9]+)\.pth$", target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Downloading %s to %s", url, target)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_STALL_TIMEOUT_S)  # a stalled transfer fails instead of hanging
    try:
        torch.hub.download_url_to_file(url, str(target), match.group(1) if match else None)
    finally:
        socket.setdefaulttimeout(previous)


def resolve_imagenet_weights(model_name: str, variant: str, weights_file: str | None) -> Path:
    """Path of the ImageNet state dict: the given file, else the hub cache, else a download."""
    if weights_file:
        path = Path(weights_file).expanduser().resolve()
        if not path.is_file():
            raise WeightsUnavailableError(f"pretrain.weights={weights_file}: no such file.")
        return path
    url = imagenet_weights_url(model_name, variant)
    target = hub_checkpoint_dir() / Path(urlparse(url).path).name
    if target.is_file():
        return target
    try:
        _download(url, target)
    except (OSError, RuntimeError) as err:  # no network, DNS failure, HTTP error, bad hash
        raise WeightsUnavailableError(
            f"ImageNet weights for {model_name} are not cached and could not be downloaded from "
            f"{url} ({err}). Put the file {target.name} in {target.parent} (copy it from a machine "
            f"with internet, where torchvision saves it at the same place), or pass "
            f"pretrain.weights=/path/to/{target.name}.") from err
    return target


# Where pretrained weights can come from (`pretrain.source`); see experiment.pretrained_weights.
PRETRAIN_SOURCES = ("imagenet", "cifar10")


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a pretrained state dict into every layer except the head, which keeps its own shape."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict.")
    backbone = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    own = model.state_dict()
    wrong_shape = [k for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in backbone.items() if k not in wrong_shape}, strict=False)
    missing = [k for k in missing if k not in HEAD_KEYS]
    if missing or unexpected or wrong_shape:
        raise WeightsUnavailableError(
            f"{path} does not match {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong_shape)} "
            f"of another shape {wrong_shape[:3]}. Is it the weights file of this model?")
    log.info("Loaded pretrained backbone weights from %s", path)
