"""Re-run a logged run from its MLflow run id or its Hydra output folder.

    python -m retino.reproduce RUN_ID [extra overrides ...]
    python -m retino.reproduce outputs/2026-11-28/17-35-16-123456

The logged config (the run's `config.yaml` artifact, or the folder's `.hydra/config.yaml`) is
turned back into one override per leaf, so `run.py` recomposes exactly that config; the new run
is fresh (resume=false) and tagged `reproduces=<run id>`. With deterministic=true on a CPU the
metrics are equal to the original's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from retino import PROJECT_ROOT
from retino.config import flatten_config

REPRODUCES_ENV = "RETINO_REPRODUCES"  # run.py turns it into the tag `reproduces`


def _override_value(value: object) -> str:
    """A value in Hydra's override grammar: null, true/false, numbers, quoted strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_from_config(config_yaml: Path) -> list[str]:
    """One `key=value` per leaf of a logged config; every leaf set, nothing left to defaults."""
    flat = flatten_config(OmegaConf.load(config_yaml))
    return [f"{key}={_override_value(value)}" for key, value in sorted(flat.items())]


def logged_config(source: str) -> tuple[Path, str]:
    """(config.yaml, the run id or folder it came from), from a run id or an output folder."""
    folder = Path(source)
    if folder.is_dir():
        for candidate in (folder / ".hydra" / "config.yaml", folder / "config.yaml"):
            if candidate.is_file():
                return candidate, str(folder.resolve())
        raise SystemExit(f"{folder} holds no .hydra/config.yaml nor config.yaml.")
    from retino.tracking import download_artifact

    return download_artifact(source, "config.yaml"), source


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    config_yaml, origin = logged_config(args[0])
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), *overrides_from_config(config_yaml),
               "resume=false", *args[1:]]
    env = {**os.environ, REPRODUCES_ENV: origin}
    print("Reproducing", origin, flush=True)
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
