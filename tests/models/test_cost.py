"""A run's deployment cost: parameters, weights size, FLOPs and CPU latency per image, logged by
every finished run and shown in the study report beside accuracy."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from retino.core.names import COST_MACHINE_TAG
from retino.models.cost import measure_cost
from retino.studies.results_table import results_table
from retino.tracking.records import RunRecord

COST_METRICS = ("cost_params", "cost_weights_mb", "cost_gflops_per_image",
                "cost_cpu_ms_per_image_b1", "cost_cpu_ms_per_image_b32")


def tiny_network() -> nn.Module:
    """A 3x3 convolution (3 -> 4 channels) and a linear layer over its 4 x 6 x 6 map."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_the_cost_of_a_tiny_network_is_what_it_is_by_hand():
    network = tiny_network()
    cost = measure_cost(network, size=8, budget_s=2)
    assert cost.params == sum(p.numel() for p in network.parameters()) == 4 * 27 + 4 + 144 * 5 + 5
    # a multiply-add is 2 FLOPs: each of the 4 x 6 x 6 outputs sums 3 x 3 x 3 products, each
    # of the 5 outputs 144; the biases, as torch's counter, are not counted
    assert cost.gflops_per_image * 1e9 == pytest.approx(2 * 144 * 27 + 2 * 144 * 5)
    saved = io.BytesIO()
    torch.save(network.state_dict(), saved)
    assert cost.weights_mb == pytest.approx(saved.tell() / 1e6)
    assert cost.cpu_ms_per_image_b1 > 0 and cost.cpu_ms_per_image_b32 > 0
    assert 1 <= cost.passes[0] <= 10 and "threads" in cost.machine
    assert set(cost.metrics()) == set(COST_METRICS)
    assert next(network.parameters()).requires_grad  # the network itself is untouched


def test_a_finished_run_logs_its_cost_and_the_report_shows_it(trained_run, monkeypatch):
    from retino.tracking.records import read_runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run[2])
    [run] = read_runs(run_ids=[trained_run[1]])
    # batch 32 is left out only where its warm-up pass would not fit the budget (a busy CPU
    # makes a pass slow), and the machine tag says so
    measured = [key for key in COST_METRICS if key in run.final]
    assert measured == list(COST_METRICS) or (
        measured == list(COST_METRICS[:-1]) and "0 at batch 32" in run.tags[COST_MACHINE_TAG])
    assert all(run.final[key] > 0 for key in measured), run.final
    assert run.final["cost_params"] > 1e7  # resnet18: 11.2 M
    assert "torch" in run.tags[COST_MACHINE_TAG]
    header, [row] = results_table([run])
    cells = dict(zip(header, row, strict=True))
    assert float(cells["parameters (M)"]) == pytest.approx(run.final["cost_params"] / 1e6,
                                                            abs=0.01)
    assert float(cells["CPU ms per image (batch 1)"]) > 0 and cells["GFLOPs per image"]


def test_the_report_leaves_cost_blank_for_older_runs():
    run = RunRecord("r1", "resnet18-scratch-64px", "FINISHED", {"seed": "0"}, {}, {},
                    {"test_acc_selected": 0.8}, None)
    header, [row] = results_table([run])
    cells = dict(zip(header, row, strict=True))
    assert cells["weights MB"] == "" and cells["CPU ms per image (batch 32)"] == ""
