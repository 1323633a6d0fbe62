"""What a job runs on, resolved: the device ('auto' → CUDA when usable, loudly the CPU when a GPU
is there but unusable), and the execution params logged with a run (device, precision, memory
layout, GPU model)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from retino.core.errors import ConfigError
from retino.core.keys import GPU_PARAM
from retino.training.precision import resolve_step_settings

log = logging.getLogger(__name__)


def execution_params(cfg: DictConfig) -> dict[str, str]:
    """What the job runs on, with `auto` and null resolved: device, precision, memory layout,
    and the GPU's name. Called once the job has its GPU (so CUDA starts on that one)."""
    device = resolve_device(cfg.device)
    settings = resolve_step_settings(cfg.precision, cfg.channels_last, cfg.grad_clip, device)
    return {"execution.device": device.type, "execution.precision": settings.precision,
            "execution.channels_last": str(settings.channels_last),
            GPU_PARAM: torch.cuda.get_device_name() if device.type == "cuda" else "none"}


# Present on a machine with an NVIDIA GPU and its driver, whether or not PyTorch can use it.
NVIDIA_DEVICE_FILES = (Path("/dev/nvidiactl"), Path("/proc/driver/nvidia/version"))


def resolve_device(name: str) -> torch.device:
    """'auto' takes CUDA when usable, and says loudly when it falls back to the CPU on a machine
    with a GPU; asking for CUDA without it is a config error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if any(path.exists() for path in NVIDIA_DEVICE_FILES):
            _warn_unusable_gpu()
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto.")
    return torch.device(name)


@functools.cache  # once per process: a job resolves its device more than once
def _warn_unusable_gpu() -> None:
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    log.warning("device=auto: this machine has an NVIDIA GPU, but PyTorch %s (%s) cannot use "
                "it, so training runs on the CPU. Check the driver and CUDA_VISIBLE_DEVICES, or "
                "install a CUDA build of torch; device=cuda makes this an error.",
                torch.__version__, build)
