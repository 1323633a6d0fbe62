"""What a trained network costs to deploy: parameters, weights size, FLOPs per image and CPU
latency per image, with the machine the latency was measured on, so a study's report can set
accuracy beside what a device must pay for it.

FLOPs are torch.utils.flop_counter's count: convolutions and matrix products only, a
multiply-add counted as 2 FLOPs (normalisation, activations and pooling are left out: a few
percent of a ResNet's). Latency is the median of timed passes on the CPU (whatever the model
trained on), in inference mode, after a warm-up pass, within a time budget: a slow model gets
fewer passes, never fewer than one; batch 32 is left out (and said so) when its warm-up pass
would not fit.
"""

from __future__ import annotations

import copy
import io
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

BUDGET_S = 4.0  # the latency timing of one run, both batch sizes, warm-ups included
MAX_PASSES = 10  # timed passes per batch size, when they fit in the budget
LARGE_BATCH = 32


@dataclass(frozen=True)
class Cost:
    params: int  # every parameter, trainable or frozen
    weights_mb: float  # the saved state dict, in 10^6 bytes
    gflops_per_image: float  # 10^9 FLOPs, a multiply-add counted as 2
    cpu_ms_per_image_b1: float
    cpu_ms_per_image_b32: float | None  # None: one pass of 32 would not fit in the budget
    passes: tuple[int, int]  # timed passes at batch 1 and 32
    machine: str

    def metrics(self) -> dict[str, float]:
        """As a run logs them (cost_*)."""
        values = {"cost_params": float(self.params), "cost_weights_mb": self.weights_mb,
                  "cost_gflops_per_image": self.gflops_per_image,
                  "cost_cpu_ms_per_image_b1": self.cpu_ms_per_image_b1}
        if self.cpu_ms_per_image_b32 is not None:
            values["cost_cpu_ms_per_image_b32"] = self.cpu_ms_per_image_b32
        return values


def weights_bytes(model: nn.Module) -> int:
    """The size of the model's state dict as torch.save writes it (model_state.pt)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def flops_per_image(model: nn.Module, size: int) -> int:
    """FLOPs of one (1, 3, size, size) image through the model (see the module's note)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def _pass_seconds(model: nn.Module, images: torch.Tensor) -> float:
    started = time.perf_counter()
    model(images)
    return time.perf_counter() - started


def timed_passes(model: nn.Module, images: torch.Tensor, budget_s: float) -> list[float]:
    """Seconds of each timed pass after a warm-up pass: as many as fit the budget, at least one
    and at most MAX_PASSES."""
    warm_up = _pass_seconds(model, images)
    passes = max(1, min(MAX_PASSES, int((budget_s - warm_up) / max(warm_up, 1e-6))))
    return [_pass_seconds(model, images) for _ in range(passes)]


def cpu_name() -> str:
    """The CPU's model name ('model name' in /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(passes: tuple[int, int]) -> str:
    return (f"{cpu_name()}; {torch.get_num_threads()} threads of {os.cpu_count()} logical "
            f"cores; torch {torch.__version__}; median of {passes[0]} passes at batch 1, "
            f"{passes[1]} at batch {LARGE_BATCH}")


@torch.inference_mode()
def measure_cost(network: nn.Module, size: int, budget_s: float = BUDGET_S) -> Cost:
    """The network's cost at this input size, timed within about budget_s (the network itself
    is left as it was)."""
    model = copy.deepcopy(network).cpu().float().eval()
    images = torch.rand(LARGE_BATCH, 3, size, size)
    deadline = time.perf_counter() + budget_s
    single = timed_passes(model, images[:1], budget_s / 4)
    # batch 32 only when its warm-up, predicted from batch 1's (a batch is cheaper per image
    # than single images: the prediction errs high), fits in what is left
    left = deadline - time.perf_counter()
    fits = LARGE_BATCH * statistics.median(single) <= left
    large = timed_passes(model, images, left) if fits else []
    passes = (len(single), len(large))
    return Cost(params=sum(p.numel() for p in model.parameters()),
                weights_mb=weights_bytes(model) / 1e6,
                gflops_per_image=flops_per_image(model, size) / 1e9,
                cpu_ms_per_image_b1=1e3 * statistics.median(single),
                cpu_ms_per_image_b32=(1e3 * statistics.median(large) / LARGE_BATCH
                                      if large else None),
                passes=passes, machine=machine(passes))
