"""Is a photograph gradable: each measure on images made for it, a real fundus photograph
(scikit-image's retina.jpg, shipped in its wheel) placed as cameras place it, and photographs
that are no fundus."""

import importlib.util

import cv2
import numpy as np
import pytest
import skimage.data

from retino import PROJECT_ROOT
from retino.config.schema import QualityConfig
from retino.data.quality import (
    BLANK,
    NO_DISC,
    NOT_COLOUR_FUNDUS,
    OUT_OF_FOCUS,
    OVER_EXPOSED,
    UNDER_EXPOSED,
    assess,
    field_of_view,
)

RETINA = skimage.data.retina()  # 1411 x 1411 RGB, a full disc on black
# How cameras place the disc: bench/quality_table.py's framed(), which the docs' table uses too.
_spec = importlib.util.spec_from_file_location("quality_table",
                                               PROJECT_ROOT / "bench" / "quality_table.py")
_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_table)
framed = _table.framed


@pytest.mark.parametrize("name, photograph", [
    ("as shipped", RETINA),
    ("a 3888 x 2592 camera frame, black surround", framed(RETINA, 2592, 3888, 2460)),
    ("a small disc in a large frame", framed(RETINA, 2000, 3000, 1200)),
    ("a landscape frame cutting the disc top and bottom", framed(RETINA, 1200, 1800, 1500)),
    ("a thumbnail", cv2.resize(RETINA, (300, 300), interpolation=cv2.INTER_AREA)),
    ("dimmed to half", (RETINA * 0.5).astype(np.uint8)),
    ("brighter by 60 %", np.clip(RETINA * 1.6, 0, 255).astype(np.uint8)),
    ("JPEG quality 30", cv2.imdecode(cv2.imencode(".jpg", RETINA, [cv2.IMWRITE_JPEG_QUALITY,
                                                                     30])[1], cv2.IMREAD_COLOR)),
    ("slightly soft (Gaussian sigma 2)", cv2.GaussianBlur(RETINA, (0, 0), 2)),
])
def test_a_real_fundus_photograph_placed_as_cameras_place_it_is_gradable(name, photograph):
    quality = assess(photograph)
    assert quality.gradable, (name, quality)
    assert quality.reason == "" and 0.5 <= quality.score <= 1


def test_blur_makes_a_sharp_fundus_out_of_focus():
    sharp, blurred = assess(RETINA), assess(cv2.GaussianBlur(RETINA, (0, 0), 8))
    assert sharp.sharpness > 10 * blurred.sharpness
    assert (blurred.gradable, blurred.reason) == (False, OUT_OF_FOCUS)


@pytest.mark.parametrize("gain, reason", [(0.12, UNDER_EXPOSED), (4.0, OVER_EXPOSED)])
def test_exposure_sweeps_end_in_their_reason(gain, reason):
    verdicts = [assess(np.clip(RETINA * g, 0, 255).astype(np.uint8))
                for g in np.linspace(1.0, gain, 6)]
    assert verdicts[0].gradable and verdicts[-1].reason == reason
    first_bad = next(i for i, v in enumerate(verdicts) if not v.gradable)
    assert all(not v.gradable for v in verdicts[first_bad:])  # monotone along the sweep


@pytest.mark.parametrize("name, photograph, reason", [
    ("a blank white frame", np.full((600, 800, 3), 255, np.uint8), NO_DISC),
    ("a black frame", np.zeros((600, 800, 3), np.uint8), NO_DISC),
    ("a photograph of a person", skimage.data.astronaut(), NO_DISC),
    ("a grey photograph of text", np.repeat(skimage.data.text()[..., None], 3, axis=2), NO_DISC),
    ("a cup of coffee", skimage.data.coffee(), NO_DISC),
    ("a green fundus", RETINA[..., [1, 0, 2]], NOT_COLOUR_FUNDUS),
    ("a grey fundus", np.repeat(cv2.cvtColor(RETINA, cv2.COLOR_RGB2GRAY)[..., None], 3, 2),
     NOT_COLOUR_FUNDUS),
])
def test_what_is_no_colour_fundus_photograph_is_not_graded(name, photograph, reason):
    quality = assess(photograph)
    assert (quality.gradable, quality.reason) == (False, reason), name


def test_a_uniform_disc_on_black_is_a_blank_frame():
    disc = np.zeros((400, 400, 3), np.uint8)
    cv2.circle(disc, (200, 200), 180, (170, 70, 40), -1)
    assert assess(disc).reason == BLANK


def test_the_field_of_view_of_a_disc_cut_by_the_frame_is_the_disc():
    photograph = framed(RETINA, 1200, 1800, 1500)
    mask = field_of_view(photograph)
    assert mask[600, 900] and not mask[0, 0] and not mask[-1, -1]  # centre in, corners out
    assert mask[0, 900] and mask[-1, 900]  # the cut: lit to the frame's edge


def test_the_thresholds_come_from_the_config():
    strict = QualityConfig(min_sharpness=100.0)
    assert assess(RETINA, strict).reason == OUT_OF_FOCUS


def test_graham_masks_the_detected_field_of_view_so_a_cut_draws_no_band():
    """A landscape photograph whose disc the frame cuts top and bottom: the local-average
    subtraction used to draw a bright band along the cut inside its fixed circle (rows there
    deviated from grey by ~110 levels on average); masked with the detected field of view,
    no row deviates more than the retina's own detail does (~25)."""
    from retino.data.preprocess import graham

    photograph = cv2.cvtColor(framed(RETINA, 1200, 1800, 1500), cv2.COLOR_RGB2BGR)
    enhanced = graham(photograph, 512).astype(int)
    rows = np.abs(enhanced[:, 150:360] - 128).mean(axis=(1, 2))
    assert rows.max() < 40
    assert rows[200:300].mean() > 5  # the retina itself is kept
