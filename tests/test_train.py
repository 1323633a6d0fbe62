import numpy as np
import torch

from retino.experiment import build_optimizer, build_scheduler, prepare_model, run_experiment
from retino.train import load_checkpoint
from tests.conftest import TINY, compose_config


def test_one_epoch_fit_writes_every_run_file(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    result = run_experiment(tiny_cfg, out)
    assert [row["epoch"] for row in result.history] == [1]
    row = result.history[0]
    assert 0 <= row["test_acc"] <= 1 and -1 <= row["test_qwk"] <= 1
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["test_loss"])
    assert result.confusion.sum() == 10
    for name in ("accuracy.png", "confusion_matrix.png", "confusion_matrix.csv", "history.csv",
                 "config.yaml", "model_state.pt", "last.pt"):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "model_state.pt", weights_only=True)
    assert state["fc.weight"].shape == (5, 512)


def test_checkpoint_holds_everything_to_resume(tiny_cfg, tmp_path):
    run_experiment(tiny_cfg, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "epoch", "config"}
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["model"]["name"] == "resnet18"
    cfg = compose_config(TINY)
    model = prepare_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    assert load_checkpoint(tmp_path / "run" / "last.pt", model, optimizer, scheduler) == 1
    assert torch.equal(model.state_dict()["fc.bias"], checkpoint["model"]["fc.bias"])


def test_same_seed_same_result_with_deterministic_mode(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "deterministic=true"]
    first = run_experiment(compose_config(overrides), tmp_path / "a").history
    second = run_experiment(compose_config(overrides), tmp_path / "b").history
    for key in ("train_loss", "test_loss", "test_acc"):
        assert first[0][key] == second[0][key]


def test_frozen_backbone_run_and_imbalance_options(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "freeze=backbone",
                        "imbalance=weighted_loss"]
    run_experiment(compose_config(overrides), tmp_path / "a")
    overrides[-1] = "imbalance=balanced_sampler"
    run_experiment(compose_config(overrides + ["optimizer=sgd", "schedule=step"]), tmp_path / "b")
