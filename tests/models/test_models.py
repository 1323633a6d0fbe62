import pytest
import torch
import torchvision

from retino.core.errors import ConfigError
from retino.models import RESNETS, build_model, freeze_backbone

FAST = ["resnet18", "resnet50"]


@pytest.mark.parametrize("name", list(RESNETS))
def test_state_dict_names_and_shapes_equal_torchvision(name):
    ours = build_model(name, num_classes=1000).state_dict()
    theirs = getattr(torchvision.models, name)(weights=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)


@pytest.mark.parametrize("name", FAST)
def test_torchvision_state_dict_loads_strictly_and_gives_same_outputs(name):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = build_model(name, num_classes=1000)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x))


@pytest.mark.parametrize("name", FAST)
def test_five_grade_output_and_every_parameter_gets_a_gradient(name):
    model = build_model(name)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="resnet18, resnet34, resnet50"):
        build_model("resnet9")


def test_frozen_backbone_changes_only_the_head():
    torch.manual_seed(0)
    model = build_model("resnet18")
    freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()  # must not switch BatchNorm back to updating its statistics
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64) + 3),
                                                 torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
