"""Re-running what was logged: a run's config turned back into overrides (a fresh run tagged
reproduces=<run id>), or a whole study as one multirun whose jobs each load one logged config
(an option of a `reproduce` config group). The library behind `python -m retino.reproduce`.

MLflow is imported inside the functions that read the store: run.py imports this module for the
group's name, and its start-up (`--help`, a typo's error) stays fast.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retino import PROJECT_ROOT
from retino.config.params import flatten_config, override_value
from retino.config.schema import Config
from retino.core.errors import BundleError, ConfigError
from retino.core.names import (
    ALLOWED_CHANGES_ENV,
    BUNDLE_ENV,
    CODE_VERSION_TAG,
    CONFIG_FILE,
    DATA_DIGEST_TAG,
    FINISHED,
    GIT_COMMIT_TAG,
    REPRODUCES_ENV,
    REPRODUCES_TAG,
    REPRODUCTION_FILE,
    STUDY_TAG,
)
from retino.evaluation.reproduced import overall_verdict
from retino.jobs.identity import code_version

log = logging.getLogger(__name__)

REPRODUCE_GROUP = "reproduce"  # the config group of a study's reproduction: one option per run
OPTION_PREFIX = "run_"  # option names never look like numbers to Hydra's parser


def original_run(choice: str | None) -> str | None:
    """The run id behind a `reproduce` group option (None outside a reproduction)."""
    return choice.removeprefix(OPTION_PREFIX) if choice else None


def schema_config(config_yaml: Path, shown: str | None = None) -> DictConfig:
    """A logged config, when every one of its top-level keys is the schema's: a run folder's
    config.yaml is a file anyone may have written, and a `hydra:` key (its callbacks, its
    launcher) or a key the schema lacks would reach Hydra as code to run. ConfigError naming
    the keys refused otherwise, and the file as `shown` (a run's, downloaded: not the temporary
    path it was read from)."""
    shown = shown or str(config_yaml)
    config = OmegaConf.load(config_yaml)
    if not isinstance(config, DictConfig):
        raise ConfigError(f"{shown} is not a run's config (a mapping of its keys).")
    allowed = {field.name for field in fields(Config)}
    refused = sorted(str(key) for key in config if key not in allowed)
    # ${...} would be resolved here, in this process: ${oc.env:SECRET} would become a param
    unresolved = flatten_config(OmegaConf.to_container(config, resolve=False))
    refused += sorted(key for key, value in unresolved.items()
                      if isinstance(value, str) and "${" in value)
    if refused:
        raise ConfigError(f"{shown} holds key(s) that are not retino's config, or values "
                          f"to be resolved (${{...}}): {', '.join(refused)}. A reproduction "
                          "takes the schema's keys and plain values only (`python run.py "
                          "--help` lists them); remove the others from the file, or re-run by "
                          "hand with the overrides you mean.")
    return config


def overrides_from_config(config_yaml: Path, shown: str | None = None) -> list[str]:
    """One `key=value` per leaf of a logged config (schema_config); every leaf set, nothing
    left to defaults."""
    flat = flatten_config(schema_config(config_yaml, shown))
    return [f"{key}={override_value(value)}" for key, value in sorted(flat.items())]


def logged_overrides(source: str) -> tuple[list[str], str]:
    """(overrides_from_config of its config.yaml, the run id or folder it came from), from a
    run id or an output folder."""
    folder = Path(source)
    if folder.is_dir():
        for candidate in (folder / ".hydra" / CONFIG_FILE, folder / CONFIG_FILE):
            if candidate.is_file():
                return overrides_from_config(candidate), str(folder.resolve())
        raise SystemExit(f"{folder} holds no .hydra/config.yaml nor config.yaml.")
    from retino.tracking.runs import read_artifact

    shown = f"Run {source}'s {CONFIG_FILE}"
    return read_artifact(source, CONFIG_FILE, partial(overrides_from_config, shown=shown)), source


def warn_if_code_changed(recorded: str | None, what: str) -> None:
    current = code_version()
    if recorded and recorded != current:
        log.warning("The code changed since %s was run (code version %s, now %s): the numbers "
                    "may differ for that reason. Check out its git_commit to re-run it as it "
                    "was.", what, recorded, current)


def study_option_files(parent_id: str, folder: Path) -> list[str]:
    """Write one option of the `reproduce` group per FINISHED run of the study; their names."""
    from retino.tracking.runs import read_artifact, run_tags
    from retino.tracking.studies import study_members

    (folder / REPRODUCE_GROUP).mkdir(parents=True, exist_ok=True)
    names = []
    for run_id, status in study_members(parent_id):
        if status != FINISHED:
            log.warning("Run %s of the study ended %s: it has no final config to re-run.",
                        run_id, status)
            continue
        warn_if_code_changed(run_tags(run_id).get(CODE_VERSION_TAG), f"run {run_id}")
        config = read_artifact(run_id, CONFIG_FILE,
                               partial(schema_config, shown=f"Run {run_id}'s {CONFIG_FILE}"))
        text = "# @package _global_\n" + OmegaConf.to_yaml(config)  # every leaf, at the root
        (folder / REPRODUCE_GROUP / f"{OPTION_PREFIX}{run_id}.yaml").write_text(text)
        names.append(f"{OPTION_PREFIX}{run_id}")
    return names


def _run(command: list[str], origin: str, env: dict[str, str] | None = None) -> int:
    env = {**os.environ, REPRODUCES_ENV: origin, **(env or {})}
    print("Reproducing", origin, flush=True)
    return subprocess.run(command, env=env).returncode


def reproduce_study(parent_id: str, extra: list[str], env: dict[str, str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="retino-reproduce-") as tmp:
        options = study_option_files(parent_id, Path(tmp))
        if not options:
            log.error("Study %s has no FINISHED run to reproduce.", parent_id)
            return 2
        command = [sys.executable, str(PROJECT_ROOT / "run.py"), "-m",
                   f"+{REPRODUCE_GROUP}={','.join(options)}",
                   f"hydra.searchpath=[file://{tmp}]", "resume=false", *extra]
        return _run(command, parent_id, env)


def reproduce(source: str, extra: list[str]) -> int:
    """Re-run a logged run (its id or output folder) or a study (its parent run id), with extra
    overrides on top; run.py's exit status."""
    if not Path(source).is_dir():
        from retino.tracking.runs import run_tags  # here: run.py imports this module, not MLflow

        tags = run_tags(source)
        if STUDY_TAG in tags:  # each of its runs is checked as it is read
            return reproduce_study(source, extra)
        warn_if_code_changed(tags.get(CODE_VERSION_TAG), f"run {source}")
    overrides, origin = logged_overrides(source)
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), *overrides, "resume=false", *extra]
    return _run(command, origin)


# --- A study bundle (python -m retino.reproduce study.zip) -------------------------------------


def code_problem(runs: list) -> str | None:
    """Why this checkout is not the code the bundle's runs ran on; None when it is."""
    current = code_version()
    other = [run for run in runs if run.tags.get(CODE_VERSION_TAG) != current]
    if not other:
        return None
    version, commit = (other[0].tags.get(tag, "unknown") for tag in (CODE_VERSION_TAG,
                                                                      GIT_COMMIT_TAG))
    dirty = (" (-dirty: the author ran it with changes no commit holds; ask for them)"
             if commit.endswith("-dirty") else "")
    return (f"The study ran on code version {version}, git commit {commit}{dirty}; this "
            f"checkout's code version is {current}. To reproduce it as it ran: git checkout "
            f"{commit.removesuffix('-dirty')}, then run this again. To run it on this code "
            "instead: --allow-code-change (the new study records allowed_changes=code).")


def _data_overrides(extra: list[str]) -> list[str]:
    """The command line's data.* overrides, as key=value (a leading + or ++ dropped).
    ConfigError for a data group override: each run is re-run with its own logged data config,
    of which only keys can be changed."""
    if any(item.lstrip("+").startswith("data=") for item in extra):
        raise ConfigError("A study is reproduced with each run's own data config: data=<option> "
                          "cannot replace it. Point at your copy of the data with "
                          "data.root=<folder> (and other data.* keys).")
    return [item.lstrip("+") for item in extra if item.lstrip("+").startswith("data.")]


def _data_config(config_yaml: Path, dotted: list[str]) -> DictConfig:
    """The run's data config with the command line's data.* overrides on top."""
    return OmegaConf.merge(schema_config(config_yaml), OmegaConf.from_dotlist(dotted)).data


def _differing_files(recorded: Path | None, root: Path) -> list[str]:
    """The bundle's data files that the data at root lacks or holds otherwise."""
    if recorded is None or not recorded.is_dir():
        return []
    return [path.name for path in sorted(recorded.iterdir())
            if not (root / path.name).is_file()
            or (root / path.name).read_bytes() != path.read_bytes()]


def data_problem(bundle, extra: list[str]) -> str | None:
    """Why the data the command line points at is not the data the bundle's runs used; None
    when it is. ConfigError when a run's data folder is not on this machine at all."""
    from retino.data.load.digest import data_identity
    from retino.data.load.loaders import locate_dataset

    dotted = _data_overrides(extra)
    pointed = any(item.startswith("data.root=") for item in dotted)
    digests: dict[Path, str] = {}  # a study's runs mostly share one data folder
    for run in bundle.runs:
        data = _data_config(bundle.config(run), dotted)
        if data.root and not pointed and not Path(str(data.root)).expanduser().is_dir():
            raise ConfigError(f"Run {run.name} read its data from {data.root}, which is not a "
                              "folder on this machine: add data.root=<your copy of that data> "
                              "(for the demo set, any new folder: it is generated there).")
        root = locate_dataset(data).root
        if root not in digests:
            digests[root] = data_identity(root).digest
        recorded = run.tags.get(DATA_DIGEST_TAG, "")
        if (digest := digests[root]) != recorded:
            files = _differing_files(bundle.data_files(recorded), root)
            which = f" ({', '.join(files)} differ)" if files else ""
            return (f"The data at {root} is not the data run {run.name} used: its digest is "
                    f"{digest}, the bundle's {recorded}{which}. Point data.root at the "
                    "author's data, or pass --allow-data-change to run on this data (the new "
                    "study records allowed_changes=data).")
    return None


def _new_study(parent_id: str, experiment: str, since_ms: int) -> str | None:
    """The reproduction of parent_id started since since_ms (never an earlier one's)."""
    from retino.tracking.studies import runs_tagged

    found = [run for run in runs_tagged(experiment, REPRODUCES_TAG, parent_id)
             if run.info.start_time >= since_ms]
    return found[-1].info.run_id if found else None


def say_verdicts(parent_id: str, experiment: str, since_ms: int) -> None:
    """Each configuration's verdict, from the reproduction's report (reproduction.csv)."""
    from retino.tracking.runs import read_artifact

    new = _new_study(parent_id, experiment, since_ms)
    if new is None:
        return
    try:
        table = read_artifact(new, REPRODUCTION_FILE, Path.read_text).splitlines()
    except Exception:  # noqa: BLE001 - a study that failed before its report: said above
        return
    verdicts: dict[tuple[str, str], list[str]] = {}
    for row in csv.DictReader(table):
        verdict = row["verdict"].split(" (")[0].split(":")[0]  # less its note
        verdicts.setdefault((row["run"], row["original run"]), []).append(verdict)
    print(f"Reproduction {new} of the bundle's study (imported as {parent_id}):")
    for (run, original), found in verdicts.items():
        print(f"- {run} (the author's run {original}): {overall_verdict(found)}")


def reproduce_bundle(path: Path, extra: list[str], allow_code: bool, allow_data: bool) -> int:
    """Every finished run of a bundle's study again, after checking the code and the data; the
    study is imported first (or found from an earlier import), so the store shows the author's
    runs beside the reproduction and its report compares them."""
    from retino.studies.study_bundle import import_bundle, open_bundle

    with tempfile.TemporaryDirectory(prefix="retino-bundle-") as tmp:
        bundle = open_bundle(path, Path(tmp))
        allowed = []
        checks = (("code", lambda: code_problem(bundle.runs), allow_code),
                  ("data", lambda: data_problem(bundle, extra), allow_data))
        for kind, check, allow in checks:  # in turn: a refused code never generates data
            if (problem := check()) and not allow:
                raise BundleError(problem)
            if problem:
                log.warning("%s", problem)
                allowed.append(kind)
        parent, new = import_bundle(bundle)
        log.info("Bundle %s's study %s: %s as run %s.", bundle.bundle_id, bundle.study.run_id,
                 "imported" if new else "found, imported before,", parent)
        env = {BUNDLE_ENV: bundle.bundle_id} | (
            {ALLOWED_CHANGES_ENV: ",".join(allowed)} if allowed else {})
        started = int(time.time() * 1000)
        status = reproduce_study(parent, extra, env)
        experiment = bundle.study.experiment
    if status == 0:
        say_verdicts(parent, experiment, started)
    return status
