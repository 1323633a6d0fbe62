"""Offline preprocessing of one fundus photograph: decode fast, crop, resize.

Methods (all return an (N, N, 3) uint8 BGR image):
- center_crop: the lab's: shorter side to N (area interpolation), then the central N x N.
- retina_crop: the bounding square of the fundus disc (padded where the disc leaves the frame),
  resized to N x N: the whole retina, centred, without black margins or cut sides.
- graham: retina_crop, then Ben Graham's local-average colour subtraction, outer rim masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from retino.config.schema import Config
from retino.data.prepare.quality import field_of_view

# libjpeg decodes at 1/2, 1/4 or 1/8 scale almost for free (DCT scaling); largest factor first.
_REDUCED_DECODE = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                   (2, cv2.IMREAD_REDUCED_COLOR_2), (1, cv2.IMREAD_COLOR))
_DECODE_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.10+ decodes to RGB itself
_NOTE_MODES = {"L": "grayscale", "LA": "grayscale with alpha", "RGBA": "RGBA", "P": "palette",
               "I;16": "16-bit", "I;16B": "16-bit", "I": "32-bit integer", "CMYK": "CMYK"}


JPEG_QUALITY = 95  # of the prepared cache's files
# The largest photograph retino decodes (Kaggle's largest is 18 megapixels): its size is read
# from the file's header first, so a 20000 x 20000 PNG (1.5 MB on disk, 1.2 GB decoded) is
# refused by name instead of taking the machine's memory. The config key's default.
MAX_MEGAPIXELS = Config.max_megapixels
MIN_SIDE = 8  # px: smaller is no photograph (a 1 x 1 pixel file)


class BadImage(Exception):
    """This file cannot be prepared; the message is the reason shown in the report."""


def check_dimensions(width: int, height: int, max_megapixels: float = MAX_MEGAPIXELS) -> None:
    """BadImage for a photograph too small to be one, or larger than retino decodes."""
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"too small to be a photograph: {width}x{height} px")
    if width * height > max_megapixels * 1e6:
        raise BadImage(f"too large: {width}x{height} px is {width * height / 1e6:.0f} "
                       f"megapixels, above max_megapixels={max_megapixels:g} (raise it to "
                       "decode it, with the memory that takes: 3 bytes a pixel)")


def inspect_image(path: Path,
                  max_megapixels: float = MAX_MEGAPIXELS) -> tuple[int, int, str | None]:
    """(width, height, note) from the file header, before any decoding; note names an unusual
    pixel format. BadImage for an empty, unreadable, truncated, tiny or too large file."""
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height, mode, fmt = *image.size, image.mode, image.format
    except Image.DecompressionBombError as err:  # Pillow's own limit, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise BadImage(f"too large: {size}, above max_megapixels={max_megapixels:g}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise BadImage(f"not an image ({err.__class__.__name__})") from err
    check_dimensions(width, height, max_megapixels)
    if fmt == "JPEG" and not jpeg_is_complete(path):
        raise BadImage("truncated JPEG (no end-of-image marker)")
    kind = "16-bit" if fmt == "PNG" and _png_bit_depth(path) == 16 else _NOTE_MODES.get(mode)
    if kind:
        return width, height, f"{kind} {fmt} image converted to 8-bit colour"
    misnamed = fmt != "JPEG" and path.suffix.lower() in (".jpeg", ".jpg")
    return width, height, f"{fmt} data in a JPEG-named file, converted" if misnamed else None


def _png_bit_depth(path: Path) -> int:
    """Bits per channel from the PNG header (Pillow reports 16-bit colour as 8-bit RGB)."""
    with path.open("rb") as f:
        header = f.read(25)  # signature (8), IHDR length and type (8), width, height, depth
    return header[24] if len(header) == 25 else 8


def jpeg_is_complete(path: Path) -> bool:
    """A complete JPEG has its EOI marker FF D9 after its image data (entropy-coded data never
    contains FF D9). Most end with it, or hold it in their last 64 KB (a camera's trailer); a
    longer trailer (a phone's "motion photo") is found by reading the whole file, which only
    such files pay for."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(2, size - 65536, size // 2))
        if b"\xff\xd9" in f.read():
            return True
        data = path.read_bytes()
    return data.find(b"\xff\xd9", data.find(b"\xff\xda")) != -1  # after the image data


def decode_rgb(encoded: np.ndarray) -> np.ndarray | None:
    """An encoded image's bytes decoded to (H, W, 3) uint8 RGB; None when they cannot be (an
    empty file made OpenCV raise its own assertion, naming no file)."""
    if encoded.size == 0:
        return None
    try:
        image = cv2.imdecode(encoded, _DECODE_RGB or cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if image is None or _DECODE_RGB:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # OpenCV before 4.10 decodes BGR only


def decode_for_size(path: Path, width: int, height: int, target: int) -> np.ndarray:
    """Decode at the largest 1/k scale that still leaves the shorter side >= target."""
    shorter = min(width, height)
    image = None
    for factor, flag in _REDUCED_DECODE:
        if shorter >= factor * target:
            image = cv2.imread(str(path), flag)
            break
    if image is None:
        raise BadImage("cannot be decoded (corrupt image data)")
    return image  # (H, W, 3) uint8 BGR; grey, alpha and 16-bit inputs are converted by OpenCV


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The lab's result (shorter side to size with area interpolation, then the central
    size x size), computed crop-first so that the cut-off sides are never resized."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def fundus_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the bright fundus disc on its dark background."""
    # The brightest channel, not grey: a fundus is red, and its dim rim is still well above the
    # black surround (JPEG noise stays below ~10). Rows/columns need a few lit pixels.
    brightest = image.max(axis=2)
    lit = brightest > max(10.0, 0.04 * float(np.percentile(brightest, 99)))
    min_count = max(3, int(0.01 * min(brightest.shape)))
    rows = np.flatnonzero(lit.sum(axis=1) >= min_count)
    cols = np.flatnonzero(lit.sum(axis=0) >= min_count)
    if len(rows) == 0 or len(cols) == 0:
        raise BadImage("no fundus found (image is black or nearly so)")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _square_start(lo: int, hi: int, frame: int, side: int) -> int:
    """Where the disc's square starts on one axis. Cut by one frame edge, the disc's far edge is
    still real, so the square is anchored there; otherwise it is centred on the lit extent."""
    if lo == 0 and hi < frame:
        return hi - side
    if hi == frame and lo > 0:
        return lo
    return (lo + hi) // 2 - side // 2


def retina_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The disc's bounding square, padded with black where it leaves the frame, to size x size."""
    x0, y0, x1, y1 = fundus_box(image)
    h, w = image.shape[:2]
    side = max(x1 - x0, y1 - y0)  # a disc cut by the frame is still as wide as it is round
    left, top = _square_start(x0, x1, w, side), _square_start(y0, y1, h, side)
    square = np.zeros((side, side, 3), np.uint8)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + side, w), min(top + side, h)
    square[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = \
        image[src_y0:src_y1, src_x0:src_x1]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def graham(image: np.ndarray, size: int) -> np.ndarray:
    """Ben Graham's preprocessing: subtract the local average colour, grey out all but the
    field of view. The field of view is the detected disc, eroded by twice the blur's sigma:
    the local average is wrong where it mixes in the black around the disc, or the black
    padding past a frame's cut (a fixed circle drew bright bands along such a cut)."""
    square = retina_crop(image, size)
    sigma = size / 60  # Graham: sigma = radius / 30
    pixels = square.astype(np.float32)
    blurred = cv2.GaussianBlur(pixels, (0, 0), sigma)
    enhanced = np.clip(4 * pixels - 4 * blurred + 128, 0, 255).astype(np.uint8)
    margin = 2 * int(np.ceil(2 * sigma)) + 1
    inside = cv2.erode(field_of_view(square).astype(np.uint8), np.ones((margin, margin), np.uint8))
    enhanced[inside == 0] = 128
    return enhanced


METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "center_crop": center_crop, "retina_crop": retina_crop, "graham": graham,
}
# Raised when a method's output changes, so that a cache never mixes two versions and a run's
# photographs are known to be prepared as its cache was (graham 2: the detected field of view
# masks it, not a fixed circle; graham 3: that field found above the surround the frame's
# border shows, dark or a white ground). A manifest without one was made by version 1.
METHOD_VERSIONS = {"center_crop": 1, "retina_crop": 1, "graham": 3}


def encode_jpeg(image: np.ndarray) -> bytes:
    """A prepared (BGR) image as the cache stores it."""
    ok, encoded = cv2.imencode(".jpeg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise BadImage("could not be encoded as JPEG")
    return encoded.tobytes()


def as_cached(image: np.ndarray) -> np.ndarray:
    """A prepared (BGR) image as training reads it back from the cache: JPEG-encoded as
    prepare writes it, decoded to RGB as the dataset decodes it (the same pixels, to the bit)."""
    return decode_rgb(np.frombuffer(encode_jpeg(image), np.uint8))


def decode_photograph(src: Path, size: int, method: str,
                      max_megapixels: float = MAX_MEGAPIXELS) -> tuple[np.ndarray, str | None]:
    """The photograph (BGR) decoded at the smallest scale that still prepares it, and a note on
    any conversion; BadImage when it cannot be prepared."""
    width, height, note = inspect_image(src, max_megapixels)
    if min(width, height) < size:
        raise BadImage(f"smaller than the target: {width}x{height} < {size} px")
    # The retina methods keep the disc, often ~80% of the shorter side: decode with room for it.
    needed = size if method == "center_crop" else int(size / 0.8)
    return decode_for_size(src, width, height, needed), note


def prepare_image(src: Path, size: int, method: str) -> tuple[np.ndarray, str | None]:
    """The prepared image and a note on any conversion; BadImage when it cannot be prepared."""
    photograph, note = decode_photograph(src, size, method)
    return METHODS[method](photograph, size), note
