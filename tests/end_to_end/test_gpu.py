"""What only a CUDA GPU shows: skipped without one, run whenever a GPU is present (and by CI on a
GPU machine). Each is a real run of the project's code on the device, at the smallest size that
still takes the GPU path: pinned uint8 batches, device augmentation, mixed precision,
channels-last, compilation, the parallel launcher with loader workers."""

import pytest
import torch

from retino.training.pipeline import train_and_evaluate
from tests.conftest import TINY, compose_config
from tests.helpers.cli import assert_complete, run_cli, study_runs
from tests.helpers.runs import cifar_cfg_overrides, fill_hub_cache
from tests.helpers.sources import write_cifar10

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ON_GPU = [*TINY, "device=cuda"]


def on_gpu(tmp_path, *overrides):
    return compose_config([*ON_GPU, f"data.root={tmp_path / 'demo'}", *overrides])


@pytest.mark.slow
def test_a_parallel_sweep_with_loader_workers_trains_on_the_gpu_and_says_so(tmp_path):
    proc = run_cli(["-m", "hydra/launcher=parallel", "seed=0,1", *ON_GPU, "data.num_workers=2",
                    "augmentation=strong", f"data.root={tmp_path / 'demo'}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parent, children = study_runs()
    assert len(children) == 2 and parent.info.status == "FINISHED"
    for run in children:
        assert_complete(client, run, epochs=1)
        params = run.data.params
        assert params["execution.device"] == "cuda" and params["execution.gpu"] != "none"
        assert params["execution.precision"] in ("bf16", "fp16")
        assert params["execution.channels_last"] == "True"


def test_compiled_fp16_run_resumes_with_its_gradient_scale(tmp_path):
    overrides = ["precision=fp16", "compile=true", "augmentation=strong"]
    train_and_evaluate(on_gpu(tmp_path, *overrides, "epochs=1"), tmp_path / "run")
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert first["scaler"]["scale"] > 0
    resumed = train_and_evaluate(on_gpu(tmp_path, *overrides, "epochs=2"), tmp_path / "run",
                             resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in resumed.history)


def test_frozen_backbone_with_class_activation_maps(tmp_path):
    fill_hub_cache("resnet18")
    cfg = on_gpu(tmp_path, "pretrained=true", "freeze=backbone", "cam_per_grade=1")
    train_and_evaluate(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "class_activation_maps.png").stat().st_size > 0


def test_cifar10_pretraining_runs_on_the_gpu(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = compose_config([*cifar_cfg_overrides(tmp_path), "device=cuda"])
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert result.history[-1]["epoch"] == 1


def test_one_step_at_512_px_with_resnet50(tmp_path):
    cfg = on_gpu(tmp_path, "model=resnet50", "data.image_size=512", "resolution.size=512",
                 "data.train_size=8", "data.test_size=5", "batch_size=4", "data.val_fraction=0",
                 "augmentation=strong")
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_nvjpeg_decodes_what_the_workers_decode_within_rounding(tmp_path):
    """data.decode=gpu: a batch decoded by nvJPEG on the device is the CPU path's batch up to
    the decoders' rounding, and a run with it trains (workers reading bytes, CAMs decoded)."""
    from retino.data.load.loaders import read_index, training_set

    cfg = on_gpu(tmp_path, "data.decode=gpu", "data.num_workers=2", "augmentation=strong",
                 "cam_per_grade=1")
    index = read_index(cfg.data)["train"]
    items = [(i, 7 + i) for i in range(8)]
    on_cpu = training_set(index, cfg.augmentation, 64)
    encoded = training_set(index, cfg.augmentation, 64, decode="gpu")
    expected = on_cpu.collate([on_cpu[item] for item in items])[0]
    decoded = encoded.collate([encoded[item] for item in items])[0].to("cuda")
    difference = (decoded.cpu().int() - expected.int()).abs().float()
    assert difference.mean() < 2 and difference.max() < 40  # IDCT rounding, not a wrong crop
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert (tmp_path / "run" / "class_activation_maps.png").stat().st_size > 0
