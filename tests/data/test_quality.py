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
from retino.data.prepare.quality import (
    BLANK,
    NO_DISC,
    NOT_COLOUR_FUNDUS,
    OUT_OF_FOCUS,
    OVER_EXPOSED,
    STRAY_LIGHT,
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
framed, on_white, flare = _table.framed, _table.on_white, _table.flare


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
    verdicts = [assess(cv2.GaussianBlur(RETINA, (0, 0), sigma)) if sigma else assess(RETINA)
                for sigma in (0, 2, 4, 6, 8, 12)]
    sharpness = [v.sharpness for v in verdicts]
    assert sharpness == sorted(sharpness, reverse=True)  # the more blur, the less sharp
    assert verdicts[2].gradable  # sigma 4: soft, still read
    assert [(v.gradable, v.reason) for v in verdicts[-2:]] == [(False, OUT_OF_FOCUS)] * 2


def test_haze_leaves_focus_where_it_was():
    """A hazy but readable capture: a glow of light over part of the fundus, strong on one
    side and fading across the field, which lowers the contrast under it. The old measure
    (Laplacian variance over the green channel's variance) counted the glow's slow shading as
    detail that blur had not sharpened, and called such real photographs out of focus; the
    ratio of two detail bands sees no slow shading."""
    h, w = RETINA.shape[:2]
    glow = np.clip(1.0 - np.arange(w) / (0.8 * w), 0, 1)[None, :, None] * np.ones((h, 1, 1))
    veil = np.array([220, 215, 200], np.float32)
    hazy = RETINA * (1 - 0.7 * glow) + veil * 0.7 * glow
    hazy[field_of_view(RETINA) == 0] = 0  # the glow is inside the camera's field only
    clear, veiled = assess(RETINA), assess(hazy.astype(np.uint8))
    assert veiled.gradable, veiled
    assert abs(veiled.sharpness - clear.sharpness) < 0.1


@pytest.mark.parametrize("height, width, disc", [(1000, 1400, 1650), (1200, 1800, 2100)])
def test_a_disc_larger_than_the_frame_lighting_its_corners_is_a_fundus(height, width, disc):
    """The frame cuts the disc on every side, so its corners are lit, as a landscape web copy
    or a zoomed capture leaves them: the rim left between the cuts is a circle's."""
    quality = assess(framed(RETINA, height, width, disc))
    assert quality.lit_corners > 0.5  # the old check's "no fundus disc found"
    assert quality.gradable and quality.rim_fit < 0.05, quality


def test_a_fundus_on_a_lifted_grey_surround_is_a_disc():
    """A web copy or a scan lifts the black surround to a dark grey: the field is the disc
    above that surround, not the whole frame."""
    lifted = framed(RETINA, 900, 1200, 800)
    lifted[field_of_view(lifted) == 0] = (30, 26, 22)
    quality = assess(lifted)
    assert quality.gradable and quality.lit_corners == 0, quality
    assert 0.4 < quality.disc_fraction < 0.55  # pi / 4 * 800^2 / (900 * 1200) = 0.47


def test_a_fundus_pasted_on_a_white_ground_is_a_disc():
    """Crops on a white page (figures, web copies): the field is what stands out from the
    white, not the whole lit frame."""
    quality = assess(on_white(framed(RETINA, 700, 900, 640)))
    assert quality.gradable, quality
    assert 0.45 < quality.disc_fraction < 0.55  # pi / 4 * 640^2 / (700 * 900) = 0.51


def test_flare_over_the_field_is_stray_light_and_the_fundus_itself_has_none():
    clear, flared = assess(RETINA), assess(flare(RETINA))
    assert clear.stray_light < 0.01  # the retina sends back little blue
    assert (flared.gradable, flared.reason) == (False, STRAY_LIGHT)
    assert flared.stray_light > 2 * QualityConfig().max_stray_light


def test_a_bright_shape_that_is_no_disc_is_no_fundus():
    """An eye-shaped logo on a dark ground: lit, coloured, detailed, not a disc."""
    logo = np.zeros((600, 600, 3), np.uint8)
    cv2.ellipse(logo, (300, 300), (260, 120), 0, 0, 360, (230, 120, 60), -1)
    cv2.circle(logo, (300, 300), 80, (60, 30, 20), -1)
    cv2.putText(logo, "EYE", (230, 330), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (255, 255, 255), 6)
    quality = assess(logo)
    assert (quality.gradable, quality.reason) == (False, NO_DISC)
    assert quality.rim_fit > 0.15


def test_a_yellow_fundus_is_a_colour_fundus_and_a_grey_pupil_is_not():
    """Bright EyePACS captures and smartphone fundus cameras are yellow (red barely above
    green), and still a fundus; a grey-white pupil crop on black is not."""
    yellow = RETINA.astype(np.float32) * (1.0, 1.0, 1.0)
    yellow[..., 1] = RETINA[..., 0] * 0.95  # green nearly as high as red
    yellow = yellow.clip(0, 255).astype(np.uint8)
    assert assess(yellow).gradable, assess(yellow)
    grey = np.zeros((300, 300, 3), np.uint8)
    cv2.circle(grey, (150, 150), 140, (95, 80, 70), -1)  # a brown iris
    cv2.circle(grey, (150, 150), 90, (200, 200, 195), -1)  # the grey-white lens
    grey = cv2.add(grey, np.random.default_rng(0).integers(0, 40, grey.shape, dtype=np.uint8))
    grey[field_of_view(grey) == 0] = 0
    assert assess(grey).reason == NOT_COLOUR_FUNDUS


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
    from retino.data.prepare.preprocess import graham

    photograph = cv2.cvtColor(framed(RETINA, 1200, 1800, 1500), cv2.COLOR_RGB2BGR)
    enhanced = graham(photograph, 512).astype(int)
    rows = np.abs(enhanced[:, 150:360] - 128).mean(axis=(1, 2))
    assert rows.max() < 40
    assert rows[200:300].mean() > 5  # the retina itself is kept


def test_a_run_made_before_the_real_camera_measures_is_judged_by_todays_focus_and_colour():
    """An older run holds min_sharpness 0.04 on the Laplacian's scale (every photograph would
    pass the band ratio at it), min_red_ratio 1.15 (which refused yellow smartphone captures)
    and max_lit_corners, which the schema no longer has: predict and the served model take
    today's defaults for those, and keep the run's other thresholds."""
    from omegaconf import OmegaConf

    from retino.serving.grader import quality_settings

    older = OmegaConf.create({"quality": {
        "name": "heuristic", "min_disc_fraction": 0.2, "max_lit_corners": 0.5,
        "min_contrast": 0.03, "min_red_ratio": 1.15, "dark_level": 40,
        "max_dark_fraction": 0.5, "bright_level": 250, "max_bright_fraction": 0.25,
        "min_sharpness": 0.04}})
    settings = quality_settings(older)
    defaults = QualityConfig()
    assert settings.min_sharpness == defaults.min_sharpness
    assert settings.min_red_ratio == defaults.min_red_ratio
    assert settings.min_disc_fraction == 0.2  # the run's own choice, on an unchanged measure
    assert assess(cv2.GaussianBlur(RETINA, (0, 0), 8), settings).reason == OUT_OF_FOCUS
    newer = OmegaConf.create({"quality": {"name": "heuristic", "max_rim_fit": 0.15,
                                          "min_sharpness": 0.7}})
    assert quality_settings(newer).min_sharpness == 0.7  # a newer run's threshold is kept


def test_evaluate_composes_a_run_made_before_the_real_camera_measures():
    """retino.evaluate validates the trained run's config: an older run's quality block (with
    max_lit_corners, without max_rim_fit) used to stop it with a raw ConfigKeyError."""
    from omegaconf import OmegaConf

    from retino.serving.external import evaluation_config
    from tests.conftest import TINY, compose_config

    trained = OmegaConf.create(OmegaConf.to_container(compose_config(TINY)))  # as stored
    trained.quality = OmegaConf.create({
        "name": "heuristic", "min_disc_fraction": 0.2, "max_lit_corners": 0.5,
        "min_contrast": 0.03, "min_red_ratio": 1.15, "dark_level": 40,
        "max_dark_fraction": 0.5, "bright_level": 250, "max_bright_fraction": 0.25,
        "min_sharpness": 0.04})
    cfg = evaluation_config(trained, [])
    assert cfg.quality.max_rim_fit == QualityConfig().max_rim_fit
    assert cfg.quality.min_sharpness == QualityConfig().min_sharpness
    assert cfg.quality.min_disc_fraction == 0.2


@pytest.mark.parametrize("name, edit", [
    ("a 1 px white line round the frame", lambda im: cv2.rectangle(im, (0, 0), (
        im.shape[1] - 1, im.shape[0] - 1), (255, 255, 255), 1)),
    ("a 1 px grey line along the top", lambda im: cv2.line(im, (0, 0), (im.shape[1] - 1, 0),
                                                           (128, 128, 128), 1)),
])
def test_a_thin_line_along_the_edge_does_not_speak_for_the_surround(name, edit):
    quality = assess(edit(RETINA.copy()))
    assert quality.gradable, (name, quality)


def test_a_grey_or_four_channel_photograph_is_assessed_and_other_arrays_are_refused():
    grey = cv2.cvtColor(RETINA, cv2.COLOR_RGB2GRAY)
    assert assess(grey).reason == NOT_COLOUR_FUNDUS
    assert assess(np.dstack([RETINA, np.full(RETINA.shape[:2], 255, np.uint8)])).gradable
    with pytest.raises(ValueError, match="8-bit"):
        assess(RETINA.astype(np.uint16))
    with pytest.raises(ValueError, match="height, width, 3"):
        assess(np.zeros((8, 8, 2), np.uint8))
