"""Atomic file writes: write a temp file beside the target, then rename over it.

A kill at any moment leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import shutil
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
    os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes it 0600: a plain file's mode instead
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save says only "iostream error"
        if disk_full(err, path.parent):
            raise DiskFullError(f"No space left to write {path}: "
                                f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free on "
                                "its disk. Free some space (old runs under outputs/ and "
                                "multirun/, the pytest temp folder) and run again: it resumes."
                                ) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class DiskFullError(OSError):
    """A write ran out of disk space; the message names the file and the space left."""


FULL_BELOW_BYTES = 1_000_000  # free space below which a failed write is taken as a full disk


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space: ENOSPC, or too little left to tell
    another cause (torch.save reports a full disk as a RuntimeError without errno)."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


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
