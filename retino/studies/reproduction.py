"""Re-running what was logged: a run's config turned back into overrides (a fresh run tagged
reproduces=<run id>), or a whole study as one multirun whose jobs each load one logged config
(an option of a `reproduce` config group). The library behind `python -m retino.reproduce`.

MLflow is imported inside the functions that read the store: run.py imports this module for the
group's name, and its start-up (`--help`, a typo's error) stays fast.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino import PROJECT_ROOT
from retino.config.params import flatten_config, override_value
from retino.config.schema import Config
from retino.core.errors import ConfigError
from retino.core.names import CODE_VERSION_TAG, CONFIG_FILE, REPRODUCES_ENV, STUDY_TAG
from retino.jobs.identity import code_version

log = logging.getLogger(__name__)

REPRODUCE_GROUP = "reproduce"  # the config group of a study's reproduction: one option per run
OPTION_PREFIX = "run_"  # option names never look like numbers to Hydra's parser


def original_run(choice: str | None) -> str | None:
    """The run id behind a `reproduce` group option (None outside a reproduction)."""
    return choice.removeprefix(OPTION_PREFIX) if choice else None


def schema_config(config_yaml: Path) -> DictConfig:
    """A logged config, when every one of its top-level keys is the schema's: a run folder's
    config.yaml is a file anyone may have written, and a `hydra:` key (its callbacks, its
    launcher) or a key the schema lacks would reach Hydra as code to run. ConfigError naming
    the keys refused otherwise."""
    config = OmegaConf.load(config_yaml)
    if not isinstance(config, DictConfig):
        raise ConfigError(f"{config_yaml} is not a run's config (a mapping of its keys).")
    allowed = {field.name for field in fields(Config)}
    refused = sorted(str(key) for key in config if key not in allowed)
    # ${...} would be resolved here, in this process: ${oc.env:SECRET} would become a param
    unresolved = flatten_config(OmegaConf.to_container(config, resolve=False))
    refused += sorted(key for key, value in unresolved.items()
                      if isinstance(value, str) and "${" in value)
    if refused:
        raise ConfigError(f"{config_yaml} holds key(s) that are not retino's config, or values "
                          f"to be resolved (${{...}}): {', '.join(refused)}. A reproduction "
                          "takes the schema's keys and plain values only (`python run.py "
                          "--help` lists them); remove the others from the file, or re-run by "
                          "hand with the overrides you mean.")
    return config


def overrides_from_config(config_yaml: Path) -> list[str]:
    """One `key=value` per leaf of a logged config (schema_config); every leaf set, nothing
    left to defaults."""
    flat = flatten_config(schema_config(config_yaml))
    return [f"{key}={override_value(value)}" for key, value in sorted(flat.items())]


def logged_config(source: str) -> tuple[Path, str]:
    """(config.yaml, the run id or folder it came from), from a run id or an output folder."""
    folder = Path(source)
    if folder.is_dir():
        for candidate in (folder / ".hydra" / CONFIG_FILE, folder / CONFIG_FILE):
            if candidate.is_file():
                return candidate, str(folder.resolve())
        raise SystemExit(f"{folder} holds no .hydra/config.yaml nor config.yaml.")
    from retino.tracking.runs import download_artifact

    return download_artifact(source, CONFIG_FILE), source


def warn_if_code_changed(recorded: str | None, what: str) -> None:
    current = code_version()
    if recorded and recorded != current:
        log.warning("The code changed since %s was run (code version %s, now %s): the numbers "
                    "may differ for that reason. Check out its git_commit to re-run it as it "
                    "was.", what, recorded, current)


def study_option_files(parent_id: str, folder: Path) -> list[str]:
    """Write one option of the `reproduce` group per FINISHED run of the study; their names."""
    from retino.tracking.runs import download_artifact, run_tags
    from retino.tracking.studies import study_members

    (folder / REPRODUCE_GROUP).mkdir(parents=True, exist_ok=True)
    names = []
    for run_id, status in study_members(parent_id):
        if status != "FINISHED":
            log.warning("Run %s of the study ended %s: it has no final config to re-run.",
                        run_id, status)
            continue
        warn_if_code_changed(run_tags(run_id).get(CODE_VERSION_TAG), f"run {run_id}")
        config = schema_config(download_artifact(run_id, CONFIG_FILE))
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


def reproduce(source: str, extra: list[str]) -> int:
    """Re-run a logged run (its id or output folder) or a study (its parent run id), with extra
    overrides on top; run.py's exit status."""
    if not Path(source).is_dir():
        from retino.tracking.runs import run_tags  # here: run.py imports this module, not MLflow

        tags = run_tags(source)
        if STUDY_TAG in tags:  # each of its runs is checked as it is read
            return reproduce_study(source, extra)
        warn_if_code_changed(tags.get(CODE_VERSION_TAG), f"run {source}")
    config_yaml, origin = logged_config(source)
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), *overrides_from_config(config_yaml),
               "resume=false", *extra]
    return _run(command, origin)
