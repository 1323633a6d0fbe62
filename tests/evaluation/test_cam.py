import torch

from retino.evaluation.cam import class_activation_maps, pick_per_grade
from retino.models import build_model
from retino.training.pipeline import train_and_evaluate
from tests.conftest import TINY, compose_config


def test_maps_follow_the_prediction_and_sum_to_its_logit():
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    images = torch.randn(3, 3, 64, 64)
    maps, predicted = class_activation_maps(model, images)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    with torch.no_grad():
        logits = model(images)
        assert predicted.tolist() == logits.argmax(1).tolist()
        # CAM's defining identity: the map's mean (before ReLU) is the logit minus its bias.
        features = model.features(images)
        raw = torch.einsum("bc,bchw->bhw", model.fc.weight[logits.argmax(1)], features)
        expected = logits.max(1).values - model.fc.bias[logits.argmax(1)]
        torch.testing.assert_close(raw.mean(dim=(1, 2)), expected, rtol=1e-4, atol=1e-4)


def test_fixed_images_per_grade():
    grades = [0, 0, 0, 2, 1, 2, 4, 0]
    assert pick_per_grade(grades, 2) == [0, 1, 4, 3, 5, 6]


def test_run_logs_the_maps_when_asked(tmp_path):
    """The figure shows the heat maps, not only the photographs: the demo's fundus lies on a
    black background (a fifth of the figure without the maps), which every colour of the maps'
    jet scale tints."""
    from matplotlib.image import imread

    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "cam_per_grade=1", "plots=true",
                                 "resolution.size=64"])  # maps of 2 x 2, not one colour
    train_and_evaluate(cfg, tmp_path / "run")
    figure = imread(tmp_path / "run" / "class_activation_maps.png")[..., :3]  # RGB in [0, 1]
    black = figure.max(axis=2) < 0.03
    assert black.mean() < 0.01  # only the titles' letters
