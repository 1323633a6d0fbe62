"""Which GPU a job of a parallel sweep uses, how many jobs a machine runs at once, and what a job
runs on (device, precision, memory layout, GPU model), resolved.

Hydra's joblib launcher runs N jobs in N worker processes that live on and take job after job, so
the GPU cannot be chosen once per process (CUDA_VISIBLE_DEVICES is read only when CUDA starts).
Instead each job leases one GPU for its lifetime: a lock file per GPU in the sweep folder. A job
takes the GPU of its job number when free, else the next free one; the lock goes with the
process, so a crashed job never keeps its GPU.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    import torch

from retino.errors import ConfigError
from retino.locks import try_lock

log = logging.getLogger(__name__)

CPU_PARALLEL_JOBS = 2  # small demo jobs at once on a machine without a GPU


def gpu_count() -> int:
    import torch  # here, not at the top: the config module asks without needing torch

    return torch.cuda.device_count()


def parallel_jobs() -> int:
    """Jobs the parallel launcher runs at once: one per visible GPU, else 2 on CPU."""
    return gpu_count() or CPU_PARALLEL_JOBS


def gpus_per_local_job() -> int:
    """submitit's local executor: 1 GPU when there is one (its jobs all get GPU 0), else 0."""
    return min(1, gpu_count())


@contextmanager
def gpu_lease(lock_dir: Path, job_num: int, count: int) -> Iterator[int]:
    """Hold one of `count` GPUs (its index) while the block runs; with more jobs running than
    GPUs (a launcher with n_jobs above the GPU count), the job number's GPU is shared."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        gpu = (job_num + k) % count
        handle = try_lock(lock_dir / f"gpu{gpu}.lock")
        if handle is None:
            continue
        try:
            yield gpu
        finally:
            handle.close()  # closing the file releases its lock
        return
    gpu = job_num % count
    log.warning("All %d GPUs are taken by other jobs of this sweep; job %d shares GPU %d. Set "
                "hydra.launcher.n_jobs to at most the number of GPUs.", count, job_num, gpu)
    yield gpu


@contextmanager
def on_gpu(gpu: int | None) -> Iterator[None]:
    """With a leased GPU, CUDA's current device for the job's lifetime."""
    if gpu is None:
        yield
        return
    import torch

    torch.cuda.set_device(gpu)  # "cuda" now means this GPU, for the model and the data
    log.info("This job runs on GPU %d.", gpu)
    try:
        yield
    finally:  # this worker process may take the next job on another GPU: hand this one back
        torch.cuda.empty_cache()


GPU_PARAM = "execution.gpu"


def execution_params(cfg: DictConfig) -> dict[str, str]:
    """What the job runs on, with `auto` and null resolved: device, precision, memory layout,
    and the GPU's name. Called once the job has its GPU (so CUDA starts on that one)."""
    import torch

    from retino.precision import resolve_step_settings
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
    import torch
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
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    log.warning("device=auto: this machine has an NVIDIA GPU, but PyTorch %s (%s) cannot use "
                "it, so training runs on the CPU. Check the driver and CUDA_VISIBLE_DEVICES, or "
                "install a CUDA build of torch; device=cuda makes this an error.",
                torch.__version__, build)
