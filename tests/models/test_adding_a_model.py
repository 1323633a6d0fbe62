"""docs/architecture.md's recipe "A model", followed in a copy of the code: one module that
registers a network, one config file, and run.py trains it."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY
from tests.helpers.cli import copy_of_the_code

TINYNET = '''"""A network of one's own: two strided convolutions and retino's head."""

from torch import nn

from retino.models.builders import NETWORKS
from retino.models.heads import make_head
from retino.models.network import GradingNetwork


class TinyNet(GradingNetwork):
    def __init__(self, head: str, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1))
        self.fc = make_head(head, 16, num_classes)

    def features(self, images):
        return self.body(images)

    def forward(self, images):
        return self.fc(self.features(images).mean(dim=(2, 3)))


@NETWORKS.register("tinynet")
def tinynet(head: str, num_classes: int, arch: str | None) -> GradingNetwork:
    return TinyNet(head, num_classes)
'''


@pytest.mark.slow(seconds=10)
def test_a_model_is_one_module_and_one_config_file(tmp_path):
    code = copy_of_the_code(tmp_path / "code")
    (code / "retino" / "models" / "tinynet.py").write_text(TINYNET)
    (code / "conf" / "model" / "tinynet.yaml").write_text(
        "# TinyNet: two convolutions, for the recipe's test.\nname: tinynet\n")
    proc = subprocess.run(
        [sys.executable, "run.py", "model=tinynet", "head=ordinal", *TINY,
         f"data.root={tmp_path / 'demo'}", f"hydra.run.dir={tmp_path / 'outputs'}"],
        cwd=code, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("retino").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("tinynet-")
    assert run.data.params["model.name"] == "tinynet" and "test_qwk" in run.data.metrics
