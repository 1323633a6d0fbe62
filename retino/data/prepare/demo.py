"""Synthetic fundus photographs in the Kaggle DR layout, for a demo that runs anywhere.

Each image is a round orange-red fundus on black with vessels, an optic disc and a macula. DR-like
lesions grow in number and kind with the grade: microaneurysms (grade >= 1), haemorrhages and hard
exudates (>= 2, many at 3), new vessels near the disc (4). Counts of adjacent grades overlap and the
camera varies (colour, brightness, position, blur, noise), so the task is learnable, not trivial.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from retino.core.files import atomic_write_text, csv_text
from retino.data.layout import (
    IMAGE_SUFFIX,
    NOT_GRADABLE,
    REPORT,
    csv_paths,
    read_lines,
    write_split_csvs,
)
from retino.data.prepare.quality import assess

log = logging.getLogger(__name__)

# Bump when a change to the drawing code changes the images: old demo folders are then not reused.
# 2: a few test photographs no grader could read; 3: two eyes a patient; 4: two filed twice
GENERATOR_VERSION = 4

# Share of each grade 0-4 in the Kaggle DR training set (grade 0 is the majority).
KAGGLE_GRADE_SHARES = (0.735, 0.070, 0.151, 0.025, 0.020)

# Lesion counts per grade as (low, high) ranges, inclusive; adjacent grades overlap on purpose.
LESIONS_BY_GRADE = {
    # grade: (microaneurysms, haemorrhages, exudates, new-vessel tufts)
    0: ((0, 1), (0, 0), (0, 0), (0, 0)),
    1: ((2, 6), (0, 1), (0, 0), (0, 0)),
    2: ((4, 10), (1, 4), (1, 5), (0, 0)),
    3: ((6, 14), (4, 10), (3, 10), (0, 0)),
    4: ((6, 14), (3, 9), (2, 8), (2, 4)),
}


def grade_counts(n_images: int, shares: tuple[float, ...] = KAGGLE_GRADE_SHARES) -> list[int]:
    """Split n_images over grades in proportion to shares; every grade gets at least one image
    when n_images allows, and the counts sum to n_images (largest remainder)."""
    floor = 1 if n_images >= len(shares) else 0
    rest = n_images - floor * len(shares)
    exact = [rest * share / sum(shares) for share in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda g: exact[g] - counts[g], reverse=True)
    for grade in by_remainder[: rest - sum(counts)]:
        counts[grade] += 1
    return [c + floor for c in counts]


FELLOW_EYE_SPREAD = 0.6  # grades apart, roughly, of a patient's two eyes


def _patients(n_images: int, split: str,
              rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """(names, grades) of the split's photographs: the Kaggle shares of grades, paired into
    patients whose two eyes have like grades (DR affects both eyes, the worse one decides
    referral), named `<patient>_<left|right>` as in Kaggle's layout (an odd count leaves one
    patient a single eye)."""
    grades = np.repeat(np.arange(len(KAGGLE_GRADE_SHARES)), grade_counts(n_images))
    # Neighbours in grade order, jittered, become fellow eyes; the patients are then shuffled.
    order = np.argsort(grades + rng.normal(0, FELLOW_EYE_SPREAD, n_images), kind="stable")
    pairs = [order[i:i + 2] for i in range(0, n_images, 2)]
    names, paired = [], []
    for patient, p in enumerate(rng.permutation(len(pairs))):
        eyes = rng.permutation(pairs[p])
        for eye, image in zip(("left", "right"), eyes, strict=False):
            names.append(f"demo_{split}_{patient:05d}_{eye}")
            paired.append(grades[image])
    return names, np.array(paired)


def _random_point_in_disc(rng: np.random.Generator, center, radius: float) -> tuple[int, int]:
    angle, dist = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform(0.0, 1.0))
    return int(center[0] + dist * np.cos(angle)), int(center[1] + dist * np.sin(angle))


def _draw_background(img: np.ndarray, rng: np.random.Generator, center,
                     radius: float) -> np.ndarray:
    """Orange-red fundus disc with a darker rim (vignetting), in BGR; returns the disc mask."""
    size = img.shape[0]
    base = np.array([rng.uniform(20, 60), rng.uniform(60, 110), rng.uniform(170, 235)])  # B, G, R
    yy, xx = np.mgrid[0:size, 0:size]
    dist = np.hypot(xx - center[0], yy - center[1]) / radius
    shade = 1.0 - rng.uniform(0.25, 0.5) * np.clip(dist, 0, 1) ** 2  # (H, W)
    inside = dist <= 1.0
    img[inside] = (base[None, :] * shade[inside][:, None]).clip(0, 255)
    return inside


def _draw_anatomy(img, rng, center, radius, scale) -> tuple[int, int]:
    """Vessels fanning out of the optic disc, the disc itself and the darker macula."""
    side = rng.choice([-1, 1])  # left or right eye: the disc sits on the nasal side
    disc = (int(center[0] + side * radius * 0.45), int(center[1] + rng.normal(0, radius * 0.05)))
    vessel_colour = (25, 30, 120)
    for _ in range(rng.integers(5, 8)):
        angle = rng.uniform(0, 2 * np.pi)
        pts = [disc]
        for step in range(1, 6):
            angle += rng.normal(0, 0.35)
            r = radius * 0.18 * step
            pts.append((int(disc[0] + r * np.cos(angle)), int(disc[1] + r * np.sin(angle))))
        thickness = max(1, int(round(scale * rng.uniform(1.0, 2.0))))
        cv2.polylines(img, [np.array(pts, np.int32)], False, vessel_colour, thickness, cv2.LINE_AA)
    cv2.circle(img, disc, int(radius * 0.13), (120, 200, 245), -1, cv2.LINE_AA)
    macula = (int(center[0] - side * radius * 0.15), int(center[1]))
    cv2.circle(img, macula, int(radius * 0.12), (20, 45, 120), -1, cv2.LINE_AA)
    return disc


def _draw_lesions(img, rng, grade, center, radius, disc, scale) -> None:
    """Microaneurysms, haemorrhages, hard exudates and new vessels, as many as the grade asks."""
    (ma, haem, exud, neo) = (rng.integers(lo, hi + 1) for lo, hi in LESIONS_BY_GRADE[grade])
    for _ in range(ma):  # tiny dark-red dots
        p = _random_point_in_disc(rng, center, radius * 0.85)
        cv2.circle(img, p, max(1, int(round(1.6 * scale))), (10, 10, 90), -1, cv2.LINE_AA)
    for _ in range(haem):  # larger dark blotches ("dot and blot")
        p = _random_point_in_disc(rng, center, radius * 0.8)
        axes = (int(rng.uniform(2.5, 5.0) * scale), int(rng.uniform(2.0, 4.0) * scale))
        angle = rng.uniform(0, 180)
        cv2.ellipse(img, p, axes, angle, 0, 360, (5, 5, 70), -1, cv2.LINE_AA)
    for _ in range(exud):  # bright yellow waxy spots
        p = _random_point_in_disc(rng, center, radius * 0.7)
        cv2.circle(img, p, max(1, int(round(rng.uniform(1.5, 3.0) * scale))), (90, 225, 245), -1)
    for _ in range(neo):  # fine tortuous vessel tufts near the disc
        start = _random_point_in_disc(rng, disc, radius * 0.3)
        pts = np.cumsum(rng.normal(0, 3.5 * scale, size=(8, 2)), axis=0) + np.array(start)
        cv2.polylines(img, [pts.astype(np.int32)], False, (40, 40, 200), 1, cv2.LINE_AA)


def draw_fundus(grade: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic fundus photograph of the given grade: (size, size, 3) uint8, BGR."""
    img = np.zeros((size, size, 3), np.uint8)
    scale = size / 128  # lesion sizes are tuned for 128 px and scale with the image
    center = (size / 2 + rng.normal(0, size * 0.02), size / 2 + rng.normal(0, size * 0.02))
    radius = size * rng.uniform(0.42, 0.48)
    inside = _draw_background(img, rng, center, radius)  # (H, W) bool
    disc = _draw_anatomy(img, rng, center, radius, scale)
    _draw_lesions(img, rng, grade, center, radius, disc, scale)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9) * scale)
    noise = rng.normal(0, rng.uniform(2, 6), img.shape)
    # The camera sees nothing outside the disc: vessels end at its rim, the surround stays black.
    return np.where(inside[..., None], (img + noise).clip(0, 255), 0).astype(np.uint8)


UNGRADABLE_SHARE = 0.02  # of the test split: photographs a grader could not read
SPOILED = ("too dark", "out of focus", "over-exposed", "a blank frame", "no fundus")


def spoil(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A photograph as a bad capture leaves it (BGR)."""
    size = image.shape[0]
    if kind == "too dark":
        return (image * 0.08).astype(np.uint8)
    if kind == "out of focus":
        return cv2.GaussianBlur(image, (0, 0), size / 20)
    if kind == "over-exposed":
        lit = image.max(axis=2, keepdims=True) > 10  # the disc, not its black surround
        washed = np.clip(image.astype(np.float32) * 3 + 190, 0, 255)
        return np.where(lit, washed, 0).astype(np.uint8)
    if kind == "a blank frame":
        return np.full_like(image, 235)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, image.shape[:2]).astype(np.float32), (0, 0), 3)
    return cv2.cvtColor(cv2.normalize(texture, None, 40, 200, cv2.NORM_MINMAX).astype(np.uint8),
                        cv2.COLOR_GRAY2BGR)  # a grey photograph of something else


def _write_split(folder: Path, split: str, n_images: int, size: int, rng) -> list[str]:
    """The split's photographs and CSVs; returns its names. The test split's last
    UNGRADABLE_SHARE are spoiled captures (SPOILED, in turn)."""
    names, grades = _patients(n_images, split, rng)
    spoiled = round(UNGRADABLE_SHARE * n_images) if split == "test" else 0
    for i, (name, grade) in enumerate(zip(names, grades, strict=True)):
        image = draw_fundus(int(grade), size, rng)
        if i >= n_images - spoiled:
            image = spoil(image, SPOILED[(i - n_images + spoiled) % len(SPOILED)], rng)
        cv2.imwrite(str(folder / "images" / f"{name}{IMAGE_SUFFIX}"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_split_csvs(folder, split, names, [int(g) for g in grades])
    return names


def plant_copies(folder: Path, rng: np.random.Generator) -> list[str]:
    """What public sets hold and the audit finds (python -m retino.audit): a photograph filed
    twice, here a patient's left eye saved again (resized, re-encoded) as their right eye, for
    one patient whose eyes share a grade and one whose eyes do not (a conflicting grade). The
    counts and names stay as they were. Returns the overwritten names."""
    names, labels = (read_lines(path) for path in csv_paths(folder, "train"))
    grade = dict(zip(names, map(int, labels), strict=True))
    pairs = [(left, left[: -len("left")] + "right") for left in names
             if left.endswith("_left") and left[: -len("left")] + "right" in grade]
    alike = [pair for pair in pairs if grade[pair[0]] == grade[pair[1]]]
    unlike = [pair for pair in pairs if grade[pair[0]] != grade[pair[1]]]
    planted = [group[rng.integers(len(group))] for group in (alike, unlike) if group]
    for left, right in planted:
        original = cv2.imread(str(folder / "images" / f"{left}{IMAGE_SUFFIX}"))
        h, w = original.shape[:2]
        cv2.imwrite(str(folder / "images" / f"{right}{IMAGE_SUFFIX}"),
                    cv2.resize(original, (w * 9 // 10, h * 9 // 10), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_JPEG_QUALITY, 80])
    return [right for _, right in planted]


def write_quality_report(folder: Path, split: str, names: list[str]) -> None:
    """report.csv as prepare writes it: the photographs of the split judged not gradable, by
    the same assessment prepare and predict use."""
    rows = []
    for name in names:
        verdict = assess(cv2.imread(str(folder / "images" / f"{name}{IMAGE_SUFFIX}")), bgr=True)
        if not verdict.gradable:
            rows.append((split, name, NOT_GRADABLE, verdict.reason))
    atomic_write_text(folder / REPORT, csv_text([("split", "name", "action", "reason"), *rows]))


def demo_folder_name(train_size: int, test_size: int, image_size: int, seed: int) -> str:
    """Every setting that changes the images is in the name, so a cache is never reused wrongly."""
    return f"demo-v{GENERATOR_VERSION}-train{train_size}-test{test_size}-{image_size}px-seed{seed}"


def ensure_demo_dataset(cache_dir: Path, train_size: int, test_size: int,
                        image_size: int, seed: int) -> Path:
    """Generate the demo set once (deterministic from the seed) and return its root folder."""
    root = Path(cache_dir) / demo_folder_name(train_size, test_size, image_size, seed)
    if (root / "test_label.csv").exists():
        return root
    log.info("Generating demo fundus data (%d train, %d test, %d px) in %s",
             train_size, test_size, image_size, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp folder and rename: an interrupted generation never leaves half a dataset.
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        (staging / "images").mkdir()
        rng = np.random.default_rng(seed)
        _write_split(staging, "train", train_size, image_size, rng)
        plant_copies(staging, rng)
        write_quality_report(staging, "test", _write_split(staging, "test", test_size,
                                                           image_size, rng))
        os.replace(staging, root)
    except OSError:
        if not (root / "test_label.csv").exists():  # a parallel job may have won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
