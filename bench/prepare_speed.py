"""Benchmark: retino's image preparation against the lab's.

    python bench/prepare_speed.py                 # 24 Kaggle-sized JPEGs (3888x2592, q90)
    python bench/prepare_speed.py --images 4 --width 640 --height 480 --size 64   # smoke run
    python bench/prepare_speed.py --width 4288 --height 2848 \
        --photographs "../shared/idrid-grading/1. Original Images/a. Training Set"
        # real photographs (IDRiD's, shipped at 1024 px), brought back to their camera's size

Prints, on the same generated files:
1. images/s per core of the lab's method (full decode, area resize, center crop, one process)
   and of retino's center_crop (reduced-scale decode, then the same), their ratio, and the mean
   absolute difference between the two outputs in grey levels;
2. what the quality assessment (retino/data/prepare/quality.py) adds: to prepare's time per image
   (its share; target at most 10 %), and in milliseconds to a full-size photograph that
   retino.predict has decoded;
3. retino's images/s on 1 process and on every core, and the scaling between them.
Training from a prepared cache is measured by bench/train_speed.py --data <cache>.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retino.data.prepare.cache import ImageTask, cache_dir, prepare_images  # noqa: E402
from retino.data.prepare.demo import draw_fundus  # noqa: E402
from retino.data.prepare.preprocess import METHODS, decode_photograph, prepare_image  # noqa: E402
from retino.data.prepare.public_sets import IMAGE_SUFFIXES  # noqa: E402
from retino.data.prepare.quality import assess  # noqa: E402


def make_kaggle_like_jpegs(folder: Path, n: int, width: int, height: int,
                           noise: float = 3.0) -> list[Path]:
    """Fundus photographs at camera size: drawn small, enlarged, with sensor noise (grey levels;
    more noise, larger files: 3 gives about 0.9 MB, 10 about 2.4 MB at 3888x2592), JPEG q90."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = draw_fundus(i % 5, height // 4, rng)
        disc = cv2.resize(small, (height, height), interpolation=cv2.INTER_CUBIC)
        frame = np.zeros((height, width, 3), np.uint8)
        left = (width - height) // 2
        frame[:, left : left + height] = disc
        noisy = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i}_{'left' if i % 2 else 'right'}.jpeg")
        cv2.imwrite(str(paths[-1]), noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def real_jpegs(folder: Path, source: Path, n: int, width: int, height: int) -> list[Path]:
    """The first n real photographs of source at width x height (enlarged where smaller, as a
    set shipped downscaled is brought back to its camera's size), JPEG q90. Enlarged
    photographs are smoother than the camera's, so their files are smaller: the size printed
    says which."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for original in sorted(p for p in source.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)[:n]:
        photograph = cv2.imread(str(original), cv2.IMREAD_COLOR)
        if photograph.shape[:2] != (height, width):
            photograph = cv2.resize(photograph, (width, height), interpolation=cv2.INTER_CUBIC)
        paths.append(folder / f"{original.stem}.jpeg")
        cv2.imwrite(str(paths[-1]), photograph, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        sys.exit(f"--photographs {source}: no photographs there ({suffixes}).")
    return paths


def lab_method(path: Path, size: int) -> np.ndarray:
    """What the lab ran: decode the whole photograph, resize it (shorter side to size, area
    interpolation), then cut the central square."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def retino_method(path: Path, size: int) -> np.ndarray:
    return prepare_image(path, size, "center_crop")[0]


def rates(methods: dict, paths: list[Path], size: int, rounds: int = 3) -> dict:
    """Best images/s of each method over interleaved rounds (robust to a busy machine)."""
    best = dict.fromkeys(methods, 0.0)
    outputs = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            started = time.perf_counter()
            outputs[name] = [fn(p, size) for p in paths]
            best[name] = max(best[name], len(paths) / (time.perf_counter() - started))
    return best, outputs


def compare_methods(paths: list[Path], size: int) -> None:
    cv2.setNumThreads(1)  # per-core numbers: one thread each
    best, out = rates({"lab": lab_method, "retino": retino_method}, paths, size)
    lab_rate, ours_rate, lab_out, ours_out = best["lab"], best["retino"], out["lab"], out["retino"]
    diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean()
                    for a, b in zip(lab_out, ours_out, strict=True)])
    print(f"lab    center_crop {size}px: {lab_rate:7.2f} images/s per core")
    print(f"retino center_crop {size}px: {ours_rate:7.2f} images/s per core")
    print(f"speed-up per core: {ours_rate / lab_rate:.2f}x   (target >= 3x)")
    print(f"mean |retino - lab|: {diff:.3f} grey levels   (target < 1)")


def prepared_and_assessed(path: Path, size: int) -> np.ndarray:
    """What prepare does per image with --quality keep: decode, assess, crop."""
    photograph, _ = decode_photograph(path, size, "center_crop")
    assess(photograph, bgr=True)
    return METHODS["center_crop"](photograph, size)


def quality_cost(paths: list[Path], size: int) -> None:
    cv2.setNumThreads(1)
    best, _ = rates({"without": retino_method, "with": prepared_and_assessed}, paths, size,
                    rounds=7)  # a difference of ~2 ms in ~18: more rounds, less noise
    added = best["without"] / best["with"] - 1
    print(f"quality assessment in prepare: {1000 / best['without']:.1f} ms -> "
          f"{1000 / best['with']:.1f} ms per image, +{100 * added:.1f} %   (target <= 10 %)")
    full = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    started = time.perf_counter()
    for image in full:
        assess(image, bgr=True)
    each = 1000 * (time.perf_counter() - started) / len(full)
    print(f"quality assessment of a decoded full-size photograph (retino.predict): {each:.1f} ms")


def measure_scaling(paths: list[Path], size: int, out_root: Path, repeat: int) -> Path:
    """The real parallel command path; each file is prepared `repeat` times (under different
    output names) so that the run is long enough for a steady rate."""
    cores = os.cpu_count() or 1
    rates = {}
    for workers in sorted({1, cores}):
        out = cache_dir(out_root / f"w{workers}", "center_crop", size)
        (out / "images").mkdir(parents=True)
        jobs = [ImageTask("train", f"{p.stem}_{r}", 0, p, out / "images" / f"{p.stem}_{r}.jpeg")
                for r in range(repeat) for p in paths]
        started = time.perf_counter()
        prepare_images(jobs, size, "center_crop", force=True, workers=workers)
        rates[workers] = len(jobs) / (time.perf_counter() - started)
        print(f"retino, {workers} process(es): {rates[workers]:7.2f} images/s  ({len(jobs)} "
              "images, worker start-up included)")
    if cores > 1:
        scaling = rates[cores] / rates[1]
        print(f"scaling 1 -> {cores} cores: {scaling:.2f}x  ({100 * scaling / cores:.0f}% of "
              "linear)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--width", type=int, default=3888)
    parser.add_argument("--height", type=int, default=2592)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--noise", type=float, default=3.0,
                        help="sensor noise; sets the file size (3: ~0.9 MB, 10: ~2.4 MB)")
    parser.add_argument("--repeat", type=int, default=8,
                        help="times each file is prepared in the scaling run")
    parser.add_argument("--photographs", type=Path, default=None,
                        help="a folder of real photographs to use instead of generated ones "
                             "(brought to --width x --height)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.photographs:
            paths = real_jpegs(Path(tmp) / "src", args.photographs, args.images, args.width,
                               args.height)
        else:
            paths = make_kaggle_like_jpegs(Path(tmp) / "src", args.images, args.width,
                                           args.height, args.noise)
        mb = np.mean([p.stat().st_size for p in paths]) / 1e6
        kind = f"real photographs from {args.photographs}" if args.photographs else "generated"
        print(f"{len(paths)} JPEGs of {args.width}x{args.height} ({mb:.1f} MB each on average; "
              f"{kind})")
        compare_methods(paths, args.size)
        quality_cost(paths, args.size)
        measure_scaling(paths, args.size, Path(tmp) / "caches", args.repeat)


if __name__ == "__main__":
    main()
