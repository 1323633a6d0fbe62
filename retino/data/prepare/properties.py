"""What a photograph shows besides its retina: the file's and the camera's properties.

A model can learn a set's grades from these alone when one camera, one clinic or one export
carries a grade (APTOS 2019: a resolution that is 92.5 % "No DR"); the data audit measures how
far (retino.evaluation.shortcut) and shows them per grade and split. Each is read from the file's
header or from the working view (retino.data.prepare.fingerprints.View), never from the full-size
pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from retino.core.files import atomic_write_text
from retino.data.prepare.fingerprints import View

# What each property is, in the audit report's words (and the columns of its tables).
PROPERTIES = {
    "width": "width (px)",
    "height": "height (px)",
    "aspect": "aspect ratio (width / height)",
    "file_kb": "file size (kB)",
    "jpeg_quality": "JPEG quality estimated from its quantisation table (0: not a JPEG)",
    "brightness": "mean brightness of the field of view (grey level)",
    "contrast": "spread of brightness in the field of view (grey levels, SD)",
    "field_radius": "field of view's radius / the frame's shorter side",
    "field_x": "field of view's centre across the frame (0-1)",
    "field_y": "field of view's centre down the frame (0-1)",
    "border_share": "share of the frame outside the field of view",
}

# The IJG's example luminance table (JPEG standard, Annex K), which libjpeg scales by quality.
_IJG_LUMINANCE_SUM = sum((
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99))


def jpeg_quality(path: Path) -> float:
    """The libjpeg quality (1-100) whose scaling of the standard table best matches the file's
    luminance table; 0 for a file that is not a JPEG. Cameras with their own tables get the
    nearest standard quality, which still tells one export from another."""
    with Image.open(path) as image:
        tables = getattr(image, "quantization", None) or {}
    if not tables:
        return 0.0
    scale = 100.0 * sum(tables[min(tables)]) / _IJG_LUMINANCE_SUM  # libjpeg's percent scale
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(np.clip(round(quality), 1, 100))


def photograph_properties(path: Path, width: int, height: int, view: View) -> dict[str, float]:
    """The PROPERTIES of one photograph: width and height from its header (the original,
    not the reduced view), the rest from the file and the view."""
    frame_h, frame_w = view.mask.shape
    cx, cy, radius = view.circle
    grey = cv2.cvtColor(view.image, cv2.COLOR_BGR2GRAY)
    field = grey[view.mask] if view.mask.any() else grey.ravel()
    return {
        **file_properties(path, width, height),
        "brightness": float(field.mean()),
        "contrast": float(field.std()),
        "field_radius": radius / min(frame_h, frame_w),
        "field_x": cx / frame_w,
        "field_y": cy / frame_h,
        "border_share": 1.0 - float(view.mask.mean()),
    }


# What a prepared cache cannot show of its photographs (each was resized and re-encoded): the
# original file's, kept beside the cache by prepare and read by the audit in their place.
FILE_PROPERTIES = ("width", "height", "aspect", "file_kb", "jpeg_quality")


def file_properties(path: Path, width: int, height: int) -> dict[str, float]:
    """The FILE_PROPERTIES of an original photograph, from its header and size alone."""
    return {"width": float(width), "height": float(height), "aspect": width / height,
            "file_kb": Path(path).stat().st_size / 1024, "jpeg_quality": jpeg_quality(path)}


def write_originals(path: Path, files: dict[str, Path]) -> int:
    """The FILE_PROPERTIES of each named original file (read from its header) as a CSV at
    path, for the audit of the cache made from them; returns the rows written (a file that
    cannot be read has none)."""
    rows = []
    for name, source in sorted(files.items()):
        try:
            with Image.open(source) as image:
                width, height = image.size
        except (OSError, ValueError):
            continue
        rows.append({"name": name, **file_properties(source, width, height)})
    atomic_write_text(path, pd.DataFrame(rows, columns=["name", *FILE_PROPERTIES])
                      .to_csv(index=False))
    return len(rows)
