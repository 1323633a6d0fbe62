"""The data part of a run's identity: a digest of what defines a dataset (its four split CSVs and
a prepared cache's manifest), not of every image's bytes, so that it is cheap to compute.

A finished run is reused, and an interrupted one continued, only when its data digest matches
(with its config and code: retino/jobs/identity.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from retino.core.errors import DataError
from retino.data.layout import (
    MANIFEST_FILE,
    PATIENTS_FILE,
    SPLITS,
    csv_paths,
    read_lines,
    read_manifest,
)

DIGEST_CHARS = 12
# What a prepared cache's manifest says about how its data was made (not when, nor counts,
# which follow from the CSVs).
MANIFEST_KEYS = ("source", "method", "method_version", "size", "split", "split_seed",
                 "split_digest")


def short_digest(parts: list[bytes]) -> str:
    """SHA-256 of the parts, length-prefixed so that no two lists of parts collide."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big"))
        sha.update(part)
    return sha.hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class DataIdentity:
    """What a run trained and was tested on: a digest, where it lives, and its split sizes."""

    digest: str
    root: Path
    sizes: dict[str, int]  # images per split, as the CSVs list them
    manifest: dict[str, object]  # MANIFEST_KEYS of a prepared cache ({} for the demo set)


def dataset_files(root: Path) -> list[Path]:
    """The files that define a data set, those present of: the four split CSVs, patients.csv
    and a prepared cache's manifest (what data_identity digests; never a photograph)."""
    root = Path(root)
    paths = [path for split in SPLITS for path in csv_paths(root, split)]
    return [path for path in (*paths, root / PATIENTS_FILE, root / MANIFEST_FILE)
            if path.is_file()]


def data_identity(root: Path) -> DataIdentity:
    """The identity of the dataset whose four CSVs are in root (DataError if one is missing)."""
    root = Path(root)
    parts, sizes = [], {}
    for split in SPLITS:
        for path in csv_paths(root, split):
            if not path.is_file():
                raise DataError(f"{path} not found: data.root ({root}) must hold train_img.csv, "
                                "train_label.csv, test_img.csv and test_label.csv.")
            parts += [path.name.encode(), path.read_bytes()]
        sizes[split] = len(read_lines(csv_paths(root, split)[0]))
    if (root / PATIENTS_FILE).is_file():  # whose eye is which: it moves the validation split
        parts += [PATIENTS_FILE.encode(), (root / PATIENTS_FILE).read_bytes()]
    manifest = {key: value for key, value in read_manifest(root).items() if key in MANIFEST_KEYS}
    parts.append(json.dumps(manifest, sort_keys=True, default=str).encode())
    return DataIdentity(short_digest(parts), root, sizes, manifest)
