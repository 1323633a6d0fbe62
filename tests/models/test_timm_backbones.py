"""timm's backbones: built from the registry, any head, pretrained from timm-format files found
offline, frozen, with activation maps; validated before any data is read."""

import copy
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from retino.config.naming import run_name
from retino.config.params import params_to_log
from retino.config.validation import validate_config
from retino.core.errors import ConfigError, WeightsUnavailableError
from retino.core.names import CONFIG_FILE
from retino.evaluation.cam import class_activation_maps
from retino.jobs.lifecycle import JobContext, run_job
from retino.models import HEADS, NoActivationMap, build_network
from retino.models.heads import make_head
from retino.models.pretrained import resolve_timm_weights
from retino.serving.grader import TrainedRun, trained_model
from retino.training.ema import WeightAverage
from retino.training.optimization import registered_choices
from retino.training.pipeline import prepare_model
from tests.conftest import TINY, compose_config

# model.name, model.arch: every timm entry of the registry, the generic one with a small network
# (MobileNetV3: a head that convolves after its pooling, unlike the named ones)
TIMM_MODELS = [("efficientnet_b0", None), ("efficientnet_b3", None), ("convnext_tiny", None),
               ("timm", "mobilenetv3_small_050")]
REPO = "timm/efficientnet_b0.ra_in1k"  # timm's default pretrained weights of efficientnet_b0


def head_width(head: str) -> int:
    """How many scores the head gives: the head's to say (regression gives one)."""
    return make_head(head, 8)(torch.zeros(1, 8)).shape[1]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize(("name", "arch"), TIMM_MODELS)
def test_output_shape_and_every_parameter_gets_a_gradient(name, arch, head):
    torch.manual_seed(0)
    model = build_network(name, head, arch).train()
    out = model(torch.randn(2, 3, 32, 32))  # the smallest input: a 1 x 1 last feature map
    assert out.shape == (2, head_width(head)) and torch.isfinite(out).all()
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("name", "arch"), TIMM_MODELS)
def test_parameter_names_are_timms_and_the_head_is_fc(name, arch):
    model = build_network(name, arch=arch)
    timm_names = set(timm.create_model(arch or name, num_classes=0).state_dict())
    assert set(model.state_dict()) == timm_names | {"fc.weight", "fc.bias"}


def timm_file(tmp_path: Path, suffix: str, change=None) -> tuple[Path, dict]:
    """efficientnet_b0's state dict in timm's format (its 1000-way classifier included), with
    one tensor changed so that a load from it is told from timm's initialisation."""
    torch.manual_seed(1)
    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    state["conv_stem.weight"] = torch.full_like(state["conv_stem.weight"], 0.25)
    state["bn1.running_mean"] = torch.full_like(state["bn1.running_mean"], 0.5)
    if change:
        change(state)
    path = tmp_path / f"efficientnet_b0{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path, state


def pretrained_cfg(path: Path, *more: str):
    return compose_config(["model=efficientnet_b0", "pretrained=true", f"pretrain.weights={path}",
                           *more])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_format_file_loads_every_backbone_tensor_strictly(tmp_path, suffix):
    path, state = timm_file(tmp_path, suffix)
    model = prepare_model(pretrained_cfg(path))
    loaded = model.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], torch.full_like(loaded["conv_stem.weight"],
                                                                   0.25))
    for key, value in loaded.items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert loaded["fc.weight"].shape == (5, 1280)  # retino's head, not the 1000-way classifier


def test_a_file_with_a_renamed_key_fails_naming_it(tmp_path):
    def rename(state):
        state["conv_stem.weights"] = state.pop("conv_stem.weight")
    path, _ = timm_file(tmp_path, ".safetensors", rename)
    with pytest.raises(WeightsUnavailableError) as err:
        prepare_model(pretrained_cfg(path))
    assert "1 missing keys ['conv_stem.weight']" in str(err.value)
    assert "1 unexpected ['conv_stem.weights']" in str(err.value)


def test_a_file_of_another_shape_fails_naming_the_key(tmp_path):
    def widen(state):
        state["bn1.weight"] = torch.ones(40)
    path, _ = timm_file(tmp_path, ".pth", widen)
    with pytest.raises(WeightsUnavailableError, match=r"bn1.weight \(40,\) \(model: \(32,\)\)"):
        prepare_model(pretrained_cfg(path))


def test_missing_weights_fail_naming_the_repo_and_file_to_fetch():
    with pytest.raises(WeightsUnavailableError) as err:
        prepare_model(compose_config(["model=efficientnet_b0", "pretrained=true"]))
    message = str(err.value)
    assert f"https://huggingface.co/{REPO}" in message and "model.safetensors" in message
    assert constants.HF_HUB_CACHE in message and "pretrain.weights=" in message
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        resolve_timm_weights("efficientnet_b0", "/nowhere/model.safetensors")


def test_weights_in_the_hugging_face_cache_are_found_offline(tmp_path):
    """The cache laid out as huggingface_hub leaves it after timm downloaded the weights."""
    path, state = timm_file(tmp_path, ".safetensors")
    repo_dir = Path(constants.HF_HUB_CACHE) / ("models--" + REPO.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    cached = repo_dir / "snapshots" / commit / "model.safetensors"
    path.rename(cached)
    assert resolve_timm_weights("efficientnet_b0", None) == cached
    model = prepare_model(compose_config(["model=efficientnet_b0", "pretrained=true"]))
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_frozen_backbone_stays_equal_to_the_file_after_training(tmp_path):
    path, state = timm_file(tmp_path, ".safetensors")
    model = prepare_model(pretrained_cfg(path, "freeze=backbone"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    head_before = model.fc.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()  # must leave BatchNorm in eval: its statistics stay the file's
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64) + 1),
                                             torch.tensor([0, 3]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in after.items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert not torch.equal(after["fc.weight"], head_before)


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny"])
def test_activation_maps_add_up_to_the_score(name):
    """The map's average before the ReLU is the predicted score minus its bias: exact for
    EfficientNet (average pooling, then the head) and for ConvNeXt (average pooling, a
    LayerNorm, then the head), whose LayerNorm is given weights that matter here."""
    torch.manual_seed(0)
    model = build_network(name).eval()
    if name == "convnext_tiny":
        torch.nn.init.normal_(model.head.norm.weight, 1.0, 0.5)
        torch.nn.init.normal_(model.head.norm.bias, 0.0, 0.5)
    images = torch.randn(2, 3, 64, 64)
    maps, predicted = class_activation_maps(model, images)
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    with torch.no_grad():
        logits = model(images)
        assert predicted.tolist() == logits.argmax(1).tolist()
        spread = model.head_input_map(model.features(images))
        raw = torch.einsum("bc,bchw->bhw", model.fc.weight[logits.argmax(1)], spread)
        expected = logits.max(1).values - model.fc.bias[logits.argmax(1)]
        torch.testing.assert_close(raw.mean(dim=(1, 2)), expected, rtol=1e-4, atol=1e-4)


def test_a_head_that_does_more_than_pool_has_no_map():
    """MobileNetV3 convolves again after its pooling: no map adds up to its scores."""
    model = build_network("timm", arch="mobilenetv3_small_050")
    with pytest.raises(NoActivationMap, match="does more than average"):
        class_activation_maps(model, torch.randn(2, 3, 64, 64))


def test_a_timm_model_survives_what_a_run_does_to_it(tmp_path):
    """Checkpoint and reload (the served model rebuilds it from the run's config), the moving
    average, channels_last and a deep copy."""
    cfg = compose_config(["model=timm", "model.arch=resnet10t", "head=ordinal"])
    model = prepare_model(cfg)
    ema = WeightAverage(model, 0.9)
    ema.update(model)
    with ema.swapped_in(model):
        pass
    images = torch.randn(2, 3, 64, 64)
    last = model.to(memory_format=torch.channels_last).eval()
    torch.testing.assert_close(last(images), copy.deepcopy(model)(images))
    torch.save(model.state_dict(), tmp_path / "model_state.pt")
    served = trained_model(TrainedRun("folder", cfg, tmp_path / "model_state.pt", None, 0.5),
                           torch.device("cpu"))
    torch.testing.assert_close(served(images), model(images))


def check(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config(overrides), registered_choices())
    return str(err.value)


def test_an_unknown_timm_architecture_fails_fast_before_any_data(tmp_path, caplog):
    from retino.jobs.lifecycle import JobContext, run_job

    assert "close matches: efficientnet_b" in check(["model=timm", "model.arch=efficientnet_b9"])
    message = check(["model=timm", "model.arch=nonexistent_net"])
    assert "model.arch='nonexistent_net' is not valid" in message
    assert "needs model.arch=" in check(["model=timm"])
    assert "read by model=timm only" in check(["model=efficientnet_b0", "model.arch=x"])
    cfg = compose_config(["model=timm", "model.arch=nonexistent_net",
                          f"data.root={tmp_path / 'd'}"])
    with pytest.raises(SystemExit) as stopped:
        run_job(cfg, JobContext(output_dir=tmp_path / "out"))
    assert stopped.value.code == 2 and "nonexistent_net" in caplog.text
    assert not (tmp_path / "d").exists()  # nothing generated, nothing read


def test_a_pretrained_timm_model_is_not_checked_against_torchvisions_weights():
    """torchvision's weight variants are the ResNets' concern: a timm architecture torchvision
    does not know passes the job's checks (its weights are looked for later, offline)."""
    from retino.jobs.plan import check_config

    check_config(compose_config(["model=timm", "model.arch=resnet10t", "pretrained=true"]))


def test_cifar10_pretraining_is_refused_for_timm_models():
    message = check(["model=efficientnet_b0", "pretrain=cifar10", "pretrained=true"])
    assert "pretrain=cifar10 pretrains resnet18" in message and "model=efficientnet_b0" in message


def test_a_typo_in_model_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["model=efficientnet_b9"])
    assert "efficientnet_b0" in str(err.value) and "convnext_tiny" in str(err.value)


def test_arch_is_logged_and_named_only_for_model_timm():
    assert "model.arch" not in params_to_log(compose_config([]))  # ResNet runs keep their hash
    cfg = compose_config(["model=timm", "model.arch=resnet10t"])
    assert params_to_log(cfg)["model.arch"] == "resnet10t"
    assert run_name(cfg).startswith("resnet10t-scratch")


@pytest.mark.slow(seconds=7)
def test_a_pretrained_frozen_efficientnet_runs_end_to_end(tmp_path):
    """run.py's job with EfficientNet-B0 from a timm-format file, frozen, averaged, with maps
    (in this process: the command line's own path is the end-to-end tests' subject)."""
    path, _ = timm_file(tmp_path, ".safetensors")
    args = [*TINY, f"data.root={tmp_path / 'demo'}", "plots=true", "model=efficientnet_b0",
            "pretrained=true", f"pretrain.weights={path}", "freeze=backbone", "ema_decay=0.9",
            "cam_per_grade=1"]
    run_job(compose_config(args), JobContext(output_dir=tmp_path / "outputs"))
    run = next((tmp_path / "outputs").rglob("model_state.pt")).parent
    assert (run / "class_activation_maps.png").is_file()
    weights = torch.load(run / "model_state.pt", weights_only=True)
    assert torch.equal(weights["conv_stem.weight"], torch.full_like(weights["conv_stem.weight"],
                                                                    0.25))
    assert OmegaConf.load(run / CONFIG_FILE).model.name == "efficientnet_b0"
