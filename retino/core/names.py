"""Names that several stages share, each defined once: the files of a run's folder (and its
MLflow artifacts, which carry the same names), the MLflow tags retino writes and reads, and the
environment variables that pass a study's facts to its jobs.

Renaming any of these breaks every run logged before: old runs are read back by these names.
"""

from __future__ import annotations

# --- A run's folder and its artifacts -------------------------------------------------------
CONFIG_FILE = "config.yaml"  # the composed config, resolved
WEIGHTS_FILE = "model_state.pt"  # the selected epoch's state_dict
CHECKPOINT_FILE = "last.pt"  # the last finished epoch: what a resumed run continues from
HISTORY_FILE = "history.csv"  # one row of metrics per epoch
CONFUSION_CSV = "confusion_matrix.csv"  # test counts at the selected epoch
CONFUSION_FIGURE = "confusion_matrix.png"
ACCURACY_FIGURE = "accuracy.png"
ROC_FIGURE = "roc_referable.png"
CAM_FIGURE = "class_activation_maps.png"
CALIBRATION_FIGURE = "calibration.png"  # reliability diagram of P(referable)
DECISION_CURVE_FIGURE = "decision_curve.png"  # net benefit of referring at each threshold
SCREENING_FILE = "screening.md"  # a run's screening report (retino/evaluation/screening.py)
PAGE_FILE = "report.html"  # a run's or a study's one-page report, figures inline
RESULTS_FILE = "results.md"  # a study's report in Markdown (its tables; report.html renders it)
REPRODUCTION_FILE = "reproduction.csv"  # a study's reproduction: each run beside its original
ERROR_FILE = "error.txt"  # a failed run's traceback
SKIPPED_PHOTOGRAPHS_FILE = "skipped_photographs.csv"  # bad_photographs=skip: path, reason
MODEL_DIR = "model"  # the MLflow model: runs:/<id>/model
ENSEMBLE_MODEL_DIR = "ensemble_model"  # a study's registered fold ensemble, on its parent run
GRADER_FILE = "grader.yaml"  # preprocessing and operating point, inside the MLflow model
JOB_LOCK_FILE = ".retino-job.lock"  # held by the process training into the folder

# --- A data set's audit (python -m retino.audit), in <data root>/audit/ and its MLflow run -----
AUDIT_DIR = "audit"  # beside the data it audits; the runs on that data read its summary
AUDIT_SUMMARY_FILE = "summary.json"  # the digest audited, the counts and the shortcut floor
AUDIT_REPORT_FILE = "audit.md"  # and audit.html: the report, figures inline
SURVEY_FILE = "survey.csv"  # one row per photograph: properties, fingerprint, problem
DUPLICATES_FILE = "duplicate_groups.csv"  # photographs that are one photograph, by group
FELLOW_EYES_FILE = "fellow_eye_gaps.csv"  # patients whose eyes are graded >= 2 apart
PROPERTIES_FIGURE = "properties_by_grade.png"
DUPLICATES_FIGURE = "duplicate_groups.png"


def predictions_file(split: str) -> str:
    """Per-image predictions of a split at the selected epoch: predictions_test.csv, ..._val.csv."""
    return f"predictions_{split}.csv"


# --- MLflow tags ------------------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"  # what mlflow ui nests a study's runs by
NOTE_TAG = "mlflow.note.content"  # a run's description: shown first on its Overview tab
OVERRIDES_TAG = "hydra_overrides"  # what was typed on the command line
GIT_COMMIT_TAG = "git_commit"  # where the run started
GIT_COMMITS_TAG = "git_commits"  # every commit it trained under (a resumed run adds one)
OUTPUT_DIR_TAG = "output_dir"
CONFIG_HASH_TAG = "config_hash"  # the run's identity: config ...
CODE_VERSION_TAG = "code_version"  # ... code ...
DATA_DIGEST_TAG = "data_digest"  # ... and data
CONFIG_NAME_TAG = "config_name"  # reports pool a configuration's seeds by this name
REPRODUCES_TAG = "reproduces"  # the run (or study) this one re-runs
EVALUATES_TAG = "evaluates"  # the trained run an external evaluation scored
STUDY_TAG = "study"  # a study's parent run: its name
COMMAND_TAG = "command"  # a study's parent run: the command line
SWEPT_TAG = "swept"  # a study's parent run: its swept axes
ERROR_TAG = "error"  # why a run failed or was killed
CHECKPOINT_SET_ASIDE_TAG = "checkpoint_set_aside"  # why its last.pt could not be resumed from
SUPERSEDED_TAG = "superseded_by"  # an attempt a later run of the same job replaced
PURPOSE_TAG = "purpose"
PRETRAINING = "cifar10 pretraining"  # PURPOSE_TAG of a CIFAR-10 pretraining run
COST_MACHINE_TAG = "cost_machine"  # the CPU, threads and torch its cost_* latencies were timed on
SKIPPED_PHOTOGRAPHS_TAG = "skipped_photographs"  # how many bad_photographs=skip left out
AUDIT_TAG = "data_audit"  # an audit's run: the data digest it audited
AUDIT_RUN_TAG = "audit_run"  # a run on audited data: the audit's run id
COPIES_ACROSS_SPLITS_TAG = "copies_across_splits"  # held-out copies of training ones, allowed
NEAR_COPIES_TAG = "near_copies_across_splits"  # near-duplicate pairs across held-out splits
SHARED_PATIENTS_TAG = "shared_patients"  # test patients with an eye in training or validation
CIFAR10_RUN_TAG = "cifar10_pretrain_run_id"  # the pretraining run a run's weights came from
IMPORTED_FROM_TAG = "imported_from"  # a run or study imported from a bundle: the author's run id
BUNDLE_TAG = "bundle"  # the study bundle a run was imported from, or a study reproduces
ALLOWED_CHANGES_TAG = "allowed_changes"  # a bundle's reproduction run on other code or data
STUDY_MEMBER_PREFIX = "in_study."  # + a study's parent run id: the run counts in that study too

# --- MLflow run statuses: how a run ends (RUNNING until then) --------------------------------
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"

# --- Environment variables ------------------------------------------------------------------
PARENT_ENV = "RETINO_PARENT_RUN_ID"  # a running study's parent run, for its jobs
REPRODUCES_ENV = "RETINO_REPRODUCES"  # set by python -m retino.reproduce; becomes a tag
BUNDLE_ENV = "RETINO_BUNDLE"  # set by python -m retino.reproduce <bundle>; becomes a tag
ALLOWED_CHANGES_ENV = "RETINO_ALLOWED_CHANGES"  # ditto: what it was allowed to run on changed
LOCK_DIR_ENV = "RETINO_LOCK_DIR"  # where jobs sharing a tracking server take their locks
