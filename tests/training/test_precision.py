import numpy as np
import pytest
import torch

from retino.models import build_model
from retino.training.loop import Loaders, Recipe, fit, infer
from retino.training.optimization import build_optimizer, build_scheduler
from retino.training.pipeline import prepare_model, train_and_evaluate
from retino.training.precision import GradientStep, StepSettings, resolve_step_settings
from tests.conftest import TINY, compose_config


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_trains_on_cpu(tmp_path, precision):
    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", f"precision={precision}",
                                 "channels_last=true", "grad_clip=1.0"])
    row = train_and_evaluate(cfg, tmp_path / "run").history[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["test_loss"])
    state = torch.load(tmp_path / "run" / "model_state.pt", weights_only=True)
    assert state["fc.weight"].dtype == torch.float32  # weights stay fp32; only compute is cast


def test_auto_settings_follow_the_device():
    cpu = resolve_step_settings("auto", None, 0.0, torch.device("cpu"))
    assert (cpu.precision, cpu.channels_last) == ("fp32", False)
    assert resolve_step_settings("bf16", True, 0.5, torch.device("cpu")) == \
        StepSettings("bf16", True, 0.5)


def test_gradient_step_clips_the_true_gradient_norm():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)  # lr 0: look at gradients only
    step = GradientStep(StepSettings("fp16", grad_clip=0.1), torch.device("cpu"))
    assert step.scaler.is_enabled()  # fp16 scales its loss
    loss = (layer(torch.full((8, 4), 100.0)) ** 2).mean()
    step(loss, optimizer)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in layer.parameters()]))
    assert norm <= 0.1 + 1e-4


@pytest.mark.slow(seconds=6)
def test_fp16_resume_restores_the_gradient_scale(tmp_path):
    overrides = TINY + [f"data.root={tmp_path / 'demo'}", "precision=fp16", "data.train_size=8",
                        "data.test_size=5", "data.val_fraction=0", "batch_size=4"]
    train_and_evaluate(compose_config(overrides + ["epochs=1"]), tmp_path / "run")  # "stopped"
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    checkpoint["scaler"]["scale"] = 1024.0  # as if overflows had lowered it from 65536
    torch.save(checkpoint, tmp_path / "run" / "last.pt")
    train_and_evaluate(compose_config(overrides + ["epochs=2"]), tmp_path / "run", resume=True)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2
    assert saved["scaler"]["scale"] <= 1024.0  # went on from the saved scale, not the default


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_parameter_names(tmp_path):
    from retino.data.load.loaders import build_loaders, read_index

    cfg = compose_config(TINY + [f"data.root={tmp_path / 'demo'}", "model=resnet18"])
    model = prepare_model(cfg)
    optimizer = build_optimizer(cfg, model)
    train, test = build_loaders(read_index(cfg.data), cfg.augmentation, cfg.resolution.size, 8,
                                 0, seed=0)
    settings = StepSettings(compile=True, compile_backend="aot_eager")  # inductor: minutes
    recipe = Recipe(torch.nn.CrossEntropyLoss(), optimizer, build_scheduler(cfg, optimizer), 1,
                    torch.device("cpu"), settings)
    result = fit(model, Loaders(train, test), recipe, tmp_path / "run", config={})
    assert np.isfinite(result.history[0]["train_loss"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    build_model("resnet18").load_state_dict(state)  # strict: no "_orig_mod." prefixes


def test_each_compiled_run_starts_from_an_empty_compile_cache(monkeypatch):
    """Jobs of a sequential sweep compile in one process; without a fresh cache per run, the
    third here would pass torch's recompile limit (lowered to 2) and, by default, silently run
    eagerly."""
    compiled_graphs = []

    def counting_backend(graph, example_inputs):
        compiled_graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    settings = StepSettings(compile=True, compile_backend=counting_backend)
    for job in range(3):
        model = settings.compiled(torch.nn.Linear(4, 2))  # a new model per job, like a sweep
        assert model(torch.randn(3, 4)).shape == (3, 2), job
    assert len(compiled_graphs) == 3  # every job ran compiled, none fell back to eager
    torch._dynamo.reset()


def test_a_compiled_evaluation_pads_its_short_last_batch_to_one_shape():
    from torch.utils.data import DataLoader, TensorDataset


    shapes = []

    def recording_backend(graph, example_inputs):
        shapes.append(tuple(example_inputs[0].shape) if example_inputs else ())
        return graph.forward

    images = torch.randn(10, 3, 32, 32)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 5, (10,))), batch_size=4)
    model = build_model("resnet18").eval()
    settings = StepSettings(compile=True, compile_backend=recording_backend)
    answers = infer(settings.compiled(model), loader, torch.device("cpu"), settings)
    assert len(shapes) == 1  # batches of 4, 4 and 2 (padded to 4): one graph
    assert answers.probs.shape == (10, 5)  # the padding's answers dropped
    with torch.no_grad():
        expected = model(images).softmax(dim=1).numpy()
    np.testing.assert_allclose(answers.probs, expected, atol=1e-5)
    torch._dynamo.reset()


def test_the_training_step_computes_in_the_precision_asked_for_every_precision_known():
    """Not only 'it trains': the forward pass runs in the precision's dtype, and every name in
    PRECISIONS (what config validation and the benchmark accept) has a dtype."""
    from retino.config.schema import PRECISIONS
    from retino.training.loop import train_one_epoch
    from retino.training.precision import DTYPES

    assert set(PRECISIONS) == {"auto", *DTYPES}
    batches = [(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), torch.arange(4))]
    for precision, dtype in DTYPES.items():
        head, seen = torch.nn.Linear(4, 5), []
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), head)
        head.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.dtype))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        train_one_epoch(model, batches, torch.nn.CrossEntropyLoss(), optimizer,
                        torch.device("cpu"), 1, StepSettings(precision))
        assert seen == [dtype], precision
