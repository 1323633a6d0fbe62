import subprocess
import sys
import time

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from retino import PROJECT_ROOT
from retino.config.naming import run_name
from retino.config.params import flatten_config, params_to_log
from retino.config.validation import validate_config
from retino.core.errors import ConfigError
from retino.jobs.identity import config_hash
from retino.training.optimization import registered_choices
from tests.conftest import compose_config
from tests.helpers.runs import validate


def test_defaults_compose_and_validate():
    cfg = compose_config()
    validate_config(cfg, registered_choices())
    assert (cfg.model.name, cfg.data.name, cfg.resolution.size) == ("resnet18", "demo", 64)
    assert cfg.pretrained is False and cfg.freeze.name == "none"


def test_group_options_change_the_config():
    cfg = compose_config(["model=resnet50", "resolution=224px", "freeze=backbone",
                          "augmentation=none", "optimizer=sgd", "pretrained=true"])
    assert cfg.model.name == "resnet50" and cfg.resolution.size == 224
    assert cfg.augmentation.hflip == 0 and cfg.optimizer.momentum == 0.9
    assert run_name(cfg) == "resnet50-pretrained-frozen-224px"


@pytest.mark.parametrize("override, key, allowed", [
    ("epochs=0", "epochs=0", "at least 1"),
    ("lr=-1", "lr=-1", "positive"),
    ("batch_size=0", "batch_size=0", "at least 1"),
    ("model.name=resnet9", "model.name='resnet9'", "resnet18, resnet34, resnet50"),
    ("resolution.size=100", "resolution.size=100", "multiple of 32"),
    ("device=tpu", "device='tpu'", "auto, cpu, cuda"),
    ("data=kaggle", "data=kaggle needs data.root", "train_img.csv"),
    ("imbalance=oversample", "imbalance='oversample'", "weighted_loss"),
    ("seed=-1", "seed=-1", "0 or more"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1", "0 or more"),
    ("schedule.step_size=0", "schedule.step_size=0", "at least 1"),
    ("schedule.gamma=0", "schedule.gamma=0", "(0, 1]"),
    ("augmentation.rotate_degrees=-5", "augmentation.rotate_degrees=-5", "[0, 180]"),
    ("augmentation.hflip=2", "augmentation.hflip=2", "probability"),
    ("experiment=' '", "experiment=", "MLflow experiment"),
    ("data.num_workers=many", "data.num_workers='many'", "auto or a whole number"),
    ("data.num_workers=-2", "data.num_workers=-2", "auto or a whole number"),
    ("data.prefetch_factor=0", "data.prefetch_factor=0", "at least 1"),
])
def test_bad_values_name_the_key_and_the_allowed_values(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate([override])
    assert key in str(err.value) and allowed in str(err.value)


def test_kaggle_root_must_be_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        validate(["data=kaggle", f"data.root={tmp_path / 'typo'}"])
    validate(["data=kaggle", f"data.root={tmp_path}"])


def test_batch_of_one_is_refused_only_where_batchnorm_would_fail():
    with pytest.raises(ConfigError, match="BatchNorm"):
        validate(["batch_size=1", "resolution.size=32"])
    validate(["batch_size=1", "resolution=224px"])


def test_params_leave_out_keys_of_options_not_chosen():
    demo_adamw = params_to_log(compose_config())
    assert "data.train_size" in demo_adamw and "optimizer.momentum" not in demo_adamw
    kaggle_sgd = params_to_log(compose_config(["data=kaggle", "optimizer=sgd", "schedule=step"]))
    assert "data.train_size" not in kaggle_sgd and kaggle_sgd["optimizer.momentum"] == 0.9
    assert kaggle_sgd["schedule.step_size"] == 10


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate(["epochs=0", "lr=-1"])
    assert "epochs=0" in str(err.value) and "lr=-1" in str(err.value)


def test_wrong_types_and_unknown_keys_fail_at_compose():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["epochs=ten"])
    assert isinstance(err.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException, match="epoch"):
        compose_config(["epoch=3"])


def test_group_typo_lists_the_options():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["model=resnet5"])
    assert "resnet18" in str(err.value) and "resnet50" in str(err.value)


def test_flat_params_have_dotted_keys_for_every_leaf():
    flat = flatten_config(compose_config())
    assert flat["model.name"] == "resnet18" and flat["pretrained"] is False
    assert flat["data.train_size"] == 1000 and "optimizer.weight_decay" in flat


def test_cli_rejects_a_typo_fast_listing_the_choices_without_reading_data(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "run.py", "model=resnet9", f"data.root={tmp_path / 'd'}",
                           f"hydra.run.dir={tmp_path / 'out'}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Available options in 'model'" in proc.stderr + proc.stdout
    assert time.monotonic() - started < 60
    assert not (tmp_path / "d").exists()  # nothing generated, nothing read


def test_a_bad_value_stops_the_job_before_any_data_is_read(tmp_path, caplog):
    """What run.py does with it (the same run_job, in this process): exit status 2, the
    message alone, no data generated, no MLflow run."""
    from retino.jobs.lifecycle import JobContext, run_job

    cfg = compose_config(["epochs=0", f"data.root={tmp_path / 'd'}"])
    with pytest.raises(SystemExit) as stopped:
        run_job(cfg, JobContext(output_dir=tmp_path / "out"))
    assert stopped.value.code == 2 and "epochs=0 must be at least 1" in caplog.text
    assert not (tmp_path / "d").exists()


def hydra_config(config_dir, name, overrides=()):
    """The config with Hydra's own part (`--cfg hydra`), composed in this process as run.py
    composes it (conf/ stays on the search path of a study file's folder, as with -cd)."""
    from hydra import compose, initialize_config_dir

    from retino.config.registration import register_configs
    from retino.jobs.launchers import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=name, return_hydra_config=True, overrides=[
            *overrides, f"hydra.searchpath=[file://{PROJECT_ROOT / 'conf'}]"])


@pytest.mark.parametrize("study", sorted(p.stem for p in (PROJECT_ROOT / "sweeps").glob("*.yaml")))
def test_every_sweep_file_composes_with_its_axes(study):
    cfg = hydra_config(PROJECT_ROOT / "sweeps", study)
    axes = cfg.hydra.sweeper.params
    assert axes and all(OmegaConf.select(cfg, axis, default="missing") != "missing"
                        for axis in axes), axes  # the study sweeps keys the config has
    validate_config(cfg, registered_choices())


def test_speed_settings_do_not_change_a_configs_identity():
    base = config_hash(compose_config())
    assert config_hash(compose_config(["data.num_workers=6", "data.persistent_workers=false",
                                       "log_system_metrics=true", "resume=false",
                                       "measure_cost=false"])) == base
    assert config_hash(compose_config(["precision=bf16"])) != base  # this one changes numbers


@pytest.mark.parametrize("launcher, key, value", [
    ("parallel", "n_jobs", "2"),  # no GPU visible (below): 2 small jobs on the CPU
    ("local", "gpus_per_node", "0"),
    ("slurm", "gpus_per_node", "1"),
    ("slurm", "partition", "gpu"),  # from SLURM's own SBATCH_PARTITION
    ("slurm", "max_num_timeout", "20"),  # requeues allowed: resuming is safe
])
def test_launcher_presets_compose_and_size_themselves(launcher, key, value, monkeypatch):
    # No GPU visible, whatever this machine has: the sizes are then known without the formula.
    monkeypatch.setattr("retino.jobs.launchers.gpu_count", lambda: 0)
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    cfg = hydra_config(PROJECT_ROOT / "conf", "config", [f"hydra/launcher={launcher}"])
    assert str(OmegaConf.select(cfg, f"hydra.launcher.{key}")) == value


def test_a_run_is_identified_by_what_it_ran_on_not_by_auto():
    from retino.training.devices import execution_params

    on_cpu = execution_params(compose_config(["device=cpu"]))
    assert on_cpu == {"execution.device": "cpu", "execution.precision": "fp32",
                      "execution.channels_last": "False", "execution.gpu": "none"}
    auto, cpu = compose_config(), compose_config(["device=cpu", "precision=fp32"])
    if not torch.cuda.is_available():  # auto resolves to the CPU here: the same run as cpu
        assert execution_params(auto) == on_cpu
    resolved = {k: v for k, v in on_cpu.items() if k != "execution.gpu"}
    assert config_hash(auto, resolved) == config_hash(cpu, resolved)
    on_gpu = resolved | {"execution.device": "cuda", "execution.precision": "bf16",
                         "execution.channels_last": "True"}
    assert config_hash(auto, on_gpu) != config_hash(auto, resolved)  # never skipped for each other


def test_auto_device_says_loudly_when_a_gpu_is_there_but_unusable(monkeypatch, caplog, tmp_path):
    import retino.training.devices

    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(retino.training.devices, "NVIDIA_DEVICE_FILES", (tmp_path / "nvidiactl",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    retino.training.devices._warn_unusable_gpu.cache_clear()
    assert retino.training.devices.resolve_device("auto").type == "cpu"
    assert "has an NVIDIA GPU, but PyTorch" in caplog.text and "device=cuda" in caplog.text
    retino.training.devices._warn_unusable_gpu.cache_clear()


def test_a_studys_swept_axes_come_from_its_command_and_its_sweep_file():
    from retino.studies.callbacks import swept_axes

    hydra = {"overrides": {"task": ["model=resnet18,resnet50", "epochs=1", "lr=range(1,3)",
                                    "+preset=smoke"]},
             "sweeper": {"params": {"seed": "0,1,2", "pretrained": "true"}}}
    # pretrained has one value there: fixed, not swept.
    assert swept_axes(OmegaConf.create({"hydra": hydra})) == ["model", "lr", "seed"]


def test_a_run_name_shows_the_axes_its_study_sweeps_beyond_its_base_name():
    cfg = compose_config(["model=resnet50", "pretrained=true", "lr=0.01", "augmentation=strong"])
    assert run_name(cfg) == "resnet50-pretrained-64px"
    assert run_name(cfg, ["model", "seed", "lr", "augmentation"]) == \
        "resnet50-pretrained-64px seed=0 lr=0.01 augmentation=strong"


def test_help_lists_every_group_option_and_key_with_its_meaning():
    """Written from the schema and the YAML files: a new key without a comment, or a new
    option without a first comment line, fails here instead of reaching users unexplained."""
    from hydra import compose, initialize_config_dir

    from retino.config.help import group_options, help_text, top_level_keys
    from retino.config.schema import Config

    for group, options in group_options().items():
        assert options and all(doc for _, doc in options), group
    keys = top_level_keys(Config)
    assert all(doc for *_, doc in keys), [key for key, *_, doc in keys if not doc]
    text = help_text(Config)
    assert "resnet50" in text and "+preset:" in text and "smoke" in text
    assert "selection_metric (str, default val_qwk): The epoch a run keeps" in text
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        composed = compose(config_name="config", return_hydra_config=True)
    assert composed.hydra.help.template == text  # what `python run.py --help` prints


def test_a_head_loss_is_the_regression_heads_choice_only():
    assert compose_config(["head=regression"]).head.loss == "mse"
    validate(["head=regression", "head.loss=smooth_l1"])
    with pytest.raises(ConfigError, match="head.loss='huber' is not valid; choose one of: mse, "
                                          "smooth_l1"):
        validate(["head=regression", "head.loss=huber"])
    with pytest.raises(ConfigError, match="applies to head=regression only"):
        validate(["head=ordinal", "head.loss=mse"])


@pytest.mark.parametrize("group", ["model", "head", "pretrain", "optimizer", "schedule"])
def test_every_option_of_a_group_has_a_builder_and_every_builder_an_option(group):
    """Adding a model (an optimizer, ...) is a builder in its registry and an option file in
    conf/<group>/: one without the other is a choice --help shows that fails, or one it hides."""
    from omegaconf import OmegaConf

    key = "source" if group == "pretrain" else "name"  # the field that picks the builder
    options = {str(OmegaConf.load(path)[key])
               for path in (PROJECT_ROOT / "conf" / group).glob("*.yaml")}
    assert options == set(registered_choices()[f"{group}.{key}"])
