"""Files a stranger may have written: nothing retino reads runs code from them, and each is
refused by name."""

from omegaconf import OmegaConf

from tests.conftest import compose_config


def test_a_run_folders_config_yaml_cannot_hand_hydra_a_callback(tmp_path, caplog):
    """`retino.reproduce` turned every key of config.yaml into an override: a `hydra:` key with
    callbacks ran a callable. Keys outside the schema are refused by name, before run.py."""
    from retino.reproduce import main as reproduce_main

    marker = tmp_path / "payload-ran"
    config = OmegaConf.to_container(compose_config(["+preset=smoke"]), resolve=True)
    config["hydra"] = {"callbacks": {"evil": {"_target_": "pathlib.Path.touch",
                                              "self": str(marker)}}}
    config["extra_key"] = 1
    folder = tmp_path / "run"
    folder.mkdir()
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    assert reproduce_main([str(folder)]) == 2
    assert "extra_key, hydra" in caplog.text
    assert not marker.exists()


def test_a_run_folders_config_yaml_cannot_read_this_machines_secrets(tmp_path, monkeypatch,
                                                                    caplog):
    """${oc.env:...} was resolved in the reproducing process: the secret became an override,
    and then a param on the shared tracking server."""
    from retino.reproduce import main as reproduce_main

    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    config = OmegaConf.to_container(compose_config(["+preset=smoke"]), resolve=True)
    config["model"]["name"] = "${oc.env:SECRET_TOKEN}"
    folder = tmp_path / "run"
    folder.mkdir()
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    assert reproduce_main([str(folder)]) == 2
    assert "model.name" in caplog.text and "hunter2" not in caplog.text


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def test_a_corrupt_checkpoint_is_set_aside_and_the_run_trains_anew(tmp_path, caplog):
    """A corrupt last.pt blocked the run for good: torch's error named no file, and every
    re-run tried the same file until resume=false."""
    from retino.core.names import CHECKPOINT_SET_ASIDE_TAG
    from retino.training.pipeline import train_and_evaluate
    from retino.training.tracker import NullTracker
    from tests.conftest import TINY

    class Tags(NullTracker):
        def __init__(self):
            self.tags = {}

        def set_tags(self, tags):
            self.tags.update(tags)

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    tracker = Tags()
    cfg = compose_config([*TINY, f"data.root={tmp_path / 'demo'}"])
    result = train_and_evaluate(cfg, run, tracker, resume=True)
    assert len(result.history) == cfg.epochs  # trained anew, to the end
    assert (run / "last.pt.corrupt").read_bytes() == b"PK\x03\x04 half a checkpoint"
    from retino.training.checkpoint import set_aside

    (run / "last.pt").write_bytes(b"another bad one")  # an earlier one is never overwritten
    assert set_aside(run / "last.pt").name == "last.pt.corrupt.1"
    assert "last.pt cannot be read" in tracker.tags[CHECKPOINT_SET_ASIDE_TAG]
    assert "set aside as last.pt.corrupt" in caplog.text


def test_weights_that_would_run_code_are_refused_in_one_line(trained_run, tmp_path, capsys):
    """weights_only blocked them, but predict ended in a raw UnpicklingError traceback whose
    text suggested weights_only=False."""
    import pickle
    import shutil

    from retino.predict import main as predict_main

    run = shutil.copytree(trained_run[0], tmp_path / "run")
    marker = tmp_path / "payload-ran"
    (run / "model_state.pt").write_bytes(pickle.dumps({"fc.weight": _Payload(marker)}))
    photographs = tmp_path / "photographs"
    photographs.mkdir()
    source = trained_run[3] / "train"
    shutil.copy(next(source.glob("*.jpeg")), photographs)
    assert predict_main([str(run), str(photographs), "--out", str(tmp_path / "p.csv")]) == 2
    error = capsys.readouterr().err
    assert "model_state.pt holds objects other than tensors" in error
    assert "Traceback" not in error and "weights_only=False" not in error
    assert not marker.exists()


def test_an_interrupted_run_whose_checkpoint_is_unreadable_is_not_resumed(tmp_path):
    """Training anew inside the old MLflow run logged its epochs twice; the job now decides
    on a new run, the file kept as last.pt.corrupt and the old run tagged why."""
    from mlflow.tracking import MlflowClient

    from retino.core.names import CHECKPOINT_SET_ASIDE_TAG, CONFIG_HASH_TAG, OUTPUT_DIR_TAG
    from retino.jobs.decision import NEW, JobIdentity, decide
    from retino.jobs.reconcile import earlier_runs

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"not a checkpoint")
    client = MlflowClient()
    experiment = client.create_experiment("exp")
    run = client.create_run(experiment, tags={CONFIG_HASH_TAG: "h1",
                                              OUTPUT_DIR_TAG: str(folder)})
    client.set_terminated(run.info.run_id, "KILLED")
    [earlier] = earlier_runs("exp", "h1")
    assert not earlier.has_checkpoint and (folder / "last.pt.corrupt").is_file()
    assert "cannot be read" in client.get_run(run.info.run_id).data.tags[
        CHECKPOINT_SET_ASIDE_TAG]
    decision = decide(JobIdentity("h1", "", ""), [earlier], resume=True, in_sweep=False)
    assert decision.action == NEW
