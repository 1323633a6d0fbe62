"""The moving average of the weights (ema_decay): what a run evaluates, selects and keeps."""

import pytest
import torch

from retino.training.ema import WeightAverage
from retino.training.pipeline import train_and_evaluate
from tests.conftest import TINY, compose_config
from tests.helpers.runs import DiesAfterEpoch


def test_the_average_is_the_hand_computed_one_and_leaves_the_training_weights_alone():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = WeightAverage(model, decay=0.5)
    assert [ema.current_decay()] == [0.1]  # the first update: min(0.5, 1 / 10)
    ema.updates = 10  # past the warm-up: min(0.5, 11 / 20) = 0.5
    for value in (3.0, 5.0):  # two steps: the weight moves to 3, then to 5
        with torch.no_grad():
            model[0].weight.fill_(value)
        ema.update(model)
    # 1 -> 0.5 * 1 + 0.5 * 3 = 2 -> 0.5 * 2 + 0.5 * 5 = 3.5
    assert torch.allclose(ema.average["0.weight"], torch.full((1, 2), 3.5))
    assert ema.updates == 12 and ema.state_dict()["updates"] == 12
    assert "1.num_batches_tracked" not in ema.average  # an integer buffer follows the model
    with ema.swapped_in(model):
        assert torch.allclose(model[0].weight, torch.full((1, 2), 3.5))
    assert torch.allclose(model[0].weight, torch.full((1, 2), 5.0))  # swapped back
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(model, decay=1.0)


@pytest.mark.slow
def test_a_run_with_ema_keeps_the_average_and_resumes_it_exactly(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "epochs=2", "deterministic=true",
                        "ema_decay=0.9", "data.val_fraction=0", "data.num_workers=0"]
    straight = train_and_evaluate(compose_config(overrides), tmp_path / "a")
    kept = torch.load(tmp_path / "a" / "model_state.pt", weights_only=True)
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert torch.equal(kept["fc.weight"], last["ema"]["average"]["fc.weight"])  # the average
    assert not torch.equal(kept["fc.weight"], last["model"]["fc.weight"])  # not the last step
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(compose_config(overrides), tmp_path / "b", DiesAfterEpoch(1))
    resumed = train_and_evaluate(compose_config(overrides), tmp_path / "b", resume=True)
    again = torch.load(tmp_path / "b" / "model_state.pt", weights_only=True)
    assert torch.allclose(again["fc.weight"], kept["fc.weight"], atol=1e-6)
    assert resumed.history[1]["test_acc"] == straight.history[1]["test_acc"]
