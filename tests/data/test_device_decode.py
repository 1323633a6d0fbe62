"""data.decode=gpu: the workers read bytes and draw geometry, the training device decodes. Here
the device is the CPU (the same code path; on CUDA nvJPEG decodes, tested in test_gpu.py)."""

import logging

import pytest
import torch

from retino.core.errors import DataError
from retino.data.layout import read_split_index
from retino.data.load.device_decode import JpegBatch
from retino.data.load.loaders import build_loaders, data_loaders, evaluation_set, training_set
from retino.data.prepare.demo import ensure_demo_dataset
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def fundus_index(tmp_path_factory):
    """Structured images (the demo's fundus photographs): a wrong crop or flip shows."""
    root = ensure_demo_dataset(tmp_path_factory.mktemp("demo"), 10, 5, 96, seed=1)
    return read_split_index(root, root / "images", "train")


def batch_of(dataset, items):
    return dataset.collate([dataset[item] for item in items])


@pytest.mark.parametrize("augmentation", ["none", "flip", "strong"])
def test_decoding_on_the_device_gives_the_workers_images_for_the_same_seeds(
        fundus_index, augmentation):
    aug = compose_config([f"augmentation={augmentation}"]).augmentation
    items = [(i, 1000 + i) for i in range(len(fundus_index))]
    on_cpu = batch_of(training_set(fundus_index, aug, 64), items)
    encoded = batch_of(training_set(fundus_index, aug, 64, decode="gpu"), items)
    assert isinstance(encoded[0], JpegBatch)
    images = encoded[0].to("cpu")
    assert images.shape == (10, 3, 64, 64) and images.dtype == torch.uint8
    # The same decoder library on the CPU: equal, crop, flips and all. (nvJPEG rounds its own
    # way: test_gpu.py allows for that.)
    assert torch.equal(images, on_cpu[0])
    for cpu_part, device_part in zip(on_cpu[1:], encoded[1:], strict=True):
        assert torch.equal(cpu_part, device_part)  # grades, rotation and jitter parameters
    if augmentation != "none":  # the seeds did move something: not the plain images
        plain = batch_of(evaluation_set(fundus_index, 64, decode="gpu"), range(10))[0].to("cpu")
        assert not torch.equal(images, plain)


def test_an_undecodable_file_is_named_with_the_fix(tmp_path, fundus_index):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(fundus_index.paths[0].read_bytes()[:200])  # a truncated download
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    for bad in (broken, png):
        index = type(fundus_index)("test", [fundus_index.paths[1], bad], [0, 1])
        batch = batch_of(evaluation_set(index, 32, decode="gpu"), range(2))[0]
        with pytest.raises(DataError, match=rf"{bad.name}.*data.decode=cpu"):
            batch.to("cpu")


def test_pinning_keeps_the_bytes_on_the_host(fundus_index):
    batch = batch_of(evaluation_set(fundus_index, 32, decode="gpu"), range(3))[0]
    assert batch.pin_memory() is batch and len(batch) == 3
    assert all(data.device.type == "cpu" for data in batch.data)  # where the decoder reads them


def test_loaders_with_workers_hand_over_encoded_batches(fundus_index):
    """Through worker processes and the epoch sampler, as a training run loads them."""
    aug = compose_config(["augmentation=strong"]).augmentation
    index = {"train": fundus_index, "test": fundus_index}
    train, test = build_loaders(index, aug, 32, 4, num_workers=1, seed=0, decode="gpu")
    images, grades, params = next(iter(train))
    assert isinstance(images, JpegBatch) and params.shape == (4, 4) and len(grades) == 4
    assert images.to("cpu").shape == (4, 3, 32, 32)
    in_process = build_loaders(index, aug, 32, 4, num_workers=0, seed=0, decode="gpu")[0]
    assert torch.equal(next(iter(in_process))[0].to("cpu"), images.to("cpu"))
    assert next(iter(test))[0].to("cpu").shape == (4, 3, 32, 32)


def test_decoding_on_the_device_off_a_gpu_says_it_is_slower(tmp_path, caplog):
    cfg = compose_config(["data.decode=gpu", f"data.root={tmp_path / 'demo'}",
                          "data.train_size=10", "data.test_size=5", "data.image_size=32"])
    from retino.data.load.loaders import read_index

    with caplog.at_level(logging.WARNING):
        train, _, _ = data_loaders(cfg, read_index(cfg.data), torch.device("cpu"))
    assert "data.decode=gpu on the cpu" in caplog.text
    assert isinstance(train.dataset[0][0], torch.Tensor)


def test_decode_typo_lists_the_choices():
    from retino.config.validation import validate_config
    from retino.core.errors import ConfigError
    from retino.training.optimization import registered_choices

    with pytest.raises(ConfigError, match="data.decode='nvjpeg' is not valid; choose one of: "
                                          "cpu, gpu"):
        validate_config(compose_config(["data.decode=nvjpeg"]), registered_choices())


def test_cams_read_an_encoded_dataset(fundus_index):
    from retino.evaluation.cam import cam_examples
    from retino.models import build_model

    model = build_model("resnet18", num_classes=5)
    examples = cam_examples(model, evaluation_set(fundus_index, 64, decode="gpu"), 1,
                            torch.device("cpu"))
    assert examples and examples[0][0].shape == (64, 64, 3) and examples[0][1].shape == (64, 64)

