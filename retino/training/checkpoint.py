"""A run's checkpoint (last.pt): model, optimizer, schedule, epoch, config, metric history,
gradient scaler and the selected epoch, in one atomically written file that a resumed run
continues from exactly."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from retino.core.errors import first_line
from retino.core.files import atomic_write
from retino.training.selection import Selection


def atomic_torch_save(path: Path, obj: Any) -> Path:
    """torch.save, atomically: a kill leaves the old file or the new one, never half of one."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights on the CPU, so a file saved on a GPU loads anywhere."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, config: dict,
                    history: list[dict[str, float]] | None = None,
                    scaler: dict | None = None, selection: Selection | None = None,
                    ema: dict | None = None) -> None:
    """Write atomically (temp file, then rename): a kill never leaves a truncated checkpoint.
    The metric history rides along, so a resumed run can still draw its whole curve; so do
    the fp16 gradient scaler's state (its current scale, empty for other precisions) and the
    selected epoch with its weights (in the same file: the two can never disagree), and with
    ema_decay the moving average of the weights."""
    weights = cpu_state_dict(model)
    selected = selection.weights if selection and selection.weights else {}
    state = {"model": weights, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "config": config,
             "history": [{k: float(v) for k, v in row.items()} for row in history or []],
             "scaler": scaler or {}, "selection": selection.state() if selection else {},
             "selected_model": written_once(selected, weights)}
    if ema:
        state["ema"] = ema
    atomic_torch_save(path, state)


def written_once(selected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """The selected weights, each tensor equal to the model's given as the model's own:
    torch.save writes a storage once, so an epoch that is the best so far (most epochs, early
    in training) no longer writes its weights twice, a quarter of an AdamW checkpoint."""
    return {name: weights[name] if name in weights and torch.equal(tensor, weights[name])
            else tensor for name, tensor in selected.items()}


class Checkpoint(NamedTuple):
    epoch: int  # the last completed epoch
    history: list[dict[str, float]]  # one row per completed epoch
    scaler: dict  # the fp16 gradient scaler's state ({} otherwise)
    selection: Selection | None = None  # the best epoch so far, with its weights
    ema: dict | None = None  # the moving average of the weights (ema_decay), when kept


class UnreadableCheckpoint(Exception):
    """A checkpoint file that cannot be read (corrupt, or holding what weights_only refuses);
    the message says why."""


SET_ASIDE_SUFFIX = ".corrupt"  # last.pt.corrupt: an unreadable checkpoint, kept for a look


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, read without running code from it; UnreadableCheckpoint
    naming the file and the reason when it cannot be (torch's own error named no file and
    suggested weights_only=False, which would run whatever the file holds)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError,
            zipfile.BadZipFile) as err:  # an OSError (no access, a lost mount) is raised
        raise UnreadableCheckpoint(f"{path} cannot be read ({type(err).__name__}: "
                                   f"{first_line(err, 200)})") from err
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise UnreadableCheckpoint(f"{path} is not a retino checkpoint (no model and epoch).")
    return state


def set_aside(path: Path) -> Path:
    """The unreadable checkpoint renamed beside itself (last.pt.corrupt, then .corrupt.1, ...),
    never deleted nor over an earlier one."""
    target = path.with_name(path.name + SET_ASIDE_SUFFIX)
    count = 0
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}.{count}")
    os.replace(path, target)
    return target


def read_or_set_aside(path: Path) -> tuple[dict | None, str | None]:
    """(the checkpoint's contents, None); or, for one that cannot be read, (None, why), the
    file set aside (set_aside) for the caller to log and tag."""
    try:
        return read_checkpoint(path), None
    except UnreadableCheckpoint as err:
        return None, f"{err}; set aside as {set_aside(path).name}"


def load_checkpoint(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> Checkpoint:
    """Restore model, optimizer and schedule in place from a read checkpoint
    (read_checkpoint); the rest is returned."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    chosen = state.get("selection") or {}
    selection = Selection(chosen["metric"], int(chosen["epoch"]), float(chosen["score"]),
                          state.get("selected_model") or None) if chosen else None
    return Checkpoint(int(state["epoch"]), list(state.get("history", [])),
                      dict(state.get("scaler", {})), selection, state.get("ema") or None)
