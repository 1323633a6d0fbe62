"""A study a reviewer takes home: one zip file that holds the study's evidence, made from the
author's store and read back on another machine.

    study.zip
      bundle.json                 the manifest: format, the bundle's id, and every file's
                                  SHA-256 and size
      study/run.json              the study's parent run: name, times, params, tags, metrics
      study/artifacts/...         its report (results.md, report.html, the tables, figures)
      runs/<run id>/run.json      each run of the study, the same way (its tags hold its config
                                  hash, code version, git commit and data digest)
      runs/<run id>/artifacts/... its composed config, predictions files, report, history;
                                  its weights only with --weights; never its MLflow model; its
                                  activation maps (test photographs under a heat map) and the
                                  page that shows them only with --photographs
      data/<digest>/...           the data's identity: the split CSVs, patients.csv and the
                                  cache manifest (never a photograph)

The bundle's id is the SHA-256 of its files' names and checksums: the same evidence gives the
same id, and a bundle whose file changed after export is refused naming the file. A bundle is
input from someone else: its names, sizes, ids and types are checked before any is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from omegaconf import OmegaConf

from retino.core.errors import BundleError
from retino.core.files import atomic_write
from retino.core.names import (
    ALLOWED_CHANGES_TAG,
    BUNDLE_TAG,
    CAM_FIGURE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DATA_DIGEST_TAG,
    ENSEMBLE_MODEL_DIR,
    ERROR_TAG,
    FAILED,
    FINISHED,
    IMPORTED_FROM_TAG,
    KILLED,
    MODEL_DIR,
    NOTE_TAG,
    PAGE_FILE,
    PARENT_TAG,
    REPRODUCES_TAG,
    STUDY_MEMBER_PREFIX,
    SUPERSEDED_TAG,
    WEIGHTS_FILE,
)
from retino.data.load.digest import data_identity, dataset_files
from retino.data.load.loaders import locate_dataset
from retino.tracking.runs import set_run_tags
from retino.tracking.studies import study_members, tagged_runs
from retino.tracking.transfer import (
    RunContents,
    artifact_names,
    end_copy,
    run_artifacts,
    run_contents,
    write_run,
)

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when a reader of an older format could misread a newer bundle
MANIFEST = "bundle.json"
RUN_FILE = "run.json"
ARTIFACTS = "artifacts"
MAX_MANIFEST_BYTES = 50_000_000
MAX_FILES = 100_000
MAX_BYTES = 50_000_000_000  # a bundle's files together, unpacked
RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: a run's folder in the bundle
DIGEST = re.compile(r"[0-9a-f]{12}")  # a data digest: its folder in the bundle
ENDED = (FINISHED, FAILED, KILLED)
# Tags that place a run in the author's store (its parent, the studies it counted in, what it
# re-ran or was replaced by), not what it was: an imported run gets its own.
PLACE_TAGS = (PARENT_TAG, SUPERSEDED_TAG, REPRODUCES_TAG, BUNDLE_TAG, IMPORTED_FROM_TAG,
              ALLOWED_CHANGES_TAG)
KEPT_MLFLOW_TAGS = (NOTE_TAG,)  # MLflow's own tags are the store's, but for the description


@dataclass(frozen=True)
class Bundle:
    """A bundle read back, every file checked against the manifest, unpacked in folder."""

    bundle_id: str
    folder: Path
    study: RunContents
    runs: list[RunContents]  # oldest first

    def artifacts(self, run: RunContents) -> Path:
        return self.folder / "runs" / run.run_id / ARTIFACTS

    def config(self, run: RunContents) -> Path:
        return self.artifacts(run) / CONFIG_FILE

    def data_files(self, digest: str) -> Path | None:
        """The bundle's copy of the data files behind a digest (None: not a digest)."""
        return self.folder / "data" / digest if DIGEST.fullmatch(digest) else None


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def bundle_id(checksums: dict[str, str]) -> str:
    """The SHA-256 of every file's name and checksum: equal evidence, equal id."""
    listing = "".join(f"{name}\0{sha}\n" for name, sha in sorted(checksums.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


# --- Export -----------------------------------------------------------------------------------


def bundled_artifacts(names: list[str], weights: bool, photographs: bool) -> list[str]:
    """Which of a run's top-level artifacts a bundle holds: never an MLflow model (a copy of
    the code and the weights, and a photograph as its input example) nor last.pt (the
    optimizer's state too); the weights with weights; the activation maps, which show test
    photographs, and the run's page that shows them inline, with photographs."""
    def held(name: str) -> bool:
        if name == MODEL_DIR or name.startswith(ENSEMBLE_MODEL_DIR) or name == CHECKPOINT_FILE:
            return False
        if name == WEIGHTS_FILE:
            return weights
        if name == CAM_FIGURE or (name == PAGE_FILE and CAM_FIGURE in names):
            return photographs
        return True
    return [name for name in names if held(name)]


def _write_run(run: RunContents, folder: Path, weights: bool, photographs: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps(run.as_json(), indent=1, sort_keys=True))
    names = bundled_artifacts(artifact_names(run.run_id), weights, photographs)
    run_artifacts(run.run_id, folder / ARTIFACTS, names)


def _data_folder(run: RunContents, config: Path) -> Path | None:
    """The run's data on this machine, when its digest is still the one the run recorded."""
    try:
        root = locate_dataset(OmegaConf.load(config).data).root
        if data_identity(root).digest == run.tags.get(DATA_DIGEST_TAG):
            return root
    except Exception as err:  # noqa: BLE001 - the bundle is still the study's evidence
        log.warning("The data of run %s cannot be read here (%s): the bundle holds its digest "
                    "alone.", run.run_id, err)
        return None
    log.warning("The data of run %s changed since it ran (its digest is no longer %s): the "
                "bundle holds the digest alone.", run.run_id, run.tags.get(DATA_DIGEST_TAG))
    return None


def _copy_data(root: Path, folder: Path) -> None:
    """What defines the data set, never a photograph."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in dataset_files(root):
        shutil.copy2(path, folder / path.name)


def _gather(parent_id: str, folder: Path, weights: bool, photographs: bool
            ) -> tuple[RunContents, list[str]]:
    """The study and its finished runs written under folder; the ids of runs left out."""
    study = run_contents(parent_id)
    _write_run(study, folder / "study", weights, photographs)
    left_out = []
    for run_id, status in study_members(parent_id):
        if status != FINISHED:
            left_out.append(run_id)
            continue
        run = run_contents(run_id)
        _write_run(run, folder / "runs" / run_id, weights, photographs)
        digest = run.tags.get(DATA_DIGEST_TAG, "")
        target = folder / "data" / digest
        config = folder / "runs" / run_id / ARTIFACTS / CONFIG_FILE
        if DIGEST.fullmatch(digest) and not target.exists() and config.is_file() and \
                (root := _data_folder(run, config)) is not None:
            _copy_data(root, target)
    return study, left_out


def _zip(folder: Path, manifest: dict, out: Path) -> None:
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            for name in sorted(manifest["files"]):
                archive.write(folder / name, name)
    atomic_write(out, write)


@dataclass(frozen=True)
class Exported:
    path: Path
    bundle_id: str
    runs: int
    left_out: list[str]  # runs of the study that did not finish
    size: int  # bytes


def export_bundle(parent_id: str, out: Path, weights: bool = False,
                  photographs: bool = False) -> Exported:
    """The study parent_id (its finished runs, report and data identity) as one zip file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retino-bundle-") as tmp:
        folder = Path(tmp)
        study, left_out = _gather(parent_id, folder, weights, photographs)
        files = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*")
                 if path.is_file()}
        checksums = {name: _sha256(path) for name, path in files.items()}
        manifest = {"format": FORMAT, "bundle_id": bundle_id(checksums),
                    "study": {"run_id": parent_id, "name": study.name,
                              "experiment": study.experiment},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "weights": weights, "photographs": photographs, "left_out": left_out,
                    "files": {name: {"sha256": checksums[name], "bytes": path.stat().st_size}
                              for name, path in sorted(files.items())}}
        _zip(folder, manifest, out)
    runs = sum(1 for name in manifest["files"] if name.startswith("runs/")
               and name.endswith(f"/{RUN_FILE}"))
    return Exported(out, manifest["bundle_id"], runs, left_out, out.stat().st_size)


# --- Reading one back -------------------------------------------------------------------------


def _manifest(archive: zipfile.ZipFile, path: Path) -> dict:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise BundleError(f"{path} is not a retino study bundle: it holds no {MANIFEST}. Make "
                          "one with python -m retino.bundle export <study run id>.") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: its {MANIFEST} is {info.file_size} bytes, not a manifest.")
    manifest = json.loads(archive.read(MANIFEST))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{path} is a bundle of format {found}; this retino reads format "
                          f"{FORMAT}. Check out the retino the author used.")
    files = manifest["files"]
    if not isinstance(files, dict) or len(files) > MAX_FILES or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and type(entry.get("bytes")) is int and entry["bytes"] >= 0
            for entry in files.values()):
        raise BundleError(f"{path}: its {MANIFEST} does not list files as a bundle's does "
                          f"(at most {MAX_FILES}, each with its sha256 and bytes).")
    return manifest


def _safe_name(name: str, path: Path) -> str:
    """A member's name as this reader writes it: relative, normal, inside the bundle."""
    posix = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in posix.parts or "." in name.split("/") \
            or posix.as_posix() != name:
        raise BundleError(f"{path} names a file outside the bundle or not in normal form "
                          f"({name!r}): refused.")
    return name


def _extract(archive: zipfile.ZipFile, name: str, expected: dict, target: Path,
             path: Path) -> None:
    """One file, read no further than its recorded size, and checked against its checksum."""
    limit, sha = int(expected["bytes"]), hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(name) as source, target.open("wb") as sink:
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > limit:
                break
            sha.update(block)
            sink.write(block)
    if written != limit or sha.hexdigest() != expected["sha256"]:
        raise BundleError(f"{path}: {name} was changed after the bundle was made (its checksum "
                          "is not the manifest's). Ask the author for the bundle again; a "
                          "changed file is never reproduced.")


def _checked_files(archive: zipfile.ZipFile, manifest: dict, path: Path,
                   folder: Path) -> list[str]:
    """The manifest's files, once the archive's members were found to be exactly them, the
    bundle's id theirs, and their size within the limits and the free disk."""
    members = [name for name in archive.namelist() if not name.endswith("/")]
    if len(members) != len(set(members)):
        raise BundleError(f"{path} holds two files of one name: refused.")
    listed, present = set(manifest["files"]), set(members) - {MANIFEST}
    if extra := sorted(present - listed):
        raise BundleError(f"{path} holds file(s) its manifest does not list: "
                          f"{', '.join(extra[:5])}. Refused: a bundle holds what was exported.")
    if missing := sorted(listed - present):
        raise BundleError(f"{path} lacks file(s) its manifest lists: {', '.join(missing[:5])}.")
    checksums = {name: manifest["files"][name]["sha256"] for name in listed}
    if bundle_id(checksums) != manifest.get("bundle_id"):
        raise BundleError(f"{path}: its manifest's checksums are not those of bundle "
                          f"{manifest.get('bundle_id')}: the manifest was changed after export.")
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    free = shutil.disk_usage(folder).free
    if total > min(MAX_BYTES, free):
        raise BundleError(f"{path} unpacks to {total / 1e9:.1f} GB; {free / 1e9:.1f} GB are free "
                          f"in {folder} (and a bundle holds at most {MAX_BYTES / 1e9:.0f} GB).")
    return [_safe_name(name, path) for name in sorted(listed)]


def _read_run(run_file: Path, run_id: str, statuses: tuple[str, ...], path: Path) -> RunContents:
    """A run.json whose run is the one its place in the bundle says, ended as expected."""
    run = RunContents.from_json(json.loads(run_file.read_text()))
    if run.run_id != run_id or not RUN_ID.fullmatch(run_id) or run.status not in statuses:
        raise BundleError(f"{path}: {run_file.parent.name}/{RUN_FILE} is not the run its place "
                          f"names (run {run.run_id!r}, {run.status}).")
    return run


def _runs(folder: Path, manifest: dict, path: Path) -> tuple[RunContents, list[RunContents]]:
    """The study's parent run and its runs, oldest first."""
    study = _read_run(folder / "study" / RUN_FILE, str(manifest["study"]["run_id"]), ENDED, path)
    runs = [_read_run(run_file, run_file.parent.name, (FINISHED,), path)
            for run_file in sorted((folder / "runs").glob(f"*/{RUN_FILE}"))]
    return study, sorted(runs, key=lambda run: run.start_time)


def open_bundle(path: Path, folder: Path) -> Bundle:
    """The bundle at path unpacked into folder, each file checked (BundleError naming the first
    that differs from the manifest, or saying what is malformed)."""
    path = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is not a zip file: a study bundle is the .zip that python -m "
                          "retino.bundle export wrote.")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _manifest(archive, path)
            for name in _checked_files(archive, manifest, path, folder):
                _extract(archive, name, manifest["files"][name], folder / name, path)
        study, runs = _runs(folder, manifest, path)
    except BundleError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise BundleError(f"{path} is damaged or not a bundle retino wrote "
                          f"({type(err).__name__}: {err}). Ask the author for it again.") from None
    return Bundle(manifest["bundle_id"], folder, study, runs)


# --- Into a store -----------------------------------------------------------------------------


def imported_tags(tags: dict[str, str]) -> dict[str, str]:
    """What an imported run keeps of its tags: what it was, not where it was (PLACE_TAGS, the
    studies it counted in, MLflow's own)."""
    return {key: value for key, value in tags.items()
            if key not in PLACE_TAGS and not key.startswith(STUDY_MEMBER_PREFIX)
            and (not key.startswith("mlflow.") or key in KEPT_MLFLOW_TAGS)}


def imported_study(bundle: Bundle) -> str | None:
    """The study parent run of an earlier, whole import of this bundle into the current store."""
    studies = set(tagged_runs(bundle.study.experiment, IMPORTED_FROM_TAG, bundle.study.run_id))
    found = tagged_runs(bundle.study.experiment, BUNDLE_TAG, bundle.bundle_id)
    return next((run_id for run_id in found if run_id in studies), None)


def import_bundle(bundle: Bundle) -> tuple[str, bool]:
    """The bundle's study in the current store as ended runs, each tagged with the author's run
    id (imported_from) and the bundle's id; (its parent run id, whether it was imported now,
    not found from an earlier import). The parent ends last: an import cut short ends FAILED,
    never looking whole."""
    if (earlier := imported_study(bundle)) is not None:
        return earlier, False
    study = bundle.study
    parent = write_run(study, imported_tags(study.tags) | {IMPORTED_FROM_TAG: study.run_id},
                       bundle.folder / "study" / ARTIFACTS, end=False)
    try:
        for run in bundle.runs:
            write_run(run, imported_tags(run.tags) | {
                IMPORTED_FROM_TAG: run.run_id, BUNDLE_TAG: bundle.bundle_id, PARENT_TAG: parent},
                bundle.artifacts(run))
    except BaseException as err:
        set_run_tags(parent, {ERROR_TAG: f"import cut short: {err}"[:500]})
        end_copy(parent, study, FAILED)
        raise
    end_copy(parent, study)
    set_run_tags(parent, {BUNDLE_TAG: bundle.bundle_id})  # what imported_study looks for
    return parent, True
