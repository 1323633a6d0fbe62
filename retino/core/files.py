"""Atomic file writes: write a temp file beside the target, then rename over it.

A kill at any moment leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _replace_from_temp(path: Path, write) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return _replace_from_temp(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return _replace_from_temp(path, lambda tmp: tmp.write_bytes(data))


def csv_text(rows: list[list[str]] | list[tuple]) -> str:
    """Rows as CSV text (quoted where a cell holds a comma or a quote)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def atomic_torch_save(path: Path, obj: Any) -> Path:
    import torch  # here, not at the top: the image-preparation workers never need torch

    return _replace_from_temp(path, lambda tmp: torch.save(obj, tmp))


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights on the CPU, so a file saved on a GPU loads anywhere."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
