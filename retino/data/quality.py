"""Is a photograph gradable? The third answer of every clinical DR system beside "refer" and "do
not refer": insufficient quality. Measured on the photograph as the camera wrote it, on a CPU
in a few milliseconds, with no download:

- the field of view: the bright fundus disc on its dark surround (the largest lit region,
  its share of the frame, and whether the frame's corners are dark, as a fundus camera's are);
- colour: a colour fundus is red-dominant inside its field of view;
- exposure: the share of the field of view that is too dark to read, or clipped white;
- focus: the variance of the Laplacian of the green channel (where vessels have the most
  contrast) inside the field of view, at a fixed disc size, over the green channel's variance,
  so that neither the camera's resolution nor the exposure moves it;
- detail: a field of view with almost no variation is a blank frame.

The first test a photograph fails is its reason. The thresholds are `quality.*` in the config;
docs/quality.md says how their defaults were chosen, and on what.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from retino.config.schema import QualityConfig

WORK_SIDE = 768  # every measure is taken on a copy with the frame's longer side at this size
FOCUS_DIAMETER = 512  # the disc is brought to this diameter before focus is measured
CORNER = 0.06  # the corner patches that a fundus camera leaves dark, as a share of each side

NO_DISC = "no fundus disc found"
NOT_COLOUR_FUNDUS = "not a colour fundus photograph"
UNDER_EXPOSED = "under-exposed"
OVER_EXPOSED = "over-exposed"
OUT_OF_FOCUS = "out of focus"
BLANK = "no detail: a blank frame"


@dataclass(frozen=True)
class Quality:
    """The verdict on one photograph, and the measures behind it."""

    gradable: bool
    reason: str  # "" when gradable
    score: float  # 0-1: the weakest measure's margin; 0.5 at its threshold, 1 far inside
    disc_fraction: float  # the field of view's share of the frame
    lit_corners: float  # the share of the frame's corners that are lit (0 for a fundus camera)
    red_ratio: float  # mean red over mean green inside the field of view
    dark_fraction: float  # share of the field of view too dark to read
    bright_fraction: float  # share clipped white
    sharpness: float  # Laplacian variance over the green channel's variance, at a fixed size
    contrast: float  # std over mean of the brightest channel inside the field of view

    def measures(self) -> dict[str, float]:
        return {key: value for key, value in asdict(self).items()
                if key not in ("gradable", "reason")}


def _brightest(rgb: np.ndarray) -> np.ndarray:
    red, green, blue = cv2.split(rgb)
    return cv2.max(cv2.max(red, green), blue)


def _dimmest(rgb: np.ndarray) -> np.ndarray:
    red, green, blue = cv2.split(rgb)
    return cv2.min(cv2.min(red, green), blue)


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """The fundus disc as a boolean mask of the frame: the largest connected region lit above
    the dark surround (the brightest channel, as fundus_box uses: a fundus is red), holes
    filled."""
    brightest = _brightest(rgb)
    histogram = np.bincount(brightest.ravel(), minlength=256)
    p99 = int(np.searchsorted(np.cumsum(histogram), 0.99 * brightest.size))
    level = max(10.0, 0.04 * p99)
    lit = (brightest > level).astype(np.uint8)
    lit = cv2.morphologyEx(lit, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if count <= 1:
        return np.zeros(lit.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(region, contours, -1, 1, thickness=cv2.FILLED)  # the disc's dark spots
    return region.astype(bool)


def _working_copy(rgb: np.ndarray) -> np.ndarray:
    """The frame with its longer side at WORK_SIDE (never enlarged): the measures cost the
    same for a 5-megapixel camera as for a thumbnail."""
    scale = WORK_SIDE / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _lit_corners(mask: np.ndarray) -> float:
    h, w = mask.shape
    dy, dx = max(1, int(CORNER * h)), max(1, int(CORNER * w))
    corners = [mask[:dy, :dx], mask[:dy, -dx:], mask[-dy:, :dx], mask[-dy:, -dx:]]
    return float(np.mean([corner.mean() for corner in corners]))


def _sharpness(image: np.ndarray, mask: np.ndarray) -> float:
    """Laplacian variance of the green channel over its variance, inside the eroded disc, with
    the disc at FOCUS_DIAMETER (never enlarged: a small photograph's detail is judged at the
    resolution it has): the high-frequency share of the detail, which blur removes. image: the
    photograph (RGB or BGR: green is the middle channel of both); mask: its disc, which places
    the crop (the disc is found again on the resized crop)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    scale = min(1.0, FOCUS_DIAMETER / max(y1 - y0, x1 - x0))
    size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
    crop = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    # In floats: rounding the smaller copy to whole levels again would add a Laplacian of its
    # own, as large as a heavily blurred retina's.
    green = cv2.resize(image[y0:y1, x0:x1, 1].astype(np.float32), size,
                       interpolation=cv2.INTER_AREA)
    inside = field_of_view(crop).astype(np.uint8)
    edge = max(3, round(0.08 * max(size)) | 1)  # not the disc's edge, which blur spreads
    inside = cv2.erode(inside, np.ones((edge, edge), np.uint8)).astype(bool)
    if inside.sum() < 100:
        return 0.0
    detail = float(green[inside].var())
    laplacian = cv2.Laplacian(green, cv2.CV_32F, ksize=3)
    return float(laplacian[inside].var()) / max(detail, 1.0)


def _margin(value: float, threshold: float, higher_is_better: bool) -> float:
    """0.5 at the threshold, towards 1 far on the good side, towards 0 far on the bad side."""
    if threshold <= 0:
        return 1.0
    ratio = value / threshold if higher_is_better else threshold / max(value, 1e-9)
    return float(np.clip(ratio / 2, 0.0, 1.0))


def assess(image: np.ndarray, settings: QualityConfig | None = None,
           bgr: bool = False) -> Quality:
    """The verdict on an (H, W, 3) uint8 photograph as the camera wrote it, RGB (or BGR, as
    OpenCV decodes, with bgr)."""
    settings = settings or QualityConfig()
    rgb = _working_copy(np.ascontiguousarray(image))
    if bgr:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    mask = field_of_view(rgb)
    disc_fraction, lit_corners = float(mask.mean()), _lit_corners(mask)
    if disc_fraction == 0:
        return Quality(False, NO_DISC, 0.0, 0.0, lit_corners, 0.0, 1.0, 0.0, 0.0, 0.0)
    inside = mask.astype(np.uint8)
    area = float(inside.sum())
    means = cv2.mean(rgb, mask=inside)
    brightest = _brightest(rgb)
    level, spread = (float(v[0][0]) for v in cv2.meanStdDev(brightest, mask=inside))
    measures = dict(
        disc_fraction=disc_fraction, lit_corners=lit_corners,
        red_ratio=means[0] / max(means[1], 1.0),
        dark_fraction=cv2.countNonZero((brightest < settings.dark_level) & mask) / area,
        bright_fraction=cv2.countNonZero((_dimmest(rgb) >= settings.bright_level) & mask) / area,
        sharpness=_sharpness(rgb, mask), contrast=spread / max(level, 1.0))
    tests = [  # (reason, passes, margin), in the order a reader would check them
        (NO_DISC, disc_fraction >= settings.min_disc_fraction
         and lit_corners <= settings.max_lit_corners,
         min(_margin(disc_fraction, settings.min_disc_fraction, True),
             _margin(lit_corners, settings.max_lit_corners, False))),
        (BLANK, measures["contrast"] >= settings.min_contrast,
         _margin(measures["contrast"], settings.min_contrast, True)),
        # Exposure before colour: a washed-out fundus has lost its red, but it is a fundus.
        (UNDER_EXPOSED, measures["dark_fraction"] <= settings.max_dark_fraction,
         _margin(measures["dark_fraction"], settings.max_dark_fraction, False)),
        (OVER_EXPOSED, measures["bright_fraction"] <= settings.max_bright_fraction,
         _margin(measures["bright_fraction"], settings.max_bright_fraction, False)),
        (NOT_COLOUR_FUNDUS, measures["red_ratio"] >= settings.min_red_ratio,
         _margin(measures["red_ratio"], settings.min_red_ratio, True)),
        (OUT_OF_FOCUS, measures["sharpness"] >= settings.min_sharpness,
         _margin(measures["sharpness"], settings.min_sharpness, True)),
    ]
    failed = [reason for reason, passes, _ in tests if not passes]
    score = min(margin for _, _, margin in tests)
    return Quality(not failed, failed[0] if failed else "", score, **measures)
