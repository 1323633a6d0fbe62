"""Pickles read from data files, without running code from them.

`pickle.load` calls whatever a file names: a crafted CIFAR-10 batch ran a payload on every read.
The data retino reads as pickles (CIFAR-10's batches, in torchvision's on-disk format) hold only
dicts, lists, bytes, numbers and numpy arrays, so the unpickler here finds those few classes and
refuses every other by name. (Weights are read with torch.load(weights_only=True), which applies
the same rule to tensors.)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from retino.core.errors import DataError

# (module, name) of what a numpy array's pickle calls to rebuild itself, and nothing else
ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path, **options: Any) -> None:
        super().__init__(file, **options)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise DataError(f"{self._path} is not plain data: its pickle calls {module}.{name}, "
                            "which retino never runs from a data file. Replace the file with "
                            "a copy from the dataset's source.")
        found = super().find_class(module, name)
        return self._empty_only(found) if name == "_reconstruct" else found

    def _empty_only(self, reconstruct: Any) -> Any:
        """numpy's own pickles rebuild an array empty, shape (0,), then fill it from bytes
        the file holds; a crafted one can ask for any shape, allocated from nothing."""
        def rebuild(cls: Any, shape: Any, dtype: Any) -> Any:
            if tuple(shape) != (0,):
                raise DataError(f"{self._path} is not plain data: an array of shape {shape} is "
                                "built from nothing in it (numpy's pickles start empty). "
                                "Replace the file with a copy from the dataset's source.")
            return reconstruct(cls, shape, dtype)
        return rebuild


def load_data_pickle(path: Path, encoding: str = "ASCII") -> Any:
    """The object pickled in path, when it is plain data (dicts, lists, bytes, numbers, numpy
    arrays); DataError naming the file otherwise, or when it is not a pickle at all."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _DataUnpickler(f, path, encoding=encoding).load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a crafted file provokes, named as such
        raise DataError(f"{path} is not a readable pickle ({type(err).__name__}: "
                        f"{str(err)[:200]}).") from err
