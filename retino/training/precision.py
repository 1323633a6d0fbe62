"""Mixed precision and memory layout for the training step, written once.

precision: fp32 (exact, the CPU default), bf16 (autocast, no scaling needed: the CUDA default
where supported), fp16 (autocast with a gradient scaler). channels_last: NHWC tensors, faster on
CUDA tensor cores (the CUDA default). The step is always scale -> backward -> unscale -> clip ->
step; on fp32 and bf16 the scaler is disabled and each of those is a plain call. compile:
torch.compile the model (off by default: compiling takes minutes, worth it on long GPU runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from retino.data.load.dataset import normalize_images

log = logging.getLogger(__name__)
# The dtype of each of config.PRECISIONS but auto (tests/training/test_precision.py checks that
# they agree).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepSettings:
    precision: str = "fp32"
    channels_last: bool = False
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile's default; tests use a lighter one

    def compiled(self, model: nn.Module) -> nn.Module:
        """What the step calls: the model itself, or its compiled wrapper. Checkpoints keep
        saving the model itself, so their parameter names never get the wrapper's prefix.

        Each compiled run starts from an empty compile cache: the jobs of a sequential sweep
        share one process, and each adds graphs (training, evaluation, a short last batch) that
        would otherwise pile up until torch's recompile limit silently sends later jobs back to
        eager mode. Hitting the limit within one run raises instead of slowing down unseen."""
        if not self.compile:
            return model
        torch._dynamo.reset()
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        log.info("Compiling the model (torch.compile, backend %s): the first steps of each "
                 "batch shape (training, evaluation, a short last batch) take longer.",
                 self.compile_backend)
        return torch.compile(model, backend=self.compile_backend)

    def autocast(self, device: torch.device) -> AbstractContextManager:
        return torch.autocast(device.type, dtype=DTYPES[self.precision],
                              enabled=self.precision != "fp32")

    def images_to(self, images: torch.Tensor, device: torch.device,
                  device_params: torch.Tensor | None = None) -> torch.Tensor:
        """A batch as the model takes it: on the device; a uint8 batch from the loader (a
        quarter of float32's bytes to copy) scaled, augmented by its device_params (rotation,
        colour jitter) and normalised there."""
        images = images.to(device, non_blocking=True)  # non-blocking from pinned memory
        if images.dtype == torch.uint8:
            images = normalize_images(images, device_params)
        return images.contiguous(memory_format=torch.channels_last if self.channels_last
                                 else torch.contiguous_format)

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        model.to(device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def ahead_on_device(batches: Iterable[Sequence[torch.Tensor]],
                    device: torch.device) -> Iterator[list[torch.Tensor]]:
    """The batches, each copied to a CUDA device on a side stream one batch ahead, so that the
    copy of batch n+1 (from pinned memory) overlaps the step on batch n instead of queueing
    behind it on the default stream; elsewhere, the batches as they come."""
    if device.type != "cuda":
        yield from (list(batch) for batch in batches)
        return
    copies = torch.cuda.Stream(device)
    ahead = None
    for batch in batches:
        with torch.cuda.stream(copies):
            moved = [part.to(device, non_blocking=True) for part in batch]
        if ahead is not None:
            yield ahead  # the caller queues its step on `ahead` while `moved` is copied
        step_stream = torch.cuda.current_stream(device)
        step_stream.wait_stream(copies)  # the next step starts once its batch has arrived
        for part in moved:
            part.record_stream(step_stream)  # made on the side stream, used on the step's
        ahead = moved
    if ahead is not None:
        yield ahead


def resolve_step_settings(precision: str, channels_last: bool | None, grad_clip: float,
                          device: torch.device, compile: bool = False) -> StepSettings:
    """'auto' precision: bf16 (or fp16 without bf16 support) on CUDA, fp32 elsewhere; channels_last
    None: on for CUDA only."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    layout = device.type == "cuda" if channels_last is None else channels_last
    return StepSettings(precision, layout, grad_clip, compile)


class GradientStep:
    """One optimizer step from a loss, correct for every precision."""

    def __init__(self, settings: StepSettings, device: torch.device) -> None:
        self.settings = settings
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")

    def __call__(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        self.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
