"""Re-run a logged run, or a whole study, from what was logged.

    python -m retino.reproduce RUN_ID [extra overrides ...]
    python -m retino.reproduce outputs/2026-11-28/17-35-16-123456
    python -m retino.reproduce STUDY_PARENT_RUN_ID [extra overrides ...]

A run: its logged config (the `config.yaml` artifact, or the folder's `.hydra/config.yaml`) is
turned back into one override per leaf, so `run.py` recomposes exactly that config; the new run
is fresh (resume=false) and tagged `reproduces=<run id>`. With deterministic=true on a CPU the
metrics are equal to the original's.

A study (a sweep's parent run): every FINISHED run of it is re-run, in one multirun whose jobs
each load one logged config (written as an option of a `reproduce` config group); the new study's
parent is tagged `reproduces=<study id>`, each job `reproduces=<its original run>`, and the new
study's report sets original and reproduced metrics side by side.

Either way, a warning says when the code version now differs from the one recorded.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from retino import PROJECT_ROOT
from retino.config import flatten_config

log = logging.getLogger(__name__)

REPRODUCES_ENV = "RETINO_REPRODUCES"  # run.py and the study callback turn it into a tag
REPRODUCE_GROUP = "reproduce"  # the config group of a study's reproduction: one option per run
OPTION_PREFIX = "run_"  # option names never look like numbers to Hydra's parser


def original_run(choice: str | None) -> str | None:
    """The run id behind a `reproduce` group option (None outside a reproduction)."""
    return choice.removeprefix(OPTION_PREFIX) if choice else None


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


def warn_if_code_changed(recorded: str | None, what: str) -> None:
    from retino.identity import code_version

    current = code_version()
    if recorded and recorded != current:
        log.warning("The code changed since %s was run (code version %s, now %s): the numbers "
                    "may differ for that reason. Check out its git_commit to re-run it as it "
                    "was.", what, recorded, current)


def study_option_files(parent_id: str, folder: Path) -> list[str]:
    """Write one option of the `reproduce` group per FINISHED run of the study; their names."""
    from retino.tracking import download_artifact, run_tags, study_members

    (folder / REPRODUCE_GROUP).mkdir(parents=True, exist_ok=True)
    names = []
    for run_id, status in study_members(parent_id):
        if status != "FINISHED":
            log.warning("Run %s of the study ended %s: it has no final config to re-run.",
                        run_id, status)
            continue
        warn_if_code_changed(run_tags(run_id).get("code_version"), f"run {run_id}")
        config = OmegaConf.load(download_artifact(run_id, "config.yaml"))
        text = "# @package _global_\n" + OmegaConf.to_yaml(config)  # every leaf, at the root
        (folder / REPRODUCE_GROUP / f"{OPTION_PREFIX}{run_id}.yaml").write_text(text)
        names.append(f"{OPTION_PREFIX}{run_id}")
    return names


def _run(command: list[str], origin: str) -> int:
    env = {**os.environ, REPRODUCES_ENV: origin}
    print("Reproducing", origin, flush=True)
    return subprocess.run(command, env=env).returncode


def reproduce_study(parent_id: str, extra: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="retino-reproduce-") as tmp:
        options = study_option_files(parent_id, Path(tmp))
        if not options:
            log.error("Study %s has no FINISHED run to reproduce.", parent_id)
            return 2
        command = [sys.executable, str(PROJECT_ROOT / "run.py"), "-m",
                   f"+{REPRODUCE_GROUP}={','.join(options)}",
                   f"hydra.searchpath=[file://{tmp}]", "resume=false", *extra]
        return _run(command, parent_id)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    if not Path(args[0]).is_dir():
        from retino.tracking import run_tags

        tags = run_tags(args[0])
        if "study" in tags:  # each of its runs is checked as it is read
            return reproduce_study(args[0], args[1:])
        warn_if_code_changed(tags.get("code_version"), f"run {args[0]}")
    config_yaml, origin = logged_config(args[0])
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), *overrides_from_config(config_yaml),
               "resume=false", *args[1:]]
    return _run(command, origin)


if __name__ == "__main__":
    raise SystemExit(main())
