"""Rotation and colour jitter on the training device, with parameters drawn per image in the
loader worker from the image's own seed."""

import pytest
import torch
from torchvision.transforms import v2

from retino.data.load.device_augment import augment_on_device, draw_device_params, jitter, rotate
from retino.data.load.loaders import training_set
from tests.conftest import compose_config
from tests.helpers.sources import make_kaggle_folder


def images(seed=0, size=16):
    return torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_identity_parameters_leave_the_images_as_they_are():
    batch = images()
    same = augment_on_device(batch, torch.tensor([[0.0, 1.0, 1.0, 1.0]] * 4))
    torch.testing.assert_close(same, batch, rtol=0, atol=1e-6)


def test_rotation_turns_like_torchvision():
    batch = images()
    turned = rotate(batch, torch.full((4,), 90.0))
    expected = v2.functional.rotate(batch, 90.0, interpolation=v2.InterpolationMode.BILINEAR)
    torch.testing.assert_close(turned, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(turned, torch.rot90(batch, 1, dims=(2, 3)), rtol=0, atol=1e-5)


def test_colour_factors_per_image():
    batch = images()
    ones = torch.ones(4)
    darker = jitter(batch, torch.tensor([0.5, 1, 1, 1]), ones, ones)
    torch.testing.assert_close(darker[0], batch[0] * 0.5)
    torch.testing.assert_close(darker[1:], batch[1:])  # the other images untouched
    grey = jitter(batch, ones, ones, torch.zeros(4))  # saturation 0: every channel the same
    torch.testing.assert_close(grey[:, 0], grey[:, 2])
    flat = jitter(batch, ones, torch.zeros(4), ones)  # contrast 0: the image's mean grey
    assert flat.flatten(1).std(dim=1).max() < 1e-6


def test_strong_samples_carry_their_parameters_drawn_from_their_seed(tmp_path):
    root = make_kaggle_folder(tmp_path / "dr")
    cfg = compose_config(["augmentation=strong", "data=kaggle", f"data.root={root}"])
    from retino.data.load.loaders import read_index

    dataset = training_set(read_index(cfg.data)["train"], cfg.augmentation, 32)
    image, grade, params = dataset[(2, 1234)]
    assert image.dtype == torch.uint8 and grade == 2 and params.shape == (4,)
    assert abs(params[0]) <= 180 and 0.8 <= params[1] <= 1.2 and 0.9 <= params[3] <= 1.1
    assert torch.equal(dataset[(2, 1234)][2], params)  # the same seed, the same draw
    assert not torch.equal(dataset[(2, 99)][2], params)
    flip_only = training_set(read_index(cfg.data)["train"],
                             compose_config(["augmentation=flip"]).augmentation, 32)
    assert len(flip_only[(2, 1234)]) == 2  # nothing for the device to do


@pytest.mark.parametrize("degrees, jitter_strength", [(0.0, 0.2), (30.0, 0.0)])
def test_draws_stay_in_their_ranges(degrees, jitter_strength):
    torch.manual_seed(0)
    draws = torch.stack([draw_device_params(degrees, jitter_strength) for _ in range(200)])
    assert draws[:, 0].abs().max() <= degrees
    assert (draws[:, 1:3] - 1).abs().max() <= jitter_strength + 1e-6
