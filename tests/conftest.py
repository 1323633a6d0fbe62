"""Shared fixtures: the real composed config, shrunk; an isolated MLflow store, torch hub and
Hugging Face hub cache."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from retino import PROJECT_ROOT
from retino.config.registration import register_configs
from retino.core.collector import fewer_full_collections

# The shared helpers' asserts (tests/helpers/) explain a failure as a test module's own asserts do.
pytest.register_assert_rewrite("tests.helpers")

CONF_DIR = PROJECT_ROOT / "conf"

# A run small enough for a CPU test: the smoke preset users run (conf/preset/smoke.yaml: a few
# tiny images, one epoch), read at 32 px rather than its 64 (a quarter of the network's work:
# the suite 20 s sooner), without the MLflow model, the cost timing and the figures (they cost
# a second or two a run, the figures 40 % of a tiny one; the tests that need them ask for them).
TINY = ["+preset=smoke", "resolution.size=32", "log_model=false", "measure_cost=false",
        "plots=false"]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config run.py would get for these command-line overrides."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables created, once: MLflow's migrations take a second or
    two, which every test (and every run.py it starts) would otherwise pay on a new file."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


def expected_seconds(item: pytest.Item) -> float:
    """What a test is expected to take on the developers' machine: `slow(seconds=N)` where a
    test gives it, 5 for any other slow test, 0 for the rest."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 5))


# Fixtures that train or export once per worker process: the tests that use one run on one
# worker (pytest-xdist's loadgroup), so it is made once a suite, not once per worker.
SHARED_ONCE = ("trained_run", "old_study")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups it marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (the order is stable otherwise): each worker takes the next test
    when it is nearly done (pyproject.toml: --dist loadgroup --no-loadscope-reorder), so the run
    ends on short tests, not on a minute-long one started when the other worker had nothing
    left. The tests of one shared fixture are one group, placed where the first of them is."""
    items.sort(key=lambda item: -expected_seconds(item))
    for item in items:
        shared = [name for name in SHARED_ONCE if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (torch, MLflow, Hydra, every test module: millions of objects
    that live as long as the worker) is set aside from the garbage collector, which walked all
    of it in each full collection, 0.4 s a time, 20-odd times per worker in the fast suite alone
    (pytest_configure below: full collections are rarer too, as in run.py)."""
    gc.collect()
    gc.freeze()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the workers share the cores: each trains in-process on its share of
    them, not on every core, and so do the commands it starts (run.py and the others read
    OMP_NUM_THREADS, as under a launcher): two workers' subprocesses each spinning a thread per
    core on two cores ran the suite's slowest tests at half speed."""
    fewer_full_collections()  # before collection's imports, as run.py does before its own
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Each phase's report kept on the test, for emptied_when_passed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def emptied_when_passed(request: pytest.FixtureRequest, tmp_path: Path):
    """A passed test's temp folder is emptied as it ends (a failed one's is kept to look at):
    the suite wrote 9.5 GB a run. The folder itself stays, so no later test gets its path."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.passed:
        for child in tmp_path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


@pytest.fixture(scope="session", autouse=True)
def temp_files_in_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every temporary file of the run, this process's and the commands' it starts, goes in a
    folder of pytest's own, removed at the end: what is left behind in /tmp by a process
    killed on purpose (its atexit never runs), a downloaded run's weights, MLflow's copy of
    every model it loads, added up to tens of GB there over many runs."""
    folder = tmp_path_factory.mktemp("tmp")  # short: a socket's path in it must fit 107 bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        patch.setattr(tempfile, "tempdir", str(folder))
        yield
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> None:
    """No test writes to the project's mlflow.db or reads the user's torch or Hugging Face hub
    cache: each gets a copy of an empty store of its own."""
    from huggingface_hub import constants

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # HF_HOME for the commands a test starts; the constant for this process, which
    # huggingface_hub read from the environment when it was imported
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("RETINO_LOCK_DIR", str(tmp_path / "locks"))
    # The `mlflow server` and `mlflow ui` a test starts run no server-side jobs (MLflow 3's
    # GenAI job runner): else each starts seven more Python processes, which import MLflow on
    # the test's two cores for half a minute and which no test uses.
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> DictConfig:
    """Tiny demo run, its data generated under tmp_path."""
    return compose_config(TINY + [f"data.root={tmp_path / 'demo'}"])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, empty_store):
    """(run folder, run id, tracking URI, raw source folder, cache folder): one tiny tracked
    run, trained once for every test that uses a finished run, on a center_crop cache at 64 px
    made from 200 x 150 photographs (tests/helpers/sources.py's synthetic Kaggle source)."""
    from mlflow.tracking import MlflowClient

    from retino.data.prepare.cache import cache_dir, prepare_cache
    from retino.jobs.lifecycle import JobContext, run_job
    from tests.helpers.sources import make_kaggle_source

    root = tmp_path_factory.mktemp("predict")
    source = make_kaggle_source(root / "raw", patients=12)
    prepare_cache(source, root / "cache", "center_crop", 64, workers=1)
    cache = cache_dir(root / "cache", "center_crop", 64)
    shutil.copy(empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("RETINO_LOCK_DIR", str(root / "locks"))
        cfg = compose_config([*TINY, "data=kaggle", f"data.root={cache}", "resolution.size=64",
                              "data.val_fraction=0.2",
                              "log_model=true", "measure_cost=true", "plots=true"])
        run_job(cfg, JobContext(output_dir=root / "run"))
    run_id = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("retino").experiment_id])[0].info.run_id
    yield root / "run", run_id, uri, source, cache
    shutil.rmtree(root, ignore_errors=True)  # 350 MB (a model, weights, checkpoints) per worker
