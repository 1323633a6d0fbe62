"""Is a photograph gradable? The third answer of every clinical DR system beside "refer" and "do
not refer": insufficient quality. Measured on the photograph as the camera wrote it, on a CPU
in a few milliseconds, with no download:

- the field of view: the bright fundus disc on its surround (the largest region standing out
  from the surround that the frame's border shows, dark or a white ground; its share of the
  frame; and whether it is a disc, whole or cut by the frame: the circle fitted to its rim
  covers it);
- colour: a colour fundus is red, orange or yellow inside its field of view: red not below
  green, and well above blue (which the retina's pigments absorb);
- exposure: the share of the field of view that is too dark to read, or clipped white;
- stray light: the share of the field whose blue is above its green, which light the retina
  sent back never is (a flare's veil, a reflection's band);
- focus: how much of the green channel's (where vessels have the most contrast) fine detail
  survives, beside its coarser detail: the band between 1 and 2 px over the band between 2
  and 4 px, with the disc at a fixed size. Haze lowers both bands alike and leaves the ratio;
  blur removes the fine band first;
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
SURROUND_MARGIN = 12  # grey levels above the surround's that count as lit
BLUE_OVER_GREEN = 15  # grey levels of blue above green that the retina does not send back
WHITE_GROUND = 200  # a border whose every channel is at or above this (mostly) is a white ground

NO_DISC = "no fundus disc found"
NOT_COLOUR_FUNDUS = "not a colour fundus photograph"
UNDER_EXPOSED = "under-exposed"
OVER_EXPOSED = "over-exposed"
OUT_OF_FOCUS = "out of focus"
STRAY_LIGHT = "flare or haze: stray light over the field"
BLANK = "no detail: a blank frame"


@dataclass(frozen=True)
class Quality:
    """The verdict on one photograph, and the measures behind it."""

    gradable: bool
    reason: str  # "" when gradable
    score: float  # 0-1: the weakest measure's margin; 0.5 at its threshold, 1 far inside
    disc_fraction: float  # the field of view's share of the frame
    lit_corners: float  # the share of the frame's corners that are lit: 0 unless the disc is cut
    rim_fit: float  # 1 - overlap of the field with the disc fitted to its rim (0: a disc)
    red_ratio: float  # mean red over mean green inside the field of view
    red_blue_ratio: float  # mean red over mean blue inside the field of view
    dark_fraction: float  # share of the field of view too dark to read
    bright_fraction: float  # share clipped white
    stray_light: float  # share lit by light the retina did not send back (blue above green)
    sharpness: float  # green's fine detail (1-2 px) over its coarser detail (2-4 px), disc at 384
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


def _border(image: np.ndarray) -> np.ndarray:
    """The pixels of the frame's border band (its outer 3 %, at least 2 px): wide enough that a
    1 px line along the edge (a scan's, a web page's frame) does not speak for the surround."""
    h, w = image.shape[:2]
    band = max(2, round(0.03 * min(h, w)))
    return np.concatenate([image[:band].reshape(-1, *image.shape[2:]),
                           image[-band:].reshape(-1, *image.shape[2:]),
                           image[band:-band, :band].reshape(-1, *image.shape[2:]),
                           image[band:-band, -band:].reshape(-1, *image.shape[2:])])


def _surround_level(brightest: np.ndarray) -> float:
    """The surround's brightness: the darkest tenth of the frame's border band. A fundus
    camera's surround is black, but a web copy, a scan or a re-encoded photograph often lifts
    it to a dark grey or brown; a disc cut on every side leaves no surround, and this is then
    the disc's own darkest edge."""
    return float(np.percentile(_border(brightest), 10))


def _standing_out(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel stands out from the surround, in grey levels: its brightest channel
    (as fundus_box uses: a fundus is red) on a camera's dark surround; on a white ground (a
    crop pasted on a page, which the frame's border shows), how far its darkest channel is
    below white."""
    if np.mean(_border(rgb).min(axis=1) >= WHITE_GROUND) >= 0.5:
        return cv2.bitwise_not(_dimmest(rgb))  # 255 - the darkest channel
    return _brightest(rgb)


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """The fundus disc as a boolean mask of the frame: the largest connected region that
    stands out from the surround, holes filled."""
    brightest = _standing_out(rgb)
    histogram = cv2.calcHist([brightest], [0], None, [256], [0, 256]).ravel()
    p99 = int(np.searchsorted(np.cumsum(histogram), 0.99 * brightest.size))
    level = max(10.0, 0.04 * p99, min(_surround_level(brightest) + SURROUND_MARGIN, 0.5 * p99))
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


def rim_fit(mask: np.ndarray) -> float:
    """How far the field of view is from a disc that the frame cuts: 1 - the overlap
    (intersection over union) of the field with the circle fitted to its rim, inside the
    frame (0: a disc; 1: no rim, or too little of it to fit). A fundus larger than the frame
    lights the frame's corners, but what the frame leaves of it is a disc cut by straight
    lines; a photograph of anything else, lit to the corners, is not."""
    h, w = mask.shape
    circle = disc_circle(mask)
    if circle is None:
        return 1.0
    cx, cy, radius = circle
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (round(cx), round(cy)), round(radius), 1, thickness=-1)
    field = mask.astype(np.uint8)
    union = cv2.countNonZero(disc | field)
    return 1.0 - cv2.countNonZero(disc & field) / max(union, 1)


def disc_circle(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(centre x, centre y, radius) in pixels of the circle through the field of view's rim,
    where the frame does not cut it; None when too little rim is free to fit one, or the
    centre falls off the frame (no disc)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    points = max(contours, key=len)[:, 0, :].astype(np.float64)
    h, w = mask.shape
    # Where the frame, or a black band along it (a letterboxed copy), cuts the disc, the border
    # runs along the field's bounding box: those points are the cut, not the rim.
    left, top, width, height = cv2.boundingRect(points.astype(np.int32))
    free = ((points[:, 0] > left + 1) & (points[:, 0] < left + width - 2)
            & (points[:, 1] > top + 1) & (points[:, 1] < top + height - 2))
    x, y = points[free, 0], points[free, 1]
    if len(x) < max(24, 0.15 * min(h, w)):  # too little free rim to fit a circle to
        return None
    # The circle through the rim: fitted, then refitted on the 80 % of points nearest to it,
    # so that a notch, a tab or a lesion at the rim does not move it.
    cx, cy, radius = _circle(x, y)
    distance = np.abs(np.hypot(x - cx, y - cy) - radius)
    near = distance <= np.quantile(distance, 0.8)
    cx, cy, radius = _circle(x[near], y[near])
    if not (0 <= cx < w and 0 <= cy < h):  # a disc centred off the frame is no field of view
        return None
    return cx, cy, radius


def _circle(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, radius) of the least-squares circle through the points: the
    algebraic (Kasa) fit, x^2 + y^2 + a x + b y + c = 0, linear in a, b, c."""
    design = np.column_stack([x, y, np.ones_like(x)])
    (a, b, c), *_ = np.linalg.lstsq(design, -(x ** 2 + y ** 2), rcond=None)
    cx, cy = -a / 2, -b / 2
    return cx, cy, float(np.sqrt(max(cx ** 2 + cy ** 2 - c, 1e-9)))


def stray_light(rgb: np.ndarray, mask: np.ndarray) -> float:
    """The share of the field, less its rim, lit by light that the retina did not send back:
    flare from the camera's optics and haze from the eye's. The retina absorbs blue more than
    green (whatever the camera's white balance, a fundus is red, orange or yellow), so a pixel
    whose blue is well above its green (by BLUE_OVER_GREEN levels) is lit by stray light: the
    white-blue veil of a flare, the lilac band of a reflection."""
    field = mask.astype(np.uint8)
    rim = 2 * max(1, round(0.03 * max(cv2.boundingRect(field)[2:]))) + 1
    inside = cv2.erode(field, np.ones((rim, rim), np.uint8))
    area = cv2.countNonZero(inside)
    if area < 100:
        return 0.0
    _, green, blue = cv2.split(rgb)
    bluish = cv2.compare(blue, cv2.add(green, BLUE_OVER_GREEN), cv2.CMP_GT) & inside
    return cv2.countNonZero(bluish) / area


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


def _disc_green(image: np.ndarray, mask: np.ndarray,
                step: int) -> tuple[np.ndarray, np.ndarray]:
    """(the green channel of the disc's bounding box at FOCUS_DIAMETER, never enlarged, as
    float32; the disc less its rim, which blur spreads, on it). image: the photograph (RGB or
    BGR: green is the middle channel of both); mask: its disc on the frame subsampled by
    step."""
    left, top, width, height = cv2.boundingRect(mask.astype(np.uint8))
    y0, y1 = top * step, min(image.shape[0], (top + height) * step)
    x0, x1 = left * step, min(image.shape[1], (left + width) * step)
    scale = min(1.0, FOCUS_DIAMETER / max(y1 - y0, x1 - x0))
    size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
    green = _resized(cv2.extractChannel(image[y0:y1, x0:x1], 1), size).astype(np.float32)
    disc = mask[top:top + height, left:left + width].astype(np.uint8)
    rim = 2 * max(1, round(0.08 * max(disc.shape))) + 1
    disc = cv2.erode(cv2.copyMakeBorder(disc, 1, 1, 1, 1, cv2.BORDER_CONSTANT),
                     np.ones((rim, rim), np.uint8))[1:-1, 1:-1]
    return green, cv2.resize(disc, size, interpolation=cv2.INTER_NEAREST)


def _sharpness(image: np.ndarray, mask: np.ndarray, step: int) -> float:
    """The green channel's fine detail (between Gaussian scales of 1 and 2 px) over its coarser
    detail (between 2 and 4 px), inside the disc less its rim, with the disc at FOCUS_DIAMETER
    (never enlarged: a small photograph's detail is judged at the resolution it has). Both
    bands are differences of Gaussians, so neither the exposure, nor haze (which lowers all
    contrast alike), nor the slow shading of the field moves the ratio; blur takes the fine
    band first. Below 1 px are JPEG's blocks, sensor noise and whole grey levels: high
    frequencies too, which would make a blurred photograph sharp."""
    green, inside = _disc_green(image, mask, step)
    if cv2.countNonZero(inside) < 100:
        return 0.0
    fine, medium = cv2.GaussianBlur(green, (0, 0), 1), cv2.GaussianBlur(green, (0, 0), 2)
    fine_band = float(cv2.meanStdDev(fine - medium, mask=inside)[1][0, 0])
    # The coarse band on the disc at half size, where the 4 px scale is 2 px (the 2 x 2 average
    # and the 2 px blur already there make most of it): a third of the cost of the full size.
    h, w = medium.shape[0] // 2 * 2, medium.shape[1] // 2 * 2  # even: exact 2 x 2 averages
    medium, inside = medium[:h, :w], inside[:h, :w]
    half = (w // 2, h // 2)
    medium = cv2.resize(medium, half, interpolation=cv2.INTER_AREA)
    coarse = cv2.GaussianBlur(medium, (0, 0), np.sqrt(3))
    inside = cv2.resize(inside, half, interpolation=cv2.INTER_NEAREST)
    coarse_band = float(cv2.meanStdDev(medium - coarse, mask=inside)[1][0, 0])
    return fine_band / max(coarse_band, 1e-3)


def _margin(value: float, threshold: float, higher_is_better: bool) -> float:
    """0.5 at the threshold, towards 1 far on the good side, towards 0 far on the bad side."""
    if threshold <= 0:
        return 1.0
    ratio = value / threshold if higher_is_better else threshold / max(value, 1e-9)
    return float(np.clip(ratio / 2, 0.0, 1.0))


def _three_channels(image: np.ndarray) -> np.ndarray:
    """image as (H, W, 3) uint8: a grey photograph repeated in three channels, an alpha channel
    left out; anything else is refused, naming what it is."""
    if image.dtype != np.uint8:
        raise ValueError(f"A photograph to assess must be 8-bit (uint8), not {image.dtype}: "
                         "decode it with cv2.imread or PIL, which give 8-bit images.")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"A photograph to assess is (height, width, 3), not {image.shape}.")
    return image


def assess(image: np.ndarray, settings: QualityConfig | None = None,
           bgr: bool = False) -> Quality:
    """The verdict on an (H, W, 3) uint8 photograph as the camera wrote it, RGB (or BGR, as
    OpenCV decodes, with bgr)."""
    settings = settings or QualityConfig()
    image = _three_channels(image)
    rgb, step = _subsampled(image)
    if bgr:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    mask = field_of_view(rgb)
    if not mask.any():
        return Quality(False, NO_DISC, 0.0, disc_fraction=0.0, lit_corners=0.0,
                       rim_fit=1.0, red_ratio=0.0, red_blue_ratio=0.0, dark_fraction=1.0,
                       bright_fraction=0.0, stray_light=0.0, sharpness=0.0, contrast=0.0)
    measures = _measures(image, rgb, mask, step, settings)
    tests = _tests(measures, settings)
    failed = [reason for reason, passes, _ in tests if not passes]
    score = min(margin for _, _, margin in tests)
    return Quality(not failed, failed[0] if failed else "", score, **measures)


def _measures(image: np.ndarray, rgb: np.ndarray, mask: np.ndarray, step: int,
              settings: QualityConfig) -> dict[str, float]:
    """Every measure of a photograph whose field of view (mask, on rgb: the photograph
    subsampled by step) was found."""
    inside = mask.astype(np.uint8)
    area = float(cv2.countNonZero(inside))
    means = cv2.mean(rgb, mask=inside)
    brightest = _brightest(rgb)
    level, spread = (float(v[0][0]) for v in cv2.meanStdDev(brightest, mask=inside))
    dark = cv2.compare(brightest, settings.dark_level, cv2.CMP_LT) & inside
    white = cv2.compare(_dimmest(rgb), settings.bright_level, cv2.CMP_GE) & inside
    return dict(
        disc_fraction=float(mask.mean()), lit_corners=_lit_corners(mask), rim_fit=rim_fit(mask),
        red_ratio=means[0] / max(means[1], 1.0), red_blue_ratio=means[0] / max(means[2], 1.0),
        dark_fraction=cv2.countNonZero(dark) / area,
        bright_fraction=cv2.countNonZero(white) / area,
        stray_light=stray_light(rgb, mask),
        sharpness=_sharpness(image, mask, step), contrast=spread / max(level, 1.0))


def _tests(measures: dict[str, float],
           settings: QualityConfig) -> list[tuple[str, bool, float]]:
    """(reason, passes, margin) of each test, in the order a reader would check them."""
    m = measures
    return [
        (NO_DISC, m["disc_fraction"] >= settings.min_disc_fraction,
         _margin(m["disc_fraction"], settings.min_disc_fraction, True)),
        # Darkness before the field's shape: in a capture too dark to read, what rises above
        # the surround is ragged, whatever the camera framed.
        (UNDER_EXPOSED, m["dark_fraction"] <= settings.max_dark_fraction,
         _margin(m["dark_fraction"], settings.max_dark_fraction, False)),
        # A fundus is a disc, whole or cut by the frame; a photograph of anything else, lit to
        # the corners or not, is not (a person, a page, an eye's outline, a logo).
        (NO_DISC, m["rim_fit"] <= settings.max_rim_fit,
         _margin(m["rim_fit"], settings.max_rim_fit, False)),
        # Exposure before colour: a washed-out fundus has lost its red, but it is a fundus.
        (OVER_EXPOSED, m["bright_fraction"] <= settings.max_bright_fraction,
         _margin(m["bright_fraction"], settings.max_bright_fraction, False)),
        (BLANK, m["contrast"] >= settings.min_contrast,
         _margin(m["contrast"], settings.min_contrast, True)),
        # Red, orange or yellow: red not below green, and well above blue. A grey, green or
        # blue picture fails, and so does a grey-white pupil in its brown iris.
        (NOT_COLOUR_FUNDUS, m["red_ratio"] >= settings.min_red_ratio
         and m["red_blue_ratio"] >= settings.min_red_blue_ratio,
         min(_margin(m["red_ratio"], settings.min_red_ratio, True),
             _margin(m["red_blue_ratio"], settings.min_red_blue_ratio, True))),
        (STRAY_LIGHT, m["stray_light"] <= settings.max_stray_light,
         _margin(m["stray_light"], settings.max_stray_light, False)),
        (OUT_OF_FOCUS, m["sharpness"] >= settings.min_sharpness,
         _margin(m["sharpness"], settings.min_sharpness, True)),
    ]
