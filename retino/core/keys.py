"""The roles of config keys, in one table: which keys make a run what it is (its identity),
which only change how fast or where it runs, which its name already shows, which never tell two
configurations of a study apart, and which an external evaluation may change.

Identity (retino/jobs/identity.py), reports and comparisons (retino/studies/), run names
(retino/config/naming.py), retino.evaluate, `run.py --help` and the docs all read this table.
A key that is not listed has the default role: it is part of the identity and a study axis.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_PARAM = "execution.gpu"  # the GPU's model, logged beside the resolved execution params


@dataclass(frozen=True)
class KeyRole:
    """What a config key counts for; the defaults are those of an ordinary key (lr, model)."""

    why: str  # one line for the docs
    identity: bool = True  # enters config_hash: runs that differ in it are different runs
    axis: bool = True  # may tell two configurations of a study apart in its report
    resolved: bool = False  # the identity takes the value the job resolved (auto, null)
    in_name: bool = False  # a run's name (resnet50-pretrained-frozen-224px) shows it
    evaluation: bool = False  # retino.evaluate may change it: how an evaluation runs


def _runs(why: str, **more: bool) -> KeyRole:
    """How a run executes or is watched: never its identity, never a study axis."""
    return KeyRole(why, identity=False, axis=False, **more)


ROLES: dict[str, KeyRole] = {
    "resume": _runs("continue or skip earlier runs; false always trains anew"),
    "data.num_workers": _runs("loader processes: the results are the same for any count"),
    "data.persistent_workers": _runs("keeps loader processes between epochs"),
    "data.prefetch_factor": _runs("batches each loader process prepares ahead"),
    "log_system_metrics": _runs("samples CPU, memory and GPU use into the run"),
    "log_model": _runs("logs the trained model as an MLflow model"),
    "measure_cost": _runs("times the trained model on the CPU and counts its size and FLOPs"),
    "plots": _runs("draws each run's figures (and, unless all its runs had it false, the "
                   "study's); the numbers and files are the same without them"),
    "register_model": _runs("registers a study's best model; trains nothing differently"),
    GPU_PARAM: _runs("the GPU's model: a requeued job on another GPU continues its run"),
    "device": KeyRole("auto, cpu or cuda: identity holds what auto resolved to",
                      resolved=True, evaluation=True),
    "precision": KeyRole("identity holds what auto resolved to (bf16 on CUDA, fp32 on CPU)",
                         resolved=True, evaluation=True),
    "channels_last": KeyRole("memory layout: identity holds what null resolved to",
                             resolved=True, evaluation=True),
    "batch_size": KeyRole("images per step; an evaluation may score in other batches",
                          evaluation=True),
    "seed": KeyRole("a repeat of a configuration, pooled over in reports", axis=False),
    "data.fold": KeyRole("the cross-validation fold that validates: a part of a configuration, "
                         "pooled over in reports", axis=False),
    "experiment": KeyRole("the MLflow experiment the run goes to", axis=False),
    "cam_per_grade": KeyRole("images per grade in the activation-map figure", axis=False),
    "bootstrap_rounds": KeyRole("resamples of the test intervals", axis=False, evaluation=True),
    "referable_sensitivity_target": KeyRole(
        "the operating point's target sensitivity: how results are reported", axis=False),
    "referable_specificity_target": KeyRole(
        "the second operating point's target specificity: how results are reported", axis=False),
    "bad_photographs": KeyRole("refuse stops a run at a photograph it cannot read; skip trains "
                               "without it, so what is learned may differ", axis=False),
    "copies_across_splits": _runs("refuse stops a run whose held-out photographs copy training "
                                  "ones; allow goes on, the count tagged"),
    "max_megapixels": _runs("the largest photograph decoded: larger ones are refused by name",
                            evaluation=True),
    "programme_prevalence": _runs("the prevalence the screening report's PPV and NPV are "
                                  "also given at: how results are reported", evaluation=True),
    # What retino.predict and the served model call "not gradable". A run's own reports read the
    # marks its data was prepared with (report.csv); quality=off turns those off too.
    **{f"quality.{key}": _runs("when predict and the served model call a photograph not "
                               "gradable", evaluation=True)
       for key in ("name", "min_disc_fraction", "max_rim_fit", "min_contrast",
                   "min_red_ratio", "min_red_blue_ratio", "dark_level", "max_dark_fraction",
                   "bright_level", "max_bright_fraction", "max_stray_light",
                   "min_sharpness")},
    "tta": KeyRole("test-time flips at evaluation", evaluation=True),
    "model.name": KeyRole("the architecture", in_name=True),
    "model.arch": KeyRole("model=timm: the timm architecture", in_name=True),
    "pretrained": KeyRole("start from pretrained weights", in_name=True),
    "pretrain.source": KeyRole("where pretrained weights come from", in_name=True),
    "freeze.name": KeyRole("frozen backbone or not", in_name=True),
    "resolution.size": KeyRole("the input size in pixels", in_name=True),
}


def keys_where(**flags: bool) -> frozenset[str]:
    """The listed keys whose roles have these values, e.g. keys_where(identity=False)."""
    return frozenset(key for key, role in ROLES.items()
                     if all(getattr(role, flag) == value for flag, value in flags.items()))


NOT_IDENTITY = keys_where(identity=False)  # how fast or where, never what is learned
AS_RESOLVED = keys_where(resolved=True)  # 'auto' and null say nothing alone
NOT_AN_AXIS = keys_where(axis=False)
IN_NAME = keys_where(in_name=True)
# A study sweeps a group (model=...) or a key (model.name=...): both are already in the name.
NAMED_AXES = IN_NAME | {key.split(".")[0] for key in IN_NAME}
EVALUATION_KEYS = keys_where(evaluation=True)  # what retino.evaluate lets a user override
