"""A run's identity: its configuration, the version of the code and the data it trained on.

A finished run is reused, and an interrupted one continued, only when config, code and data all
match (retino/jobs/decision.py). The code version hashes the source files that define what a run
computes (the package, the entry point, the configs), so a README edit changes nothing and a copy
outside git still has one. Moving or renaming a module changes it too: runs made before such a
change are retrained by a sweep, not skipped. The data digest lives with the data
(retino/data/load/digest.py); which config keys count is the key-roles table (retino/core/keys.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from retino import PROJECT_ROOT
from retino.config.params import params_to_log
from retino.core.keys import AS_RESOLVED, NOT_IDENTITY
from retino.data.load.digest import short_digest

CODE_FILES = ("retino/**/*.py", "run.py", "conf/**/*.yaml")  # relative to the project root
# Launcher presets decide where and how many jobs run, never what one computes: raising a SLURM
# time limit after a job hit it must not turn its resume into a fresh start.
NOT_CODE = ("conf/hydra/",)


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
    return short_digest(parts)


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


def config_hash(cfg: DictConfig, resolved: Mapping[str, str] | None = None) -> str:
    """Identity of a configuration: equal for two runs that would train the same thing. Given
    what the job resolved them to (retino.training.devices.execution_params), that stands for
    the keys taken as resolved."""
    skip = set(NOT_IDENTITY) | (set(AS_RESOLVED) if resolved else set())
    params = {k: v for k, v in params_to_log(cfg).items() if k not in skip} | dict(resolved or {})
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
