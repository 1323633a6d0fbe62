"""CIFAR-10 initialisation on a tiny folder in torchvision's exact on-disk format."""

import multiprocessing
import os
import pickle
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from retino.core.errors import DataError
from retino.training.cifar10 import (
    FOLDER,
    ON_CPU,
    PretrainDevice,
    checkpoint_path,
    cifar10_weights,
    read_cifar10,
)
from retino.training.pipeline import train_and_evaluate
from retino.training.precision import StepSettings
from retino.training.tracker import NullTracker
from tests.conftest import compose_config
from tests.helpers.processes import exit_codes
from tests.helpers.runs import cifar_cfg_overrides
from tests.helpers.sources import write_cifar10


class Recorder(NullTracker):
    def __init__(self):
        self.tags, self.metrics = {}, []
        self.run_id = "pretraining-run-id"

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))


def cifar_cfg(tmp_path):
    return compose_config(cifar_cfg_overrides(tmp_path))


def test_reads_the_pickled_format_and_checks_it(tmp_path):
    write_cifar10(tmp_path)
    data = read_cifar10(tmp_path, download=False)
    assert data["train"][0].shape == (40, 3, 32, 32) and data["test"][1].shape == (8,)
    batch = pickle.loads((tmp_path / FOLDER / "test_batch").read_bytes())
    batch[b"data"] = batch[b"data"][:, :100]  # wrong shape
    (tmp_path / FOLDER / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"expected \(N, 3072\)"):
        read_cifar10(tmp_path, download=False)


class _Payload:
    """What a crafted pickle carries: unpickling it calls a function of the writer's choice
    (here one that leaves a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_batch_runs_no_code_and_is_named(tmp_path):
    """The probe's crafted data_batch_1 ran its payload on every read, and the run exited 0."""
    write_cifar10(tmp_path)
    marker = tmp_path / "payload-ran"
    crafted = {b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 8,
               b"filenames": _Payload(marker)}
    (tmp_path / FOLDER / "data_batch_1").write_bytes(pickle.dumps(crafted, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1 is not plain data: its pickle calls "):
        read_cifar10(tmp_path, download=False)
    assert not marker.exists()


class _Huge:
    """Pickles as numpy's array rebuild asked for a shape it then never fills."""

    def __reduce__(self):
        return (np.core.multiarray._reconstruct, (np.ndarray, (60_000, 3072, 1000), b"b"))


def test_a_batch_cannot_make_an_array_its_file_does_not_hold(tmp_path):
    """A 150-byte pickle asked numpy's own rebuild for 184 GB (reserved, not yet touched): only
    the empty start numpy's pickles use is let through, and real batches still read."""
    from retino.core.pickles import load_data_pickle

    crafted = tmp_path / "data_batch_1"
    crafted.write_bytes(pickle.dumps({b"data": _Huge()}, protocol=2))
    with pytest.raises(DataError, match=r"an array of shape \(60000, 3072, 1000\) is built"):
        load_data_pickle(crafted, encoding="bytes")
    real = tmp_path / "real"
    real.write_bytes(pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3)}))
    assert load_data_pickle(real, encoding="bytes")[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_missing_folder_without_download_names_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_cifar10(tmp_path / "nowhere", download=False)


@pytest.mark.slow
def test_cifar10_init_trains_once_then_reuses_the_checkpoint(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = cifar_cfg(tmp_path)
    opened = []

    @contextmanager
    def run_factory(name, params):
        recorder = Recorder()
        opened.append((name, params, recorder))
        yield recorder

    first = Recorder()
    train_and_evaluate(cfg, tmp_path / "a", first, run_factory)
    assert [name for name, _, _ in opened] == ["cifar10-pretrain-resnet18"]
    _, params, pretraining = opened[0]
    assert params["epochs"] == 2 and params["model"] == "resnet18"
    assert [step for step, _ in pretraining.metrics] == [1, 2]  # its own run, per epoch
    assert first.tags["cifar10_pretrain_run_id"] == "pretraining-run-id"
    checkpoint = checkpoint_path("resnet18", cfg.pretrain)
    state = torch.load(checkpoint, weights_only=True)
    assert state["fc.weight"].shape == (10, 512)  # the CIFAR-10 head, dropped when loaded
    second = Recorder()
    train_and_evaluate(cfg, tmp_path / "b", second, run_factory)
    assert len(opened) == 1  # reused: nothing trained
    described = "mlflow.note.content"  # each run's description names its own folder
    assert {k: v for k, v in second.tags.items() if k != described} == \
        {k: v for k, v in first.tags.items() if k != described}


def test_checkpoint_name_changes_with_the_recipe(tmp_path):
    cfg = cifar_cfg(tmp_path)
    other = compose_config(["pretrain=cifar10", "pretrain.epochs=3",
                            f"pretrain.cache_dir={tmp_path / 'ck'}"])
    assert checkpoint_path("resnet18", cfg.pretrain) != checkpoint_path("resnet18", other.pretrain)
    assert checkpoint_path("resnet18", cfg.pretrain) != checkpoint_path("resnet50", cfg.pretrain)


@pytest.mark.slow
def test_a_deterministic_run_is_the_same_on_a_cache_miss_and_a_cache_hit(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = compose_config([*cifar_cfg_overrides(tmp_path), "deterministic=true"])
    miss = train_and_evaluate(cfg, tmp_path / "a").history  # pretrains first
    assert len(list((tmp_path / "ck").glob("cifar10-resnet18-*.pt"))) == 1
    hit = train_and_evaluate(cfg, tmp_path / "b").history  # reuses the checkpoint
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert miss[0][key] == hit[0][key], key


def test_dr_data_is_checked_before_pretraining_starts(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = compose_config([*cifar_cfg_overrides(tmp_path)[1:], "data=kaggle",
                          f"data.root={tmp_path}"])  # no split CSVs there
    opened = []
    with pytest.raises(DataError, match="train_img.csv"):
        train_and_evaluate(cfg, tmp_path / "run", run_factory=lambda *a: opened.append(a))
    assert opened == [] and not (tmp_path / "ck").exists()


def test_pretraining_leaves_the_callers_random_state_and_flags_as_they_were(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = cifar_cfg(tmp_path)
    torch.manual_seed(123)
    np.random.seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    pretraining = PretrainDevice(deterministic=True)  # flags of its own while it trains
    cifar10_weights("resnet18", cfg.pretrain, run_factory=lambda *a: nullcontext(Recorder()),
                    on=pretraining)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all()
    assert not torch.are_deterministic_algorithms_enabled()


def test_checkpoints_made_differently_are_cached_apart(tmp_path):
    pretrain = cifar_cfg(tmp_path).pretrain
    paths = {checkpoint_path("resnet18", pretrain, on) for on in (
        ON_CPU, PretrainDevice(deterministic=True),
        PretrainDevice(settings=StepSettings(precision="bf16")),
        PretrainDevice(device=torch.device("cuda")))}
    assert len(paths) == 4


def _pretrain_in_a_process(tmp_path, run_ids):
    """One job's view: the recipe's weights, pretrained in a tracked run when missing."""
    from retino.tracking.runs import mlflow_run

    torch.set_num_threads(1)  # forked: the parent's OpenMP threads are not the child's to use
    cfg = cifar_cfg(tmp_path)
    _, tags = cifar10_weights("resnet18", cfg.pretrain, lambda name, params: mlflow_run(
        "retino", name, params, {"purpose": "cifar10 pretraining"}))
    run_ids.put(tags["cifar10_pretrain_run_id"])


def test_two_jobs_with_one_recipe_pretrain_once_and_share_that_run(tmp_path):
    write_cifar10(tmp_path / "cifar")
    # forked: each job a process of its own with its own locks and store connection, without
    # the 8 s of imports a new interpreter would pay (the two race as jobs do, only sooner);
    # spawned where a GPU is, whose autograd threads make a forked child's backward refuse
    context = multiprocessing.get_context("spawn" if torch.cuda.is_available() else "fork")
    run_ids = context.Queue()
    jobs = [(tmp_path, run_ids)] * 2
    assert exit_codes(context, _pretrain_in_a_process, jobs) == [0, 0]
    first, second = run_ids.get(timeout=5), run_ids.get(timeout=5)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("retino").experiment_id])
    assert [run.info.run_name for run in runs] == ["cifar10-pretrain-resnet18"]
    assert first == second == runs[0].info.run_id
