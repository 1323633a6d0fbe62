"""The heads a model can end in: the ordinal (cumulative-logit) head's probabilities, its loss,
and a whole run with it."""

import numpy as np
import pandas as pd
import torch

from retino.models import build_model
from retino.models.heads import CumulativeLogits
from retino.training.pipeline import train_and_evaluate
from tests.conftest import TINY, compose_config


def test_ordinal_probabilities_are_valid_and_rank_consistent():
    torch.manual_seed(0)
    head = CumulativeLogits(8)
    with torch.no_grad():
        head.weight.normal_()
        head.bias.normal_()  # any parameters: the cut points still come out ordered
    probs = head(torch.randn(64, 8)).exp()
    assert (probs >= 0).all() and torch.allclose(probs.sum(dim=1), torch.ones(64), atol=1e-5)
    above = 1 - probs.cumsum(dim=1)[:, :-1]  # P(grade > k), k = 0..3
    assert (above[:, 1:] <= above[:, :-1] + 1e-6).all()  # never more likely above a higher cut
    cuts = head.cut_points()
    assert (cuts[1:] >= cuts[:-1]).all()
    # A higher severity score never lowers the expected grade.
    features = torch.randn(64, 8)
    scores = (features @ head.weight.t())[:, 0]
    expected = (head(features).exp() * torch.arange(5)).sum(dim=1)
    ranked = expected[scores.argsort()]
    assert (ranked[1:] >= ranked[:-1] - 1e-5).all()


def test_the_ordinal_likelihood_falls_as_it_learns():
    torch.manual_seed(0)
    features = torch.randn(200, 8)
    grades = (features[:, 0] * 1.5 + 2).round().clamp(0, 4).long()  # severity along feature 0
    head = CumulativeLogits(8)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head(features), grades)  # = ordinal NLL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    predicted = head(features).argmax(dim=1)
    assert (predicted == grades).float().mean() > 0.6


def test_an_ordinal_model_keeps_torchvision_names_and_a_run_works_end_to_end(tmp_path):
    model = build_model("resnet18", head="ordinal")
    assert model.state_dict()["fc.weight"].shape == (1, 512)
    assert model.state_dict()["fc.bias"].shape == (4,)
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "head=ordinal",
                                 "cam_per_grade=1", "data.val_fraction=0.25",
                                 "data.train_size=40"])
    result = train_and_evaluate(cfg, tmp_path / "run")
    test = pd.read_csv(tmp_path / "run" / "predictions_test.csv")
    assert np.allclose(test[[f"p{g}" for g in range(5)]].sum(axis=1), 1, atol=1e-5)
    assert (tmp_path / "run" / "class_activation_maps.png").is_file()
    assert "test_referable_brier_selected" in result.selected
    assert 0 <= result.selected["test_acc_selected"] <= 1
