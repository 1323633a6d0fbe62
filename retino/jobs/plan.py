"""What a job is before it runs: its config checked, its data found, its identity (config, code
and data) and the tags its MLflow run carries."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from omegaconf import DictConfig

from retino.config.naming import run_name
from retino.config.validation import validate_config
from retino.core.keys import GPU_PARAM
from retino.core.names import (
    CODE_VERSION_TAG,
    CONFIG_HASH_TAG,
    CONFIG_NAME_TAG,
    DATA_DIGEST_TAG,
    GIT_COMMIT_TAG,
    GIT_COMMITS_TAG,
    OUTPUT_DIR_TAG,
    OVERRIDES_TAG,
    PARENT_TAG,
    REPRODUCES_TAG,
)
from retino.data.load.digest import DataIdentity, data_identity
from retino.data.load.loaders import locate_dataset
from retino.jobs import identity
from retino.jobs.context import JobContext
from retino.jobs.decision import JobIdentity
from retino.jobs.identity import code_version, config_hash
from retino.models import timm_arch
from retino.models.pretrained import imagenet_weights_url
from retino.training.devices import execution_params, resolve_device
from retino.training.optimization import registered_choices


@dataclass(frozen=True)
class JobPlan:
    identity: JobIdentity
    data: DataIdentity
    git_commit: str
    execution: dict[str, str] = field(default_factory=dict)  # execution_params, once resolved


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: values, choices, and the pretrained weights' variant."""
    validate_config(cfg, registered_choices())
    resolve_device(cfg.device)  # device=cuda without a usable GPU stops here
    torchvision = timm_arch(cfg.model.name, cfg.model.get("arch")) is None  # retino's ResNets
    if cfg.pretrained and cfg.pretrain.source == "imagenet" and not cfg.pretrain.weights \
            and torchvision:
        imagenet_weights_url(cfg.model.name, cfg.pretrain.variant)


def plan_job(cfg: DictConfig) -> JobPlan:
    """Validate the config, find the data (the demo set is generated on first use) and compute
    the job's identity: config, code and data."""
    check_config(cfg)
    data = data_identity(locate_dataset(cfg.data).root)
    return JobPlan(JobIdentity(config_hash(cfg), code_version(), data.digest), data,
                   identity.git_commit())


def with_execution(cfg: DictConfig, plan: JobPlan) -> JobPlan:
    """The plan with its resolved execution in the identity: a CPU run and a GPU run of one
    `auto` config are different runs, never skipped for each other. The GPU's model is logged
    but left out: a requeued job that lands on another model of GPU continues its run."""
    execution = execution_params(cfg)
    resolved = {k: v for k, v in execution.items() if k != GPU_PARAM}
    identity = replace(plan.identity, config_hash=config_hash(cfg, resolved))
    return replace(plan, identity=identity, execution=execution)


def named(cfg: DictConfig) -> dict[str, str]:  # reports group a study's seeds by this name
    return {CONFIG_NAME_TAG: run_name(cfg)}


def invocation_tags(ctx: JobContext, commit: str) -> dict[str, str]:
    """What MLflow records of how a job was started: overrides, commit, folder, study."""
    tags = {OVERRIDES_TAG: " ".join(ctx.overrides) or "(none)", GIT_COMMIT_TAG: commit,
            OUTPUT_DIR_TAG: str(ctx.output_dir)}
    if ctx.parent_run_id:
        tags[PARENT_TAG] = ctx.parent_run_id  # this job is a child of the study's run
    return tags


def new_run_tags(ctx: JobContext, plan: JobPlan) -> dict[str, str]:
    """What MLflow records of a new run, beside the params: how it started and its identity."""
    tags = invocation_tags(ctx, plan.git_commit) | {
        GIT_COMMITS_TAG: plan.git_commit, CODE_VERSION_TAG: plan.identity.code_version,
        DATA_DIGEST_TAG: plan.identity.data_digest, CONFIG_HASH_TAG: plan.identity.config_hash}
    if ctx.reproduces:
        tags[REPRODUCES_TAG] = ctx.reproduces
    return tags
