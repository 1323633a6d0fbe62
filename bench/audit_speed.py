"""Benchmark: the data audit's survey (properties and content fingerprint of each photograph) and
its search for copies, on 512 px prepared-cache photographs.

    python bench/audit_speed.py                       # 200 synthetic 512 px cache JPEGs
    python bench/audit_speed.py --photographs data/idrid/center_crop-512px/images
    python bench/audit_speed.py --images 8 --fingerprints 2000     # smoke run

Prints, on the same files, one process:
1. photographs/s of decoding alone (the full 512 px JPEG: the least any look at a photograph
   costs) and of the audit's survey of each, their ratio, and the survey's rate against the
   target of 100 photographs/s per core;
2. the candidate pairs among the timed photographs' own fingerprints (what the pixel check then
   decodes again), and the copy search over N random fingerprints (every pair compared; the
   lab's 35,126 Kaggle photographs by default): seconds, and pairs compared per second;
3. what that makes of an audit of Kaggle's 35,126 photographs on one core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retino.data.prepare.demo import draw_fundus  # noqa: E402
from retino.data.prepare.fingerprints import BITS, bits_from_text, candidate_pairs  # noqa: E402
from retino.data.prepare.survey import Listed, survey_row  # noqa: E402

TARGET = 100.0  # photographs per second per core (the issue's)
KAGGLE = 35_126  # the lab's Kaggle set: 28,100 train + 7,026 test photographs


def synthetic_cache(folder: Path, n: int, size: int = 512) -> list[Path]:
    """Cache-like photographs: a fundus filling a size x size JPEG (q95, as prepare writes)."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        paths.append(folder / f"{k}_{'left' if k % 2 else 'right'}.jpeg")
        cv2.imwrite(str(paths[-1]), draw_fundus(k % 5, size, rng), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def rate(work, paths: list[Path], repeat: int) -> float:
    """Photographs per second of work(path), the best of `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for path in paths:
            work(path)
        best = min(best, time.perf_counter() - started)
    return len(paths) / best


def search_seconds(count: int) -> float:
    """Seconds to compare every pair of `count` random fingerprints."""
    bits = np.random.default_rng(1).random((count, BITS)) < 0.5
    started = time.perf_counter()
    for _ in candidate_pairs(bits):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--photographs", type=Path, default=None,
                        help="a folder of 512 px photographs to time instead of synthetic ones")
    parser.add_argument("--fingerprints", type=int, default=KAGGLE)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as each of prepare's and the audit's processes uses
    with tempfile.TemporaryDirectory() as folder:
        paths = (sorted(args.photographs.glob("*.jp*g"))[: args.images] if args.photographs
                 else synthetic_cache(Path(folder), args.images))
        decode = rate(lambda path: cv2.imread(str(path)), paths, args.repeat)
        surveyed = rate(lambda path: survey_row(Listed("train", path, 0, path.stem)), paths,
                        args.repeat)
        rows = [survey_row(Listed("train", path, 0, path.stem)) for path in paths]
    bits = np.array([bits_from_text(row["fingerprint"]) for row in rows if row["fingerprint"]])
    candidates = sum(1 for _ in candidate_pairs(bits)) if len(bits) else 0
    print(f"{len(paths)} photographs of 512 px, one process:")
    print(f"  decoding alone:  {decode:7.0f} photographs/s")
    print(f"  audit's survey:  {surveyed:7.0f} photographs/s "
          f"({surveyed / decode:.2f} x decoding alone; {surveyed / TARGET:.2f} x the target of "
          f"{TARGET:.0f}/s per core)")
    print(f"  candidate pairs among them (checked on pixels): {candidates} of "
          f"{len(bits) * (len(bits) - 1) // 2}")
    seconds = search_seconds(args.fingerprints)
    pairs = args.fingerprints * (args.fingerprints - 1) / 2
    print(f"copy search over {args.fingerprints} fingerprints: {seconds:.1f} s "
          f"({pairs / max(seconds, 1e-9) / 1e6:.0f} million pairs/s)")
    kaggle = KAGGLE / surveyed + seconds * (KAGGLE / args.fingerprints) ** 2
    print(f"an audit of Kaggle's {KAGGLE} photographs on one core: about {kaggle / 60:.1f} min "
          "(survey and copy search; the shortcut floor's forest adds about a minute)")


if __name__ == "__main__":
    main()
