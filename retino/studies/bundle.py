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
                                  its weights only with --weights; never its MLflow model
      data/<digest>/...           the data's identity: the split CSVs, patients.csv and the
                                  cache manifest (never a photograph)

The bundle's id is a digest of its files' names and checksums: the same evidence gives the same
id, and a bundle whose file changed after export is refused naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from omegaconf import OmegaConf

from retino.core.errors import BundleError
from retino.core.files import atomic_write
from retino.core.names import (
    BUNDLE_TAG,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DATA_DIGEST_TAG,
    ENSEMBLE_MODEL_DIR,
    IMPORTED_FROM_TAG,
    MODEL_DIR,
    PARENT_TAG,
    WEIGHTS_FILE,
)
from retino.data.digest import data_identity, short_digest
from retino.data.layout import MANIFEST_FILE, PATIENTS_FILE, SPLITS, csv_paths
from retino.data.loaders import locate_dataset
from retino.tracking.runs import set_run_tags
from retino.tracking.studies import study_members, tagged_runs
from retino.tracking.transfer import RunContents, run_artifacts, run_contents, write_run

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when a reader of an older format could misread a newer bundle
MANIFEST = "bundle.json"
RUN_FILE = "run.json"
ARTIFACTS = "artifacts"
# The MLflow model holds a copy of the code and the weights; last.pt adds the optimizer's state.
NEVER_BUNDLED = (MODEL_DIR, ENSEMBLE_MODEL_DIR, CHECKPOINT_FILE)
MAX_MANIFEST_BYTES = 50_000_000


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

    def data_files(self, digest: str) -> Path:
        return self.folder / "data" / digest


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def bundle_id(checksums: dict[str, str]) -> str:
    """The digest of every file's name and checksum: equal evidence, equal id."""
    return short_digest([f"{name}\0{sha}".encode() for name, sha in sorted(checksums.items())])


# --- Export -----------------------------------------------------------------------------------


def _write_run(run: RunContents, folder: Path, leave_out: tuple[str, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps(run.as_json(), indent=1, sort_keys=True))
    run_artifacts(run.run_id, folder / ARTIFACTS, leave_out)


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
    """What defines the data set (data_identity reads the same files), never a photograph."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [path for split in SPLITS for path in csv_paths(root, split)]
    paths += [root / PATIENTS_FILE, root / MANIFEST_FILE]
    for path in paths:
        if path.is_file():
            shutil.copy2(path, folder / path.name)


def _gather(parent_id: str, folder: Path, weights: bool) -> tuple[RunContents, list[str]]:
    """The study and its finished runs written under folder; the ids of runs left out."""
    leave_out = NEVER_BUNDLED + (() if weights else (WEIGHTS_FILE,))
    study = run_contents(parent_id)
    _write_run(study, folder / "study", leave_out)
    left_out = []
    for run_id, status in study_members(parent_id):
        if status != "FINISHED":
            left_out.append(run_id)
            continue
        run = run_contents(run_id)
        _write_run(run, folder / "runs" / run_id, leave_out)
        digest = run.tags.get(DATA_DIGEST_TAG, "")
        target = folder / "data" / digest
        config = folder / "runs" / run_id / ARTIFACTS / CONFIG_FILE
        if digest and not target.exists() and config.is_file() and \
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


def export_bundle(parent_id: str, out: Path, weights: bool = False) -> Exported:
    """The study parent_id (its finished runs, report and data identity) as one zip file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retino-bundle-") as tmp:
        folder = Path(tmp)
        study, left_out = _gather(parent_id, folder, weights)
        files = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*")
                 if path.is_file()}
        checksums = {name: _sha256(path) for name, path in files.items()}
        manifest = {"format": FORMAT, "bundle_id": bundle_id(checksums),
                    "study": {"run_id": parent_id, "name": study.name,
                              "experiment": study.experiment},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "weights": weights, "left_out": left_out,
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
    try:
        manifest = json.loads(archive.read(MANIFEST))
        files = manifest["files"]
        assert isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise BundleError(f"{path}: its {MANIFEST} cannot be read as a bundle's manifest.") \
            from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is a bundle of format {manifest.get('format')}; this retino "
                          f"reads format {FORMAT}. Check out the retino the author used.")
    return manifest


def _safe_name(name: str, path: Path) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise BundleError(f"{path} names a file outside the bundle ({name!r}): refused.")
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


def _checked_files(archive: zipfile.ZipFile, manifest: dict, path: Path) -> Iterator[str]:
    listed = set(manifest["files"])
    present = {name for name in archive.namelist() if not name.endswith("/")} - {MANIFEST}
    if extra := sorted(present - listed):
        raise BundleError(f"{path} holds file(s) its manifest does not list: "
                          f"{', '.join(extra[:5])}. Refused: a bundle holds what was exported.")
    if missing := sorted(listed - present):
        raise BundleError(f"{path} lacks file(s) its manifest lists: {', '.join(missing[:5])}.")
    checksums = {name: manifest["files"][name]["sha256"] for name in listed}
    if bundle_id(checksums) != manifest.get("bundle_id"):
        raise BundleError(f"{path}: its manifest's checksums are not those of bundle "
                          f"{manifest.get('bundle_id')}: the manifest was changed after export.")
    yield from (_safe_name(name, path) for name in sorted(listed))


def open_bundle(path: Path, folder: Path) -> Bundle:
    """The bundle at path unpacked into folder, each file checked (BundleError naming the first
    that differs from the manifest)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is not a zip file: a study bundle is the .zip that python -m "
                          "retino.bundle export wrote.")
    with zipfile.ZipFile(path) as archive:
        manifest = _manifest(archive, path)
        for name in _checked_files(archive, manifest, path):
            _extract(archive, name, manifest["files"][name], folder / name, path)
    study = RunContents.from_json(json.loads((folder / "study" / RUN_FILE).read_text()))
    runs = [RunContents.from_json(json.loads(run_file.read_text()))
            for run_file in sorted((folder / "runs").glob(f"*/{RUN_FILE}"))]
    return Bundle(manifest["bundle_id"], folder, study, sorted(runs, key=lambda r: r.start_time))


# --- Into a store -----------------------------------------------------------------------------


def imported_study(bundle: Bundle) -> str | None:
    """The study parent run of an earlier import of this bundle into the current store."""
    found = tagged_runs(bundle.study.experiment, BUNDLE_TAG, bundle.bundle_id)
    parents = [run_id for run_id in found if run_id in
               tagged_runs(bundle.study.experiment, IMPORTED_FROM_TAG, bundle.study.run_id)]
    return parents[0] if parents else None


def import_bundle(bundle: Bundle) -> tuple[str, bool]:
    """The bundle's study in the current store as ended runs, each tagged with the author's run
    id (imported_from) and the bundle's id; (its parent run id, whether it was imported now,
    not found from an earlier import)."""
    if (earlier := imported_study(bundle)) is not None:
        return earlier, False
    origin = {IMPORTED_FROM_TAG: bundle.study.run_id}
    parent = write_run(bundle.study, origin, bundle.folder / "study" / ARTIFACTS)
    for run in bundle.runs:
        write_run(run, {IMPORTED_FROM_TAG: run.run_id, BUNDLE_TAG: bundle.bundle_id,
                        PARENT_TAG: parent}, bundle.artifacts(run))
    # Last: an import cut short is never taken for a whole one (imported_study finds this tag).
    set_run_tags(parent, {BUNDLE_TAG: bundle.bundle_id})
    return parent, True
