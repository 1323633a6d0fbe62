"""CIFAR-10 initialisation on a tiny folder in torchvision's exact on-disk format."""

import pickle
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from retino.cifar10 import FOLDER, checkpoint_path, read_cifar10
from retino.errors import DataError
from retino.experiment import run_experiment
from retino.tracker import NullTracker
from tests.conftest import TINY, compose_config


def write_cifar10(root, per_batch=8):
    """cifar-10-batches-py/ with pickled data_batch_1..5, test_batch and batches.meta: dicts with
    bytes keys, data (N, 3072) uint8 in channel-major order, labels a list of ints."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat",
            "deer", "dog", "frog", "horse", "ship", "truck")], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


class Recorder(NullTracker):
    def __init__(self):
        self.tags, self.metrics = {}, []
        self.run_id = "pretraining-run-id"

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))


def cifar_cfg(tmp_path):
    return compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "pretrained=true",
                                  "pretrain=cifar10", f"pretrain.root={tmp_path / 'cifar'}",
                                  "pretrain.download=false", "pretrain.epochs=2",
                                  "pretrain.batch_size=8", f"pretrain.cache_dir={tmp_path / 'ck'}"])


def test_reads_the_pickled_format_and_checks_it(tmp_path):
    write_cifar10(tmp_path)
    data = read_cifar10(tmp_path, download=False)
    assert data["train"][0].shape == (40, 3, 32, 32) and data["test"][1].shape == (8,)
    batch = pickle.loads((tmp_path / FOLDER / "test_batch").read_bytes())
    batch[b"data"] = batch[b"data"][:, :100]  # wrong shape
    (tmp_path / FOLDER / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"expected \(N, 3072\)"):
        read_cifar10(tmp_path, download=False)


def test_missing_folder_without_download_names_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_cifar10(tmp_path / "nowhere", download=False)


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
    run_experiment(cfg, tmp_path / "a", first, run_factory)
    assert [name for name, _, _ in opened] == ["cifar10-pretrain-resnet18"]
    _, params, pretraining = opened[0]
    assert params["epochs"] == 2 and params["model"] == "resnet18"
    assert [step for step, _ in pretraining.metrics] == [1, 2]  # its own run, per epoch
    assert first.tags == {"cifar10_pretrain_run_id": "pretraining-run-id"}
    checkpoint = checkpoint_path("resnet18", cfg.pretrain)
    state = torch.load(checkpoint, weights_only=True)
    assert state["fc.weight"].shape == (10, 512)  # the CIFAR-10 head, dropped when loaded
    second = Recorder()
    run_experiment(cfg, tmp_path / "b", second, run_factory)
    assert len(opened) == 1  # reused: nothing trained
    assert second.tags == first.tags


def test_checkpoint_name_changes_with_the_recipe(tmp_path):
    cfg = cifar_cfg(tmp_path)
    other = compose_config(["pretrain=cifar10", "pretrain.epochs=3",
                            f"pretrain.cache_dir={tmp_path / 'ck'}"])
    assert checkpoint_path("resnet18", cfg.pretrain) != checkpoint_path("resnet18", other.pretrain)
    assert checkpoint_path("resnet18", cfg.pretrain) != checkpoint_path("resnet50", cfg.pretrain)
