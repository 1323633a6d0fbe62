"""Pretrained weights: find them (local file, torch hub cache, download), check them, load them.

ImageNet weights of retino's ResNets come from torchvision's URLs into the torch hub cache
(`$TORCH_HOME/hub/checkpoints`), exactly where torchvision itself keeps them, so a file cached by
torchvision is reused and a file copied there by hand (clusters without internet) is found.

timm's backbones take timm-format files: the given one, or the one timm itself would have
downloaded into the Hugging Face hub cache (`$HF_HUB_CACHE`, by default `$HF_HOME/hub`), found
there without any network access. Nothing is downloaded for them: the error says what to fetch.
"""

from __future__ import annotations

import logging
import pickle
import re
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import safetensors.torch
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError

from retino.core.errors import ConfigError, WeightsUnavailableError, first_line
from retino.models.network import HEAD, GradingNetwork

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0  # an offline machine must fail within seconds, not hang on a socket
_STALL_TIMEOUT_S = 60.0  # seconds without a byte before a download is given up
# What timm.create_model(pretrained=True) fetches from a Hugging Face repo, in its order
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def imagenet_weights_url(model_name: str, variant: str) -> str:
    """torchvision's download URL for e.g. ('resnet18', 'IMAGENET1K_V1')."""
    try:
        weights_enum = torchvision.models.get_model_weights(model_name)
    except ValueError:  # "Unknown model": a network of retino's own without a torchvision twin
        raise ConfigError(f"model {model_name} has no ImageNet weights in torchvision's table "
                          "(torchvision.models.get_model_weights knows no such name): train it "
                          "from scratch (pretrained=false) or from your own file "
                          "(pretrain.weights=<path>).") from None
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


def _given_file(weights_file: str) -> Path:
    path = Path(weights_file).expanduser().resolve()
    if not path.is_file():
        raise WeightsUnavailableError(f"pretrain.weights={weights_file}: no such file.")
    return path


def resolve_imagenet_weights(model_name: str, variant: str, weights_file: str | None) -> Path:
    """Path of the ImageNet state dict: the given file, else the hub cache, else a download."""
    if weights_file:
        return _given_file(weights_file)
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


def resolve_timm_weights(arch: str, weights_file: str | None) -> Path:
    """Path of a timm-format state dict for `arch` (with or without its pretrained tag): the
    given file, else the Hugging Face hub cache; never a download."""
    if weights_file:
        return _given_file(weights_file)
    from timm.models import get_pretrained_cfg  # timm only for timm's backbones (see timm_network)

    pretrained = get_pretrained_cfg(arch)
    repo = pretrained.hf_hub_id if pretrained else None
    if not repo:
        raise WeightsUnavailableError(
            f"timm publishes no Hugging Face weights for {arch}: pass "
            "pretrain.weights=/path/to/a timm-format state dict (.safetensors or .pth).")
    for filename in HF_WEIGHTS_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):  # else None, or a marker that the file is known absent
            return Path(found)
    cache = Path(hf_constants.HF_HUB_CACHE)
    raise WeightsUnavailableError(
        f"ImageNet weights for {arch} (timm) are not in the Hugging Face cache {cache}; nothing "
        f"is downloaded at run time. On a machine with internet, fetch {HF_WEIGHTS_FILES[0]} of "
        f"https://huggingface.co/{repo} (`hf download {repo} {HF_WEIGHTS_FILES[0]}`) and copy "
        f"its cache folder {cache / ('models--' + repo.replace('/', '--'))} here (or set "
        f"HF_HOME), or pass pretrain.weights=/path/to/{HF_WEIGHTS_FILES[0]}.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file (Hugging Face's format) or a torch pickle of one
    (.pth, .bin), read without running any code from it."""
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(path, device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's text suggests weights_only=False: never
        raise WeightsUnavailableError(f"{path} holds objects other than tensors, which retino "
                                      "never unpickles (a file that is not weights, or made to "
                                      "run code): replace it with the run's own.") from err
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as err:
        raise WeightsUnavailableError(f"{path} could not be read as a state dict (it is "
                                      f"corrupt or truncated: {first_line(err, 200)}).") from err
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict.")
    return state


def load_backbone_weights(model: GradingNetwork, path: Path) -> None:
    """Load a pretrained state dict into every layer except the head: the file's classifier
    (model.pretrained_classifier(): torchvision's `fc`, timm's `classifier` or `head.fc`) is
    left out and the head `fc` keeps its own; every other tensor must match, name and shape."""
    classifier = tuple(f"{name}." for name in model.pretrained_classifier())
    backbone = {k: v for k, v in read_state_dict(path).items() if not k.startswith(classifier)}
    own = model.state_dict()
    wrong = [k for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in backbone.items() if k not in wrong}, strict=False)
    missing = [k for k in missing if not k.startswith(f"{HEAD}.") and k not in wrong]
    wrong_shape = [f"{k} {tuple(backbone[k].shape)} (model: {tuple(own[k].shape)})"
                   for k in wrong]
    if missing or unexpected or wrong_shape:
        raise WeightsUnavailableError(
            f"{path} does not match {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, {len(wrong_shape)} "
            f"of another shape {wrong_shape[:5]}. Is it the weights file of this model?")
    log.info("Loaded pretrained backbone weights from %s", path)
