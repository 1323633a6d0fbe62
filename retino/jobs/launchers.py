"""How many jobs of a sweep a machine runs at once, and which GPU each one uses; the sizing
resolvers of the launcher presets in conf/hydra/launcher/.

Hydra's joblib launcher runs N jobs in N worker processes that live on and take job after job, so
the GPU cannot be chosen once per process (CUDA_VISIBLE_DEVICES is read only when CUDA starts).
Instead each job leases one GPU for its lifetime: a lock file per GPU in the sweep folder. A job
takes the GPU of its job number when free, else the next free one; the lock goes with the
process, so a crashed job never keeps its GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino.core.locks import try_lock

log = logging.getLogger(__name__)

CPU_PARALLEL_JOBS = 2  # small demo jobs at once on a machine without a GPU


def gpu_count() -> int:
    import torch  # here, not at the top: run.py --help and a typo's error stay fast

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
    import torch  # here, like gpu_count: run.py's start-up stays free of torch

    torch.cuda.set_device(gpu)  # "cuda" now means this GPU, for the model and the data
    log.info("This job runs on GPU %d.", gpu)
    try:
        yield
    finally:  # this worker process may take the next job on another GPU: hand this one back
        torch.cuda.empty_cache()


def jobs_at_once(launcher: DictConfig) -> int:
    """Jobs of this sweep running on this machine together: the joblib launcher's n_jobs
    (joblib reads n < 0 as cores + 1 + n), else one."""
    n_jobs = launcher.get("n_jobs")
    if not isinstance(n_jobs, int):
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def register_resolvers() -> None:
    """The launcher presets size themselves with these (${retino_parallel_jobs:} ...)."""
    for name, resolver in (("retino_parallel_jobs", parallel_jobs),
                           ("retino_gpus_per_local_job", gpus_per_local_job)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
