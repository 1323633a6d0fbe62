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

STATS_SIDE = 320  # the field of view, exposure and colour: on a sample of about this side
FOCUS_DIAMETER = 384  # the disc is brought to this diameter before focus is measured
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


def _subsampled(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(every step-th pixel of the frame, step), the longer side at most STATS_SIDE: the field
    of view, exposure and colour are shares and means, which a regular sample measures as
    well as every pixel, at a cost that does not grow with the camera."""
    step = max(1, -(-max(image.shape[:2]) // STATS_SIDE))
    return np.ascontiguousarray(image[::step, ::step]), step


def _lit_corners(mask: np.ndarray) -> float:
    h, w = mask.shape
    dy, dx = max(1, int(CORNER * h)), max(1, int(CORNER * w))
    corners = [mask[:dy, :dx], mask[:dy, -dx:], mask[-dy:, :dx], mask[-dy:, -dx:]]
    return float(np.mean([corner.mean() for corner in corners]))


def _resized(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """channel brought down to size (width, height): first by the largest whole factor, in
    which area averaging is exact and fast, then linearly by less than 2 (area averaging by a
    fractional factor costs ten times more, for the same focus measure)."""
    factor = min(channel.shape[1] // size[0], channel.shape[0] // size[1])
    if factor >= 2:
        h, w = channel.shape[0] // factor, channel.shape[1] // factor
        channel = cv2.resize(channel[: h * factor, : w * factor], (w, h),
                             interpolation=cv2.INTER_AREA)
    if channel.shape[:2] == (size[1], size[0]):
        return channel
    return cv2.resize(channel, size, interpolation=cv2.INTER_LINEAR)


def _sharpness(image: np.ndarray, mask: np.ndarray, step: int) -> float:
    """Laplacian variance of the green channel over its variance, inside the disc less its
    rim, with the disc at FOCUS_DIAMETER (never enlarged: a small photograph's detail is
    judged at the resolution it has): the high-frequency share of the detail, which blur
    removes. image: the photograph (RGB or BGR: green is the middle channel of both); mask:
    its disc on the frame subsampled by step."""
    left, top, width, height = cv2.boundingRect(mask.astype(np.uint8))
    y0, y1 = top * step, min(image.shape[0], (top + height) * step)
    x0, x1 = left * step, min(image.shape[1], (left + width) * step)
    scale = min(1.0, FOCUS_DIAMETER / max(y1 - y0, x1 - x0))
    size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
    green = _resized(cv2.extractChannel(image[y0:y1, x0:x1], 1), size).astype(np.float32)
    # Not the rim, which blur spreads: the disc less 8 % of its size, eroded on the sample.
    disc = mask[top:top + height, left:left + width].astype(np.uint8)
    rim = 2 * max(1, round(0.08 * max(disc.shape))) + 1
    disc = cv2.erode(cv2.copyMakeBorder(disc, 1, 1, 1, 1, cv2.BORDER_CONSTANT),
                     np.ones((rim, rim), np.uint8))[1:-1, 1:-1]
    inside = cv2.resize(disc, size, interpolation=cv2.INTER_NEAREST)
    if cv2.countNonZero(inside) < 100:
        return 0.0
    detail = float(cv2.meanStdDev(green, mask=inside)[1][0, 0]) ** 2
    # Smoothed first, by less than any vessel's width: JPEG's 8 x 8 blocks, sensor noise and
    # whole grey levels are high frequencies too, and would make a blurred photograph sharp.
    laplacian = cv2.Laplacian(cv2.GaussianBlur(green, (0, 0), 1.0), cv2.CV_32F, ksize=3)
    return float(cv2.meanStdDev(laplacian, mask=inside)[1][0, 0]) ** 2 / max(detail, 1.0)


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
    rgb, step = _subsampled(image)
    if bgr:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    mask = field_of_view(rgb)
    disc_fraction, lit_corners = float(mask.mean()), _lit_corners(mask)
    if disc_fraction == 0:
        return Quality(False, NO_DISC, 0.0, 0.0, lit_corners, 0.0, 1.0, 0.0, 0.0, 0.0)
    inside = mask.astype(np.uint8)
    area = float(cv2.countNonZero(inside))
    means = cv2.mean(rgb, mask=inside)
    brightest = _brightest(rgb)
    level, spread = (float(v[0][0]) for v in cv2.meanStdDev(brightest, mask=inside))
    dark = cv2.compare(brightest, settings.dark_level, cv2.CMP_LT) & inside
    white = cv2.compare(_dimmest(rgb), settings.bright_level, cv2.CMP_GE) & inside
    measures = dict(
        disc_fraction=disc_fraction, lit_corners=lit_corners,
        red_ratio=means[0] / max(means[1], 1.0),
        dark_fraction=cv2.countNonZero(dark) / area,
        bright_fraction=cv2.countNonZero(white) / area,
        sharpness=_sharpness(image, mask, step), contrast=spread / max(level, 1.0))
    tests = [  # (reason, passes, margin), in the order a reader would check them
        (NO_DISC, disc_fraction >= settings.min_disc_fraction
         and lit_corners <= settings.max_lit_corners,
         min(_margin(disc_fraction, settings.min_disc_fraction, True),
             _margin(lit_corners, settings.max_lit_corners, False))),
        # Exposure before colour: a washed-out fundus has lost its red, but it is a fundus.
        (UNDER_EXPOSED, measures["dark_fraction"] <= settings.max_dark_fraction,
         _margin(measures["dark_fraction"], settings.max_dark_fraction, False)),
        (OVER_EXPOSED, measures["bright_fraction"] <= settings.max_bright_fraction,
         _margin(measures["bright_fraction"], settings.max_bright_fraction, False)),
        (BLANK, measures["contrast"] >= settings.min_contrast,
         _margin(measures["contrast"], settings.min_contrast, True)),
        (NOT_COLOUR_FUNDUS, measures["red_ratio"] >= settings.min_red_ratio,
         _margin(measures["red_ratio"], settings.min_red_ratio, True)),
        (OUT_OF_FOCUS, measures["sharpness"] >= settings.min_sharpness,
         _margin(measures["sharpness"], settings.min_sharpness, True)),
    ]
    failed = [reason for reason, passes, _ in tests if not passes]
    score = min(margin for _, _, margin in tests)
    return Quality(not failed, failed[0] if failed else "", score, **measures)
