"""Prepare a photograph source (Kaggle DR, a public set) into a cache in the lab's layout, once,
on every core.

    python -m retino.data.prepare SOURCE OUT [--method center_crop] [--size 512] [--workers N]

SOURCE holds either Kaggle's `trainLabels.csv` and `train/` folder (a patient-level split is
made), or the lab's four CSVs and an image folder (used as they are). The prepared cache is
written to OUT/<method>-<size>px/ : images/<name>.jpeg, the four CSVs, manifest.json and
report.csv (every file that was skipped or converted, with the reason). Each image is written
under a temporary name and renamed, so an interrupted run leaves no truncated file; running the
command again prepares only what is missing (--force rebuilds). originals.csv keeps each original
file's size and format for the audit, which then runs on the cache (python -m retino.audit;
--no-audit skips it): its report is in OUT/<method>-<size>px/audit/. --duplicates drop leaves one
photograph of each group of copies in the splits. Exit status: 0 when every image was prepared,
1 when some were skipped (see report.csv), 2 when nothing could be done.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from retino.config.params import override_value
from retino.core.errors import DataError
from retino.core.files import (
    atomic_write_bytes,
    atomic_write_text,
    clear_interrupted_writes,
    csv_text,
)
from retino.core.locks import try_lock
from retino.core.names import AUDIT_DIR, SURVEY_FILE
from retino.data.layout import (
    DUPLICATE,
    IMAGE_SUFFIX,
    MANIFEST_FILE,
    NOT_GRADABLE,
    ORIGINALS_FILE,
    REPORT,
    SPLITS,
    patient_of,
    read_manifest,
    read_split_index,
    write_patients_csv,
    write_split_csvs,
)
from retino.data.prepare.preprocess import (
    METHOD_VERSIONS,
    METHODS,
    BadImage,
    decode_photograph,
    encode_jpeg,
    jpeg_is_complete,
)
from retino.data.prepare.properties import write_originals
from retino.data.prepare.quality import assess
from retino.data.prepare.sources import (
    SOURCE_FORMATS,
    SPLIT_MODES,
    Source,
    read_source,
    unlabelled_images,
)
from retino.data.prepare.survey import (
    find_duplicates,
    listed_photographs,
    read_originals,
    survey_reusing,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTask:
    split: str
    name: str
    grade: int
    src: Path
    dst: Path


@dataclass(frozen=True)
class Outcome:
    job: ImageTask
    status: str  # "prepared", "converted", "existing", "skipped" or "dropped" (not gradable)
    reason: str = ""
    not_gradable: str = ""  # why the photograph is not gradable ("" when it is, or unassessed)


QUALITY_ACTIONS = ("keep", "drop", "off")  # --quality: mark, leave out, or do not assess
DROPPED = "dropped"  # report.csv's action for one left out of the splits (--quality drop)


def cache_dir(out_root: Path, method: str, size: int) -> Path:
    """Each method and size has its own folder: a change of either never reuses wrong files."""
    return Path(out_root) / f"{method}-{size}px"


def image_tasks(source: Source, out: Path) -> list[ImageTask]:
    return [ImageTask(split, name, grade, source.files[name],
                      out / "images" / f"{name}{IMAGE_SUFFIX}")
            for split, rows in source.splits.items() for name, grade in rows]


def _write_jpeg(path: Path, image) -> None:
    """Encode in memory, write a temporary file, rename: never a truncated JPEG on disk."""
    atomic_write_bytes(path, encode_jpeg(image))


def _not_gradable(photograph, quality: str) -> str:
    """Why the (BGR) photograph is not gradable; "" when it is, or with --quality off."""
    if quality == "off":
        return ""
    verdict = assess(photograph, bgr=True)
    return "" if verdict.gradable else verdict.reason


def _judged(job: ImageTask, status: str, note: str, why: str, quality: str) -> Outcome:
    """The outcome of an image whose photograph is not gradable for `why` (or is, for ""):
    left out with --quality drop, kept and marked otherwise."""
    if why and quality == "drop":
        return Outcome(job, DROPPED, note, why)
    return Outcome(job, status, note, why)


def _assessed_existing(job: ImageTask, size: int, method: str, quality: str) -> Outcome:
    """An image prepared before without a quality verdict (an earlier run with --quality off,
    or from before the assessment existed): its photograph assessed now, nothing rewritten."""
    try:
        photograph, _ = decode_photograph(job.src, size, method)
    except Exception:  # noqa: BLE001 - it was prepared once: keep it as it is
        return Outcome(job, "existing")
    return _judged(job, "existing", "", _not_gradable(photograph, quality), quality)


def _intact(cached: Path) -> bool:
    """Whether a cached image can be kept: there, not empty, and a whole JPEG (a re-run used to
    keep a corrupt one for ever; one read of its end tells)."""
    return cached.is_file() and cached.stat().st_size > 0 and jpeg_is_complete(cached)


def prepare_one(job: ImageTask, size: int, method: str, force: bool,
                quality: str = "keep", assess_existing: bool = False) -> Outcome:
    """Prepare one image, its quality assessed on the decoded photograph (quality: keep marks
    a photograph that is not gradable, drop leaves it out, off does not assess); every failure
    becomes an Outcome, never an exception. A file that cannot be decoded is a bad file
    (skipped), not a photograph that is not gradable. assess_existing: images already there
    were prepared without a verdict, and get one now."""
    if not force and _intact(job.dst):
        if assess_existing and quality != "off":
            return _assessed_existing(job, size, method, quality)
        return Outcome(job, "existing")
    if not job.src.is_file():
        return Outcome(job, "skipped", f"file not found: {job.src}")
    try:
        photograph, note = decode_photograph(job.src, size, method)
        why = _not_gradable(photograph, quality)
        if not (why and quality == "drop"):  # a dropped photograph is not written
            _write_jpeg(job.dst, METHODS[method](photograph, size))
    except BadImage as err:
        return Outcome(job, "skipped", str(err))
    except Exception as err:  # noqa: BLE001 - one odd file must not stop 35,000 others
        return Outcome(job, "skipped", f"unexpected {type(err).__name__}: {err}")
    return _judged(job, "converted" if note else "prepared", note or "", why, quality)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one image per process: OpenCV's own threads would oversubscribe


def _prepare_image_star(args: tuple) -> Outcome:
    return prepare_one(*args)


def prepare_images(jobs: list[ImageTask], size: int, method: str, force: bool,
                   workers: int, quality: str = "keep",
                   assess_existing: bool = False) -> list[Outcome]:
    """All jobs over `workers` processes, with a progress bar and ETA."""
    args = [(job, size, method, force, quality, assess_existing) for job in jobs]
    bar = dict(total=len(jobs), unit="img", desc=f"{method} {size}px", smoothing=0.05)
    if workers <= 1:
        _worker_init()
        return [prepare_one(*a) for a in tqdm(args, **bar)]
    # spawn, not fork: a forked child can deadlock on locks held by the parent's threads
    # (OpenCV, OpenMP); the workers import only this light module.
    with get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        chunks = max(1, min(16, len(jobs) // (workers * 8)))
        return list(tqdm(pool.imap_unordered(_prepare_image_star, args, chunksize=chunks), **bar))


def _file_digest(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def identical_across_splits(source: Source) -> list[tuple[str, str, str, str]]:
    """(split, name, other split, other name) for each source file whose bytes are those of a
    file in another split (the public sets hold such duplicates under different names: the
    same photograph then sits in training and test). Only files of equal size are read, so a
    set without duplicates costs one stat per file."""
    by_size: dict[int, list[tuple[str, str]]] = {}
    for split, rows in source.splits.items():
        for name, _ in rows:
            path = source.files.get(name)
            if path is not None and path.is_file():
                by_size.setdefault(path.stat().st_size, []).append((split, name))
    found = []
    for group in by_size.values():
        if len({split for split, _ in group}) < 2:
            continue
        first_of: dict[str, tuple[str, str]] = {}
        for split, name in group:
            digest = _file_digest(source.files[name])
            other = first_of.setdefault(digest, (split, name))
            if other[0] != split:
                found.append((split, name, *other))
    return sorted(found)


def _write_report(path: Path, rejected: list, outcomes: list[Outcome],
                  ignored: list[tuple[str, str]],
                  identical: list[tuple[str, str, str, str]] = ()) -> None:
    rows = [(split, name, "skipped", reason) for split, name, reason in rejected]
    rows += [("-", name, "ignored", reason) for name, reason in ignored]
    rows += [(split, name, "identical", f"the same bytes as {other} ({other_split})")
             for split, name, other_split, other in identical]
    rows += [(o.job.split, o.job.name, o.status, o.reason) for o in outcomes
             if o.status in {"skipped", "converted"}]
    rows += [(o.job.split, o.job.name, DROPPED if o.status == DROPPED else NOT_GRADABLE,
              o.not_gradable) for o in outcomes if o.not_gradable]
    atomic_write_text(path, csv_text([("split", "name", "action", "reason"), *sorted(rows)]))


def write_index(out: Path, outcomes: list[Outcome], rejected: list, manifest: dict,
                ignored: list[tuple[str, str]],
                identical: list[tuple[str, str, str, str]] = (),
                patients: dict[str, str] | None = None) -> dict:
    """The four CSVs list only the images on disk, and patients.csv whose eye each is where
    the names do not say; report and manifest say what was left out, and which files of one
    split are byte-identical to a file of another."""
    on_disk = [o for o in outcomes if o.status not in {"skipped", DROPPED}]
    for split in SPLITS:
        rows = sorted((o.job.name, o.job.grade) for o in on_disk if o.job.split == split)
        write_split_csvs(out, split, [n for n, _ in rows], [g for _, g in rows])
    known = patients or {}
    write_patients_csv(out, {o.job.name: known.get(o.job.name) or patient_of(o.job.name)
                             for o in on_disk})
    counts = Counter(o.status for o in outcomes)
    manifest["counts"] = {
        "train": sum(o.job.split == "train" for o in on_disk),
        "test": sum(o.job.split == "test" for o in on_disk),
        "skipped": counts["skipped"] + len(rejected), "converted": counts["converted"],
        "ignored": len(ignored),
    }
    manifest["identical_across_splits"] = len(identical)
    reasons = Counter(o.not_gradable for o in outcomes if o.not_gradable)
    manifest["quality"] = {"mode": manifest.get("quality", {}).get("mode", "keep"),
                           "not_gradable": sum(reasons.values()),
                           "dropped": counts[DROPPED], "reasons": dict(sorted(reasons.items()))}
    _write_report(out / REPORT, rejected, outcomes, ignored, identical)
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest["counts"]


def _previous_notes(out: Path) -> dict[str, dict[str, str]]:
    """A re-run keeps the report of images prepared before: name -> {action: reason} of their
    conversions and quality verdicts."""
    report = out / REPORT
    if not report.is_file():
        return {}
    notes: dict[str, dict[str, str]] = {}
    with report.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["action"] in {"converted", NOT_GRADABLE, DROPPED}:
                notes.setdefault(row["name"], {})[row["action"]] = row["reason"]
    return notes


def _carry_notes(outcomes: list[Outcome], notes: dict[str, dict[str, str]],
                 quality: str) -> list[Outcome]:
    """Images already there keep their notes; with --quality drop, one noted not gradable is
    left out now (its file stays, the splits no longer list it)."""
    carried = []
    for o in outcomes:
        note = notes.get(o.job.name, {}) if o.status == "existing" else {}
        why = note.get(NOT_GRADABLE) or note.get(DROPPED, "") if quality != "off" else ""
        if note:
            o = _judged(o.job, "converted" if "converted" in note else o.status,
                        note.get("converted", ""), why, quality)
        carried.append(o)
    return carried


def split_digest(splits: dict[str, list[tuple[str, int]]]) -> str:
    """Digest of which image is in which split with which grade (the split CSVs' content)."""
    rows = sorted((split, name, grade) for split, items in splits.items() for name, grade in items)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _check_same_cache(out: Path, new: dict, force: bool) -> None:
    """Never mix images of two sources (or methods, sizes) in one cache folder, and never
    re-split a cache in place: runs that read it would be skipped or resumed across two
    different test sets."""
    manifest = out / MANIFEST_FILE
    if force or not manifest.is_file():
        return
    old = json.loads(manifest.read_text())
    fix = "Choose another output folder, or pass --force to rebuild it."
    if old.get("method_version", 1) != new["method_version"]:
        raise DataError(f"{out} holds images prepared by version {old.get('method_version', 1)} "
                        f"of {new['method']}, and this code prepares version "
                        f"{new['method_version']}: one cache must not mix them. {fix}")
    if any(old.get(key) != new[key] for key in ("source", "method", "size")):
        raise DataError(f"{out} holds images prepared from {old.get('source')} "
                        f"({old.get('method')}, {old.get('size')} px), not from "
                        f"{new['source']}. {fix}")
    same_split = (old["split_digest"] == new["split_digest"] if "split_digest" in old
                  else old.get("split") == new["split"])
    if not same_split:
        raise DataError(f"{out} was split differently ({old.get('split')}) from what this "
                        f"command would write ({new['split']}; or the labels in "
                        f"{new['source']} changed). Re-splitting it in place would change the "
                        f"train and test sets under the runs that used it. {fix}")
    if old.get("duplicates", "keep") != new["duplicates"]:
        raise DataError(f"{out} was prepared with --duplicates {old.get('duplicates', 'keep')}, "
                        f"not {new['duplicates']}: that would change its train and test sets "
                        f"under the runs that used it. {fix}")


@contextmanager
def _sole_writer(out: Path) -> Iterator[None]:
    """One preparation at a time per cache folder: two at once would interleave their CSVs."""
    out.mkdir(parents=True, exist_ok=True)
    handle = try_lock(out / ".prepare.lock")
    if handle is None:
        raise DataError(f"Another preparation is writing into {out} right now: wait for it to "
                        "end, or choose another output folder.")
    try:
        yield
    finally:
        handle.close()


def prepare_cache(source: Path, out_root: Path, method: str, size: int, workers: int,
                  force: bool = False, seed: int = 0, image_dir: Path | None = None,
                  fmt: str = "auto", split: str = "patient",
                  patients: Path | None = None, quality: str = "keep",
                  duplicates: str = "keep") -> dict:
    """Build (or finish) the cache of one method and size; returns the manifest. patients: a
    file saying whose eye each image is (retino.data.prepare.public_sets.read_exam_list);
    duplicates: drop leaves one photograph of each group of copies in the splits (drop_copies)."""
    source = Path(source).resolve()
    if method not in METHODS:
        raise DataError(f"Unknown method {method!r}; valid: {', '.join(METHODS)}.")
    if quality not in QUALITY_ACTIONS:
        raise DataError(f"Unknown quality mode {quality!r}; valid: {', '.join(QUALITY_ACTIONS)}.")
    found = read_source(source, seed, fmt, split, image_dir, patients)
    ignored = unlabelled_images(found)
    out = cache_dir(out_root, method, size)
    manifest = {"source": str(source), "format": found.format, "method": method, "size": size,
                "method_version": METHOD_VERSIONS[method],
                "split": found.how, "split_seed": seed if found.how.startswith("by ") else None,
                "split_digest": split_digest(found.splits),
                "patients": found.patients_from or "read from the image names",
                "quality": {"mode": quality}, "duplicates": duplicates}
    started = time.perf_counter()
    with _sole_writer(out):
        _check_same_cache(out, manifest, force)
        (out / "images").mkdir(parents=True, exist_ok=True)
        clear_interrupted_writes(out / "images")  # a killed run's
        notes = {} if force else _previous_notes(out)
        # Images already there have verdicts in report.csv only if the run that made them
        # assessed them; otherwise they are assessed now (their files are kept).
        before = read_manifest(out).get("quality", {}).get("mode")
        prepared = prepare_images(image_tasks(found, out), size, method, force, workers,
                                  quality, assess_existing=before not in QUALITY_ACTIONS[:2])
        outcomes = _carry_notes(prepared, notes, quality)
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        identical = identical_across_splits(found)
        counts = write_index(out, outcomes, found.rejected, manifest, ignored, identical,
                             found.patients)
        write_originals(out / ORIGINALS_FILE,
                        {o.job.name: o.job.src for o in outcomes
                         if o.status not in {"skipped", DROPPED}})
        if duplicates == "drop":
            counts = drop_copies(out, workers, manifest)
    elapsed = time.perf_counter() - started
    done = sum(o.status in {"prepared", "converted"} for o in outcomes)
    log.info("%s: %d train + %d test images ready (%d prepared now in %.0fs, %d already there), "
             "%d skipped, %d converted; report: %s", out, counts["train"], counts["test"], done,
             elapsed, sum(o.status == "existing" for o in outcomes), counts["skipped"],
             counts["converted"], out / REPORT)
    if judged := manifest["quality"]["not_gradable"]:
        log.warning("%d photograph(s) are not gradable (%s); %s. See report.csv.", judged,
                    ", ".join(f"{n} {why}" for why, n in manifest["quality"]["reasons"].items()),
                    "left out of the splits" if quality == "drop" else "kept and marked")
    if identical:
        log.warning("%d file(s) are byte-identical to a file in another split (the same "
                    "photograph under two names: listed as 'identical' in %s). They are kept; "
                    "a test image that is also a training image flatters the test metrics, so "
                    "remove one of each pair from the source's labels.", len(identical),
                    out / REPORT)
    return manifest


DUPLICATE_MODES = ("keep", "drop")  # --duplicates


def drop_copies(out: Path, workers: int, manifest: dict) -> dict[str, int]:
    """Leave one photograph of each group of copies (the same photograph under several
    names, found from its pixels: retino.data.prepare.survey) in the cache's splits, a training one
    where the group has one, so that no copy stays in the test split; the others are listed in
    report.csv as duplicates. A group whose grades conflict keeps its kept photograph's grade
    (the audit lists the conflict). The survey is kept for the audit. Returns the new
    counts."""
    index = {split: read_split_index(out, out / "images", split) for split in SPLITS}
    table = survey_reusing(listed_photographs(index), out / AUDIT_DIR / SURVEY_FILE, workers,
                           originals=read_originals(out))
    (out / AUDIT_DIR).mkdir(exist_ok=True)
    atomic_write_text(out / AUDIT_DIR / SURVEY_FILE, table.to_csv(index=False))
    dropped = []
    for group in find_duplicates(table).groups:
        members = table.iloc[group]
        keeper = members.iloc[int(np.argmax((members["split"] == "train").to_numpy()))]
        dropped += [(row["split"], row["name"], DUPLICATE,
                     f"the same photograph as {keeper['name']} ({keeper['split']})")
                    for _, row in members.iterrows() if row["name"] != keeper["name"]]
    gone = {name for _, name, _, _ in dropped}
    for split, part in index.items():
        kept = [(path.stem, grade) for path, grade in zip(part.paths, part.grades, strict=True)
                if path.stem not in gone]
        write_split_csvs(out, split, [n for n, _ in kept], [g for _, g in kept])
    _add_to_report(out / REPORT, dropped)
    manifest["duplicates_dropped"] = len(dropped)
    manifest["counts"] |= {split: len(index[split]) - sum(s == split for s, *_ in dropped)
                           for split in SPLITS}
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    if dropped:
        log.warning("Left %d copies out of the splits (--duplicates drop), one photograph of "
                    "each group kept; listed as '%s' in %s.", len(dropped), DUPLICATE,
                    out / REPORT)
    return manifest["counts"]


def _add_to_report(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with path.open(newline="") as f:
        kept = [tuple(row) for row in csv.reader(f)]
    atomic_write_text(path, csv_text([kept[0], *sorted({*kept[1:], *rows})]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retino.data.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with trainLabels.csv + train/, the "
                        "lab's four CSVs + images/, or an APTOS, Messidor-2 or IDRiD download")
    parser.add_argument("out", type=Path,
                        help="cache root; the cache goes to OUT/<method>-<size>px")
    parser.add_argument("--method", choices=sorted(METHODS), default="center_crop")
    parser.add_argument("--size", type=int, default=512, help="output side in pixels (512)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes (default: every core)")
    parser.add_argument("--images", type=Path, default=None,
                        help="image folder (default: SOURCE/train or SOURCE/images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    parser.add_argument("--format", choices=SOURCE_FORMATS, default="auto",
                        help="the source's layout (default: detected from its files)")
    parser.add_argument("--split", choices=SPLIT_MODES, default="patient",
                        help="patient: train/test by patient (a set's own split where it has "
                        "one); none: every image a test image, for external validation")
    parser.add_argument("--patients", type=Path, default=None,
                        help="whose eye each image is, for sets whose names do not say: a CSV "
                        "with the columns image,patient, or one row per examination naming its "
                        "images (Messidor-2's pair list is found by itself)")
    parser.add_argument("--quality", choices=QUALITY_ACTIONS, default="keep",
                        help="photographs that are not gradable "
                        "(retino/data/prepare/quality.py): keep and mark them in report.csv "
                        "(default), drop them from the splits, or off (do not assess)")
    parser.add_argument("--duplicates", choices=DUPLICATE_MODES, default="keep",
                        help="copies of one photograph under several names (found from their "
                        "pixels): keep them (the audit lists them; a run refuses a test copy of "
                        "a training photograph), or drop all but one of each group")
    parser.add_argument("--audit", action=argparse.BooleanOptionalAction, default=True,
                        help="audit the prepared cache (python -m retino.audit: copies across "
                        "splits, conflicting grades, the score without the retina); on by "
                        "default")
    parser.add_argument("--force", action="store_true", help="rebuild images already prepared")
    args = parser.parse_args(argv)
    if args.size < 32 or args.workers < 1:
        parser.error("--size must be at least 32 and --workers at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        manifest = prepare_cache(args.source, args.out, args.method, args.size, args.workers,
                                 args.force, args.seed, args.images, args.format, args.split,
                                 args.patients, args.quality, args.duplicates)
    except (DataError, OSError, ValueError) as err:  # unreadable source, bad CSV, no permission
        log.error("%s", err)
        return 2
    counts = manifest["counts"]
    if (counts["train"] == 0 and args.split != "none") or counts["test"] == 0:
        log.error("No usable %s images: see %s.", "train" if counts["train"] == 0 else "test",
                  Path(cache_dir(args.out, args.method, args.size)) / REPORT)
        return 2
    if args.audit:
        audit_cache(cache_dir(args.out, args.method, args.size), args.workers)
    return 1 if counts["skipped"] else 0


def audit_cache(cache: Path, workers: int) -> None:
    """python -m retino.audit on the prepared cache, in a child process: the audit's floor and
    report belong to the evaluation stage, which this stage does not import. A failed audit
    is said, and leaves the cache as it is."""
    command = [sys.executable, "-m", "retino.audit", "data=kaggle",
               f"data.root={override_value(str(cache))}", "--workers", str(workers)]
    log.info("Auditing %s: %s", cache, " ".join(command[1:]))
    if subprocess.run(command, check=False).returncode != 0:
        log.warning("The audit of %s failed (above); the cache is ready. Run it again with: "
                    "python -m %s", cache, " ".join(command[2:]))


if __name__ == "__main__":
    sys.exit(main())
