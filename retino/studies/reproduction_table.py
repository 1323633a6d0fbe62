"""A reproduced study's table: each run that re-ran a logged run beside its original, a verdict
per headline number (retino/evaluation/reproduced.py); reproduction.csv and a section of the
reproduction's report.
"""

from __future__ import annotations

from retino.core.names import FINISHED, IMPORTED_FROM_TAG, REPRODUCES_TAG
from retino.evaluation.reproduced import NOT_COMPARED, reproduction_verdicts
from retino.studies.comparison import run_labels, run_names
from retino.tracking.records import RunRecord, read_runs, stored_runs

DEFAULT_VERDICT_ROUNDS = 1000  # for a run logged with bootstrap_rounds=0

REPRODUCTION_COLUMNS = ["run", "original run", "reproduced run", "metric", "original [95 %]",
                        "reproduced", "Δ reproduced − original [paired patient bootstrap 95 %]",
                        "verdict"]

REPRODUCTION_LEGEND = """\
Each reproduced run beside its original, on the same test photographs (the epoch each chose on
validation). "identical": equal predictions, image by image, to the last digit; "reproduced": the
reproduction's number within the original's 95 % interval, and the difference's interval (a
bootstrap of test patients, paired: the same patients score both runs) covering 0; "differs":
either fails. A run with `deterministic=true` on a CPU, run again with the same code and data, is
expected identical: any other verdict says so. An original imported from a study bundle shows the
author's run id.
"""


def _expect_identical(*runs: RunRecord) -> bool:
    """deterministic=true on a CPU, for every run: predictions equal to the last digit."""
    return all(run.params.get("deterministic") == "True"
               and run.params.get("execution.device") == "cpu" for run in runs)


def _verdict_rows(original: RunRecord, copy: RunRecord, name: str) -> list[list[str]]:
    """A row per headline metric; one row saying why where the runs cannot be compared."""
    ids = [name, original.tags.get(IMPORTED_FROM_TAG, original.run_id), copy.run_id]
    if original.test is None or copy.test is None:
        return [[*ids, "", "", "", "", f"{NOT_COMPARED}: no predictions files (runs logged "
                                        "before they existed)"]]
    rounds = int(original.params.get("bootstrap_rounds", 0)) or DEFAULT_VERDICT_ROUNDS
    try:
        verdicts = reproduction_verdicts(original.test, copy.test, rounds,
                                         _expect_identical(original, copy))
    except ValueError as err:  # other photographs, or other grades
        return [[*ids, "", "", "", "", f"{NOT_COMPARED}: {err}"]]
    return [[*ids, *verdict.cells()] for verdict in verdicts]


def reproduction_table(runs: list[RunRecord]) -> list[list[str]]:
    """Per run that re-ran a logged run (python -m retino.reproduce), a verdict per headline
    metric against its original (REPRODUCTION_LEGEND), the run named by its configuration's
    label; [] when none did."""
    copies = [run for run in runs if run.status == FINISHED
              and run.tags.get(REPRODUCES_TAG, "/").isalnum()]  # a run id, not an output folder
    if not copies:
        return []
    # an original not in this store (a reproduction imported from a bundle) has no verdict here
    originals = {run.run_id: run for run in read_runs(
        run_ids=sorted(stored_runs({run.tags[REPRODUCES_TAG] for run in copies})))}
    copies = [run for run in copies if run.tags[REPRODUCES_TAG] in originals]
    if not copies:
        return []
    names = run_names(copies, run_labels(copies))
    return [row for copy in copies for row in _verdict_rows(originals[copy.tags[REPRODUCES_TAG]],
                                                             copy, names[copy.run_id])]
