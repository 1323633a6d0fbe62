import numpy as np
import pytest
import torch

from retino.training.loop import seed_everything
from retino.training.optimization import build_criterion
from retino.training.pipeline import prepare_model, train_and_evaluate
from tests.conftest import TINY, compose_config
from tests.helpers.runs import DiesAfterEpoch


def test_one_epoch_fit_writes_every_run_file(tmp_path):
    out = tmp_path / "run"
    result = train_and_evaluate(compose_config([*TINY, f"data.root={tmp_path / 'demo'}",
                                                "plots=true"]), out)
    assert [row["epoch"] for row in result.history] == [1]
    row = result.history[0]
    assert 0 <= row["test_acc"] <= 1 and -1 <= row["test_qwk"] <= 1
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["test_loss"])
    assert result.confusion.sum() == 10
    for name in ("accuracy.png", "confusion_matrix.png", "roc_referable.png", "calibration.png",
                 "decision_curve.png", "confusion_matrix.csv", "history.csv", "config.yaml",
                 "model_state.pt", "last.pt", "report.html"):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "model_state.pt", weights_only=True)
    assert state["fc.weight"].shape == (5, 512)
    counts = np.loadtxt(out / "confusion_matrix.csv", delimiter=",", skiprows=1,
                        usecols=range(1, 6))
    assert counts.sum() == 10 and (counts == result.confusion).all()


@pytest.mark.slow(seconds=11)
def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "epochs=2", "augmentation=strong",
                        "deterministic=true"]
    # Uninterrupted with 2 persistent loader workers; interrupted with none and resumed with 2:
    # the same batches and the same augmentations, so the same numbers.
    straight = train_and_evaluate(compose_config([*overrides, "data.num_workers=2"]),
                              tmp_path / "a").history
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(compose_config([*overrides, "data.num_workers=0"]), tmp_path / "b",
                       DiesAfterEpoch(1))
    resumed = train_and_evaluate(compose_config([*overrides, "data.num_workers=2"]), tmp_path / "b",
                             resume=True).history
    assert [row["epoch"] for row in resumed] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed[1][key] == pytest.approx(straight[1][key], abs=1e-6), key
    checkpoint = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "epoch", "config", "history",
                               "scaler", "selection", "selected_model"}
    assert checkpoint["epoch"] == 2 and [row["epoch"] for row in checkpoint["history"]] == [1, 2]


@pytest.mark.slow
def test_same_seed_same_result_and_deterministic_flag_does_not_leak(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "deterministic=true"]
    first = train_and_evaluate(compose_config(overrides), tmp_path / "a").history
    assert torch.are_deterministic_algorithms_enabled()
    second = train_and_evaluate(compose_config(overrides), tmp_path / "b").history
    assert first[0]["train_loss"] == second[0]["train_loss"]
    assert first[0]["test_acc"] == second[0]["test_acc"]
    train_and_evaluate(compose_config(overrides[:-1]), tmp_path / "c")  # next job of a sweep
    assert not torch.are_deterministic_algorithms_enabled()


def test_frozen_backbone_run_trains_only_the_head(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "freeze=backbone"])
    seed_everything(cfg.seed)
    initial = prepare_model(cfg).state_dict()  # the same seed gives train_and_evaluate's init
    train_and_evaluate(cfg, tmp_path / "run")
    final = torch.load(tmp_path / "run" / "model_state.pt", weights_only=True)
    changed = {k for k in initial if not torch.equal(initial[k], final[k])}
    assert changed == {"fc.weight", "fc.bias"}


@pytest.mark.slow
def test_imbalance_options(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "imbalance=weighted_loss"])
    grades = [0] * 8 + [1, 2, 3, 4]
    weights = build_criterion(cfg, grades).weight
    assert weights[1] == pytest.approx(8 * weights[0])  # 8 times rarer, 8 times the weight
    assert build_criterion(compose_config(TINY), grades).weight is None
    sgd_step = [f"data.root={tmp_path / 'demo'}", "optimizer=sgd", "schedule=step",
                "schedule.step_size=3", "epochs=1"]
    plain = train_and_evaluate(compose_config(TINY + sgd_step), tmp_path / "a").history[0]
    balanced = train_and_evaluate(compose_config(TINY + sgd_step + ["imbalance=balanced_sampler"]),
                              tmp_path / "b").history[0]
    # The same seed draws other images when the sampler balances the grades.
    assert balanced["train_loss"] != plain["train_loss"]
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["momentum"] == 0.9  # SGD's, not AdamW's
    assert state["scheduler"]["step_size"] == 3  # StepLR, as asked


class StepRecorder:
    """A tracker that remembers logged steps, and can die at a given step like a killed job."""

    def __init__(self, die_at=None, logged=()):
        self.steps, self.die_at, self.logged = [], die_at, set(logged)

    def log_metrics(self, metrics, step):
        if step == self.die_at:
            raise KeyboardInterrupt  # killed after the checkpoint, before the metrics went out
        if "test_acc" in metrics:  # an epoch's row (not the selected epoch's summary)
            self.steps.append(step)

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        pass

    def logged_steps(self, key):
        return self.logged

    def log_artifact(self, path):
        pass


def test_resume_after_a_kill_between_checkpoint_and_logging_loses_no_epoch(tmp_path):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "epochs=2"])
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(cfg, tmp_path / "run", StepRecorder(die_at=2))
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = StepRecorder(logged={1})
    result = train_and_evaluate(cfg, tmp_path / "run", resumed, resume=True)
    assert resumed.steps == [2]  # the missing epoch is logged from the checkpoint, once
    assert [row["epoch"] for row in result.history] == [1, 2]  # nothing trained again
    assert result.confusion.sum() == 10
    # plots=false (TINY): the run's page and tables, without a figure
    assert (tmp_path / "run" / "report.html").is_file()
    assert not list((tmp_path / "run").glob("*.png"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_weighted_run_resumes_on_a_gpu(tmp_path):
    """What CPU tests cannot see: optimizer state and class weights on the right device."""
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "device=cuda",
                        "imbalance=weighted_loss", "optimizer=sgd"]
    train_and_evaluate(compose_config(overrides + ["epochs=1"]), tmp_path / "run")
    resumed = train_and_evaluate(compose_config(overrides + ["epochs=2"]), tmp_path / "run",
                             resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def _tiny_training(device):
    """A small model, optimizer and six batches of 4 images as the loader gives them (uint8,
    channels last, with rotation and colour-jitter parameters), on device."""
    from retino.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18").to(device)
    batches = [(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2),
                torch.randint(0, 5, (4,)), torch.tensor([[10.0, 1.1, 0.9, 1.0]] * 4))
               for _ in range(6)]
    return model, torch.optim.SGD(model.parameters(), lr=0.01), batches


def test_an_epoch_reads_its_sums_from_the_device_once_not_every_step(monkeypatch):
    import sys

    from retino.training.loop import train_one_epoch

    reads = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args):
            if sys._getframe(1).f_code.co_filename.endswith("retino/training/loop.py"):
                reads.append(name)  # a read the training loop itself makes
            return original(self, *args)
        return read

    for name in ("item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    model, optimizer, batches = _tiny_training(torch.device("cpu"))
    result = train_one_epoch(model, batches, torch.nn.CrossEntropyLoss(), optimizer,
                             torch.device("cpu"), epoch=1)
    assert len(reads) == 2  # loss and accuracy, once per epoch, whatever the number of steps
    assert 0 <= result["train_acc"] <= 1 and result["train_loss"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_steps_never_wait_for_the_gpu():
    from retino.training.loop import train_one_epoch

    device = torch.device("cuda")
    model, optimizer, batches = _tiny_training(device)
    loss = torch.nn.CrossEntropyLoss()
    # One epoch first, outside the check: CUDA caches its device properties on first use (a
    # sync), so the test holds whichever test ran before it, and alone.
    train_one_epoch(model, iter(batches[:1]), loss, optimizer, device, epoch=1)
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the steps raises
    try:
        steps = iter(batches)
        with pytest.raises(RuntimeError):  # ... and the one at the end, reading the sums, does
            train_one_epoch(model, steps, loss, optimizer, device, epoch=1)
        assert next(steps, None) is None  # every step ran before the first sync
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_batches_reach_the_step_in_order_and_whole():
    from retino.training.precision import ahead_on_device

    batches = [(torch.full((2, 3), i), torch.tensor([i, i])) for i in range(3)]
    seen = list(ahead_on_device(iter(batches), torch.device("cpu")))
    assert [int(images[0, 0]) for images, _ in seen] == [0, 1, 2]
    assert list(ahead_on_device(iter([]), torch.device("cpu"))) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_copied_ahead_on_a_gpu_side_stream_arrive_intact():
    from retino.training.precision import ahead_on_device

    device = torch.device("cuda")
    batches = [(torch.full((64, 3, 64, 64), i, dtype=torch.uint8).pin_memory(),
                torch.tensor([i] * 64).pin_memory()) for i in range(5)]
    for i, (images, grades) in enumerate(ahead_on_device(iter(batches), device)):
        images = images.float() * 2  # work queued on the step's stream, as training does
        assert images.device.type == "cuda" and int(grades[0]) == i
        assert bool((images == 2 * i).all())
