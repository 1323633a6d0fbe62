"""Atomic file writes: write a temp file beside the target, then rename over it.

A kill at any moment leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_MARK = ".tmp-"  # in the name of every file atomic_write has not finished


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """write(temp path), then the temp file renamed over path. The temp file is created anew
    under an unpredictable name (O_EXCL), so a file or symlink planted beside the target is
    never written through."""
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def clear_interrupted_writes(folder: Path) -> int:
    """Remove the temp files of writes a kill interrupted (never complete, never read);
    how many there were."""
    leftovers = [p for p in Path(folder).glob(f".*{TEMP_MARK}*") if p.is_file()]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def csv_text(rows: list[list[str]] | list[tuple]) -> str:
    """Rows as CSV text (quoted where a cell holds a comma or a quote)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
