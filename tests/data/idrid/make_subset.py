"""Writes this folder's subset of IDRiD's disease-grading training set (CC BY 4.0; see README.md)
from a copy of the set in IDRiD's own layout:

    python tests/data/idrid/make_subset.py ../shared/idrid-grading

Four photographs of each grade, the lowest-numbered ones that are not byte-identical to another
photograph of the set and that the quality check grades at this size, downscaled to 384 px wide
(JPEG quality 90), with their rows of IDRiD's label file as IDRiD wrote them (trailing empty
columns included).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from retino.data.quality import assess  # noqa: E402

IMAGES = Path("1. Original Images") / "a. Training Set"
LABELS = Path("2. Groundtruths") / "a. IDRiD_Disease Grading_Training Labels.csv"
PER_GRADE, WIDTH = 4, 384


def _repeated(folder: Path) -> set[str]:
    """Names of photographs whose bytes another photograph of the set repeats."""
    seen: dict[str, str] = {}
    repeated: set[str] = set()
    for path in sorted(folder.glob("*.jpg")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            repeated |= {seen[digest], path.stem}
        seen.setdefault(digest, path.stem)
    return repeated


def main(source: Path) -> int:
    header, *rows = (source / LABELS).read_text().splitlines()
    repeated = _repeated(source / IMAGES)
    chosen: dict[int, list[str]] = {grade: [] for grade in range(5)}
    kept = []
    for row in rows:
        name, grade = row.split(",")[0], int(row.split(",")[1])
        if len(chosen[grade]) == PER_GRADE or name in repeated:
            continue
        photograph = cv2.imread(str(source / IMAGES / f"{name}.jpg"), cv2.IMREAD_COLOR)
        height = round(photograph.shape[0] * WIDTH / photograph.shape[1])
        small = cv2.resize(photograph, (WIDTH, height), interpolation=cv2.INTER_AREA)
        if not assess(small, bgr=True).gradable:
            continue
        (HERE / IMAGES).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(HERE / IMAGES / f"{name}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
        chosen[grade].append(name)
        kept.append(row)
    (HERE / LABELS).parent.mkdir(parents=True, exist_ok=True)
    (HERE / LABELS).write_text("\n".join([header, *kept]) + "\n")
    print({grade: names for grade, names in chosen.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
