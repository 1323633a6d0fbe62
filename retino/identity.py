"""A run's identity: its configuration, the version of the code and the data it trained on.

A finished run is reused, and an interrupted one continued, only when config, code and data all
match (retino/decision.py). Both digests are cheap: the code version hashes the source files
that define what a run computes (the package, the entry point, the configs), so a README edit
changes nothing and a copy outside git still has one; the data digest hashes what defines the
data (the four split CSVs and a prepared cache's manifest), not every image's bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from retino import PROJECT_ROOT
from retino.config import params_to_log
from retino.data.layout import SPLITS, csv_paths, read_lines, read_manifest
from retino.errors import DataError

CODE_FILES = ("retino/**/*.py", "run.py", "conf/**/*.yaml")  # relative to the project root
# Launcher presets decide where and how many jobs run, never what one computes: raising a SLURM
# time limit after a job hit it must not turn its resume into a fresh start.
NOT_CODE = ("conf/hydra/",)
DIGEST_CHARS = 12
# What a prepared cache's manifest says about how its data was made (not when, nor counts,
# which follow from the CSVs).
MANIFEST_KEYS = ("source", "method", "size", "split", "split_seed", "split_digest")


def _digest(parts: list[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two inputs collide
        sha.update(part)
    return sha.hexdigest()[:DIGEST_CHARS]


def code_files(root: Path = PROJECT_ROOT) -> list[Path]:
    root = Path(root)
    return sorted({path for pattern in CODE_FILES for path in root.glob(pattern)
                   if path.is_file() and "__pycache__" not in path.parts
                   and not path.relative_to(root).as_posix().startswith(NOT_CODE)})


def code_version(root: Path = PROJECT_ROOT) -> str:
    """Digest of the files that define what a run computes (their paths and contents)."""
    parts = []
    for path in code_files(root):
        parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return _digest(parts)


def git_commit(folder: Path = PROJECT_ROOT) -> str:
    """The checked-out commit, with '-dirty' when tracked files have uncommitted changes;
    'unknown' outside a git checkout (the code version still identifies the code)."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class DataIdentity:
    """What a run trained and was tested on: a digest, where it lives, and its split sizes."""

    digest: str
    root: Path
    sizes: dict[str, int]  # images per split, as the CSVs list them
    manifest: dict[str, object]  # MANIFEST_KEYS of a prepared cache ({} for the demo set)


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
    manifest = {key: value for key, value in read_manifest(root).items() if key in MANIFEST_KEYS}
    parts.append(json.dumps(manifest, sort_keys=True, default=str).encode())
    return DataIdentity(_digest(parts), root, sizes, manifest)


# Keys that change how fast or how a run is watched, never what it learns.
NOT_IDENTITY = ("resume", "data.num_workers", "data.persistent_workers", "data.prefetch_factor",
                "log_system_metrics", "log_model", "register_model")
AS_RESOLVED = ("device", "precision", "channels_last")  # 'auto' and null say nothing alone


def config_hash(cfg: DictConfig, resolved: Mapping[str, str] | None = None) -> str:
    """Identity of a configuration: equal for two runs that would train the same thing. Given
    what the job resolved them to (retino.job.execution_params), that stands for AS_RESOLVED."""
    skip = set(NOT_IDENTITY) | (set(AS_RESOLVED) if resolved else set())
    params = {k: v for k, v in params_to_log(cfg).items() if k not in skip} | dict(resolved or {})
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
