"""Real photographs end to end, on every change: the committed subset of IDRiD
(tests/fixtures/idrid, 20 real fundus photographs of one Kowa camera, CC BY 4.0) through prepare,
the quality check, a short training run, predict and evaluate."""

import json

import cv2
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retino import PROJECT_ROOT
from retino.data.prepare.cache import cache_dir
from retino.data.prepare.cache import main as prepare
from retino.data.prepare.quality import assess
from tests.conftest import TINY, compose_config

IDRID = PROJECT_ROOT / "tests" / "fixtures" / "idrid"
PHOTOGRAPHS = IDRID / "1. Original Images" / "a. Training Set"


def test_every_committed_photograph_is_graded_by_the_quality_check():
    """IDRiD's photographs were all graded by experts: the check must not refuse one. The
    subset was chosen among those the check grades (it grades 412 of the 413), so this guards
    against a change that starts refusing real, readable photographs."""
    photographs = sorted(PHOTOGRAPHS.glob("*.jpg"))
    assert len(photographs) == 20
    refused = {p.name: assess(cv2.imread(str(p)), bgr=True).reason for p in photographs}
    assert {name: reason for name, reason in refused.items() if reason} == {}


@pytest.mark.slow
def test_idrid_photographs_run_prepare_train_predict_and_evaluate(tmp_path, monkeypatch):
    from retino.evaluate import main as evaluate
    from retino.jobs.lifecycle import JobContext, run_job
    from retino.predict import main as predict

    assert prepare(["--no-audit",
                    str(IDRID), str(tmp_path / "cache"), "--size", "64", "--workers", "1"]) == 0
    cache = cache_dir(tmp_path / "cache", "center_crop", 64)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["format"] == "idrid"
    assert "without a test split of its own" in manifest["split"]  # made here, as Kaggle's
    assert manifest["counts"]["test"] == 5 and manifest["quality"]["not_gradable"] == 0

    cfg = compose_config([*TINY, "data=kaggle", f"data.root={cache}", "data.val_fraction=0.2",
                          "log_model=true"])
    run_job(cfg, JobContext(output_dir=tmp_path / "run"))
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("retino").experiment_id])
    assert run.info.status == "FINISHED"
    logged = {**run.data.params, **run.data.tags}
    assert str(logged["cache.not_gradable"]) == "0"

    out = tmp_path / "predictions.csv"
    assert predict([str(tmp_path / "run"), str(PHOTOGRAPHS), "--out", str(out)]) == 0
    graded = pd.read_csv(out, keep_default_na=False)
    assert len(graded) == 20 and graded["gradable"].astype(str).eq("True").all()
    assert graded["predicted"].between(0, 4).all()

    assert evaluate([run.info.run_id, "data=kaggle", f"data.root={cache}",
                     "bootstrap_rounds=20"]) == 0
