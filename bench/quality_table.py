"""The measurements behind the quality defaults (docs/quality.md): every measure of
retino/data/prepare/quality.py on a real fundus photograph (scikit-image's retina.jpg, in its wheel)
placed and spoiled as cameras and captures do, on photographs that are no fundus, and on the
real photographs of several cameras in ../shared/realfundus-dev/ when that folder is there.

    python bench/quality_table.py [--real DIR]

Prints one row per photograph: the verdict, the reason and each measure, then the time per
photograph; for the real set, per source, how many of the photographs a grader reads it graded
and how many of those a grader cannot read it flagged. A default threshold belongs between the
worst photograph that must pass and the best one that must fail. Exits 1 when a placed or
spoiled photograph gets the other verdict, or when the real set falls below the targets
(grade 14 of its 15 readable photographs, flag 7 of its 8 unreadable ones).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retino.data.prepare.quality import assess  # noqa: E402

REAL_SET = Path(__file__).resolve().parents[2] / "shared" / "realfundus-dev"
MEASURES = ("disc_fraction", "lit_corners", "rim_fit", "red_ratio", "red_blue_ratio",
            "dark_fraction", "bright_fraction", "stray_light", "sharpness", "contrast")


def framed(image: np.ndarray, height: int, width: int, disc: int) -> np.ndarray:
    """image resized to disc x disc, centred in a black height x width frame (cut where the
    disc is larger than the frame): how cameras place the disc."""
    out = np.zeros((height, width, 3), np.uint8)
    small = cv2.resize(image, (disc, disc), interpolation=cv2.INTER_AREA)
    top, left = (height - disc) // 2, (width - disc) // 2
    src_y, src_x = max(0, -top), max(0, -left)
    h, w = min(disc, height), min(disc, width)
    out[max(0, top):max(0, top) + h, max(0, left):max(0, left) + w] = \
        small[src_y:src_y + h, src_x:src_x + w]
    return out


def gain(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                        cv2.IMREAD_COLOR)


def on_white(image: np.ndarray) -> np.ndarray:
    """image with its dark surround made white: a crop pasted on a page."""
    out = image.copy()
    out[image.max(axis=2) <= 10] = 255
    return out


def flare(image: np.ndarray) -> np.ndarray:
    """A white-blue veil of stray light from the optics over one side of the field, strongest
    at the rim and fading to nothing over a third of the frame."""
    h, w = image.shape[:2]
    strength = np.clip(1.0 - np.arange(w)[::-1] / (w / 3), 0, 1) * 0.9
    veil = np.array([190, 200, 255], np.float32)
    alpha = strength[None, :, None]
    out = image * (1 - alpha) + veil * alpha
    out[image.max(axis=2) <= 10] = 0  # the camera's surround stays dark
    return out.clip(0, 255).astype(np.uint8)


def photographs() -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (RGB photograph, whether it should be graded)."""
    retina = skimage.data.retina()
    grey = cv2.cvtColor(retina, cv2.COLOR_RGB2GRAY)
    return {
        "retina.jpg as shipped (1411 px)": (retina, True),
        "3888 x 2592 frame, black surround": (framed(retina, 2592, 3888, 2460), True),
        "small disc in a 3000 x 2000 frame": (framed(retina, 2000, 3000, 1200), True),
        "landscape, disc cut top and bottom": (framed(retina, 1200, 1800, 1500), True),
        "disc cut on every side, corners lit": (framed(retina, 1000, 1400, 1650), True),
        "disc on a white ground": (on_white(framed(retina, 700, 900, 640)), True),
        "flare over a third of the field": (flare(retina), False),
        "thumbnail, 300 px": (cv2.resize(retina, (300, 300), interpolation=cv2.INTER_AREA),
                              True),
        "dimmed to 25 %": (gain(retina, 0.25), True),
        "dimmed to 12 %": (gain(retina, 0.12), False),
        "brighter x 2.5": (gain(retina, 2.5), True),
        "brighter x 4 (washed out)": (gain(retina, 4.0), False),
        "blur sigma 4 px": (cv2.GaussianBlur(retina, (0, 0), 4), True),
        "blur sigma 8 px": (cv2.GaussianBlur(retina, (0, 0), 8), False),
        "JPEG quality 30": (jpeg(retina, 30), True),
        "sensor noise (sd 8)": (np.clip(retina + np.random.default_rng(0).normal(0, 8,
                                                                               retina.shape),
                                        0, 255).astype(np.uint8), True),
        "blank white frame": (np.full((600, 800, 3), 255, np.uint8), False),
        "black frame": (np.zeros((600, 800, 3), np.uint8), False),
        "a person (astronaut.png)": (skimage.data.astronaut(), False),
        "grey text (text.png)": (np.repeat(skimage.data.text()[..., None], 3, 2), False),
        "a cup (coffee.png)": (skimage.data.coffee(), False),
        "green-dominant fundus": (retina[..., [1, 0, 2]], False),
        "grey fundus": (np.repeat(grey[..., None], 3, 2), False),
    }


def _row(name: str, image: np.ndarray, expected: bool, bgr: bool = False) -> bool:
    """Prints the photograph's row; whether its verdict is the expected one."""
    started = time.perf_counter()
    quality = assess(image, bgr=bgr)
    ms = 1000 * (time.perf_counter() - started)
    mark = "" if quality.gradable == expected else "   <- expected the other verdict"
    print(f"{name[:38]:38s} {str(quality.gradable):6s} {quality.reason[:30]:30s} "
          + " ".join(f"{getattr(quality, n):11.3f}" for n in MEASURES) + f" {ms:6.1f}{mark}")
    return quality.gradable == expected


def _header() -> None:
    print(f"{'photograph':38s} {'graded':6s} {'reason':30s} "
          + " ".join(f"{n[:11]:>11s}" for n in MEASURES) + "     ms")


def real_set(folder: Path) -> bool:
    """The real photographs' rows and, per source (the file name's first word), how many it
    graded of those a grader reads and flagged of those a grader cannot; whether the set
    meets the targets."""
    with open(folder / "PROVENANCE.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = defaultdict(lambda: [0, 0, 0, 0])  # graded, readable, flagged, unreadable
    _header()
    for row in rows:
        readable = row["label"] == "gradable"
        image = cv2.imread(str(folder / row["file"]), cv2.IMREAD_COLOR)
        right = _row(Path(row["file"]).name, image, readable, bgr=True)
        tally = counts[Path(row["file"]).name.split("_")[0]]
        tally[0 if readable else 2] += right
        tally[1 if readable else 3] += 1
    print(f"\n{'source':12s} {'graded':>14s} {'flagged':>14s}")
    for source, (graded, readable, flagged, unreadable) in sorted(counts.items()):
        print(f"{source:12s} {graded:>5d} of {readable:<5d} {flagged:>5d} of {unreadable:<5d}")
    graded, readable, flagged, unreadable = (sum(t[i] for t in counts.values()) for i in range(4))
    print(f"{'all':12s} {graded:>5d} of {readable:<5d} {flagged:>5d} of {unreadable:<5d}"
          f"   (targets: {readable - 1} of {readable} graded, {unreadable - 1} of {unreadable}"
          " flagged)")
    return graded >= readable - 1 and flagged >= unreadable - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=REAL_SET,
                        help="a folder of real photographs with a PROVENANCE.csv "
                             "(file, label: gradable or ungradable); default: %(default)s")
    args = parser.parse_args()
    _header()
    wrong = sum(not _row(name, image, expected)
                for name, (image, expected) in photographs().items())
    print(f"{wrong} verdict(s) differ from what a grader would say")
    meets = True
    if (args.real / "PROVENANCE.csv").is_file():
        print(f"\nReal photographs of several cameras: {args.real}")
        meets = real_set(args.real)
    else:
        print(f"\n(no real photographs at {args.real}: pass --real DIR to include some)")
    return 1 if wrong or not meets else 0


if __name__ == "__main__":
    sys.exit(main())
