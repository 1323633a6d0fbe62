"""Paired comparisons of configurations, intervals over seeds, and study reports computed from
the runs' predictions files."""

import csv
import math

import numpy as np
import pytest

from retino.core.metric_names import POPULATIONS
from retino.evaluation.intervals import (
    paired_differences,
    pooled_intervals,
    run_intervals,
    same_images,
    seed_interval,
)
from retino.evaluation.predictions import frame_metrics
from retino.studies.comparison import COLUMNS as COMPARISON_COLUMNS
from retino.studies.comparison import configurations, one_axis_pairs, run_labels
from retino.studies.folds import CROSS_VALIDATION_COLUMNS
from retino.studies.results_table import results_table
from retino.studies.study_report import write_report
from retino.tracking.records import RunRecord
from tests.helpers.predictions import better, predictions

PARAMS = {"model.name": "resnet18", "pretrained": "False", "resolution.size": "64", "seed": "0",
          "lr": "0.001", "bootstrap_rounds": "50", "data.num_workers": "0"}


def record(run_id, test, val=None, **changes):
    """A finished run as read back from the store: its params and its predictions, no logged
    metrics (a report computes them from the files)."""
    params = {**PARAMS, **{k.replace("__", "."): str(v) for k, v in changes.items()}}
    name = f"{params['model.name']}-{'pretrained' if params['pretrained'] == 'True' else 'scratch'}"
    return RunRecord(run_id, f"{name}-{params['resolution.size']}px", "FINISHED", params, {},
                     {"test_acc": [0.5]}, {"selected_epoch": 1}, None, test, val)


def test_identical_predictions_differ_by_zero_with_a_zero_width_interval():
    frame = predictions(50)
    differences = paired_differences([frame], [frame.sample(frac=1, random_state=1)], rounds=200)
    for metric, (delta, low, high, p) in differences.items():
        assert delta == low == high == 0, metric  # rows in another order: still the same images
        assert p == 1, metric


def test_a_better_model_differs_by_its_gain_with_an_interval_that_excludes_zero():
    before = predictions(150)
    after = better(before, 0.5)
    gain = frame_metrics(after, "")["acc"] - frame_metrics(before, "")["acc"]
    delta, low, high, p = paired_differences([before], [after], rounds=300)["acc"]
    assert delta == pytest.approx(gain) and 0 < low < delta < high
    assert p == pytest.approx(2 / 301)  # no resample on the other side of 0
    # Unpaired, the two test-set noises would add up: pairing cancels the shared hard images.
    assert high - low < 0.5 * (0.12 + 0.12)  # about 2 * 1.96 * sqrt(.7 * .3 / 300) each


def test_runs_on_different_test_images_are_not_compared():
    frame = predictions(30)
    with pytest.raises(ValueError, match="different images"):
        same_images([frame, frame.iloc[1:]])


def test_interval_over_seeds_is_the_t_interval_of_the_mean():
    mean, std, low, high = seed_interval([0.70, 0.72, 0.74])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (mean, std) == pytest.approx((0.72, 0.02))
    assert (low, high) == pytest.approx((0.72 - half, 0.72 + half))
    assert np.isnan(seed_interval([0.7])[2])


def test_pairs_are_configurations_that_differ_in_exactly_one_axis():
    frame = predictions(20)
    runs = [record(f"r{i}", frame, model__name=model, pretrained=pretrained)
            for i, (model, pretrained) in enumerate(
                [("resnet18", False), ("resnet18", True), ("resnet50", False), ("resnet50", True)])]
    runs.append(record("r9", frame, model__name="resnet50", resolution__size=224))
    runs.append(record("r4", frame, seed=1))  # a second seed of r0's configuration
    runs.append(record("r5", frame, data__num_workers=4))  # how it ran, not what it learned
    runs.append(record("r6", frame, seed=2, execution__gpu="NVIDIA H200"))  # nor on which GPU
    pairs = one_axis_pairs(configurations(runs, run_labels(runs)))
    changes = sorted((change, a.label, b.label) for change, a, b in pairs)
    assert changes == [
        ("model.name: resnet18 → resnet50", "resnet18-pretrained-64px", "resnet50-pretrained-64px"),
        ("model.name: resnet18 → resnet50", "resnet18-scratch-64px", "resnet50-scratch-64px"),
        ("pretrained: False → True", "resnet18-scratch-64px", "resnet18-pretrained-64px"),
        ("pretrained: False → True", "resnet50-scratch-64px", "resnet50-pretrained-64px"),
        ("resolution.size: 64 → 224", "resnet50-scratch-64px", "resnet50-scratch-224px"),
    ]  # and r9 against resnet18-scratch-64px differs in two axes: no pair
    scratch18 = next(a for _, a, _ in pairs if a.label == "resnet18-scratch-64px")
    assert sorted(scratch18.repeats()) == ["0/", "1/", "2/"]  # seed / fold (none)


def test_a_study_of_runs_without_figures_draws_none_and_one_with_them_draws_its_own(tmp_path):
    """plots=false on every run (a search of many runs): the study's report is the same, less
    its figures; a run that drew its figures (or was logged before the key) brings them back."""
    base = predictions(40)
    runs = [record(f"r{s}", better(base, 0.1 * s, s), seed=s, plots=False) for s in range(2)]
    quiet = {f.name for f in write_report(runs, tmp_path / "quiet", "seeds")}
    assert {"results.md", "results.csv", "report.html"} <= quiet
    assert not [name for name in quiet if name.endswith(".png")]
    # A sweep's own setting wins over its runs' (a run it reused kept the setting it ran with)
    asked = {f.name for f in write_report(runs, tmp_path / "asked", "seeds", draw=True)}
    assert {"comparison.png", "roc_referable.png"} <= asked
    runs[0].params.pop("plots")  # logged before the key existed: drawn, as it was then
    drawn = {f.name for f in write_report(runs, tmp_path / "drawn", "seeds")}
    assert {"comparison.png", "roc_referable.png"} <= drawn
    refused = {f.name for f in write_report(runs, tmp_path / "refused", "seeds", draw=False)}
    assert not [name for name in refused if name.endswith(".png")]


def test_report_numbers_come_from_the_predictions_files(tmp_path):
    base = predictions(60)  # one test set, three seeds that answer it differently
    seeds = {seed: better(base, 0.1 * seed, seed) for seed in range(3)}
    runs = [record(f"a{s}", f, val=predictions(20, seed=9), seed=s) for s, f in seeds.items()]
    runs += [record(f"b{s}", better(f, 0.6, s), val=predictions(20, seed=9), seed=s,
                    model__name="resnet50") for s, f in seeds.items()]
    header, rows = results_table(runs)
    cells = dict(zip(header, rows[0], strict=True))
    accuracies = [100 * frame_metrics(f, "")["acc"] for f in seeds.values()]
    mean, std, _, _ = seed_interval(accuracies)
    low, high = (100 * bound for bound in pooled_intervals(list(seeds.values()), 50)["acc"])
    assert cells["seeds"] == "3"
    assert cells["test acc % (selected epoch)"] == f"{mean:.2f} ± {std:.2f} [{low:.2f}, {high:.2f}]"
    baseline = 100 * base["grade"].value_counts(normalize=True).max()
    assert cells["majority-grade baseline %"].startswith(f"{baseline:.2f} ± 0.00")
    files = {f.name for f in write_report(runs, tmp_path, "seeds: 6 runs")}
    assert {"results.md", "results.csv", "comparisons.csv", "roc_referable.png"} <= files
    text = (tmp_path / "results.md").read_text()
    assert "## Paired comparisons" in text and "model.name: resnet18 → resnet50" in text
    # the first table fits a screen: the headline with its intervals; the rest in a section
    first_table = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert first_table == ("| run | seeds | test acc % (selected epoch) | test QWK (selected) | "
                           "referable AUC (selected, all photographs) | selected epoch |")
    assert "## Each configuration in detail" in text and "| majority-grade baseline % |" in text
    [row] = csv.DictReader((tmp_path / "comparisons.csv").open())
    assert (row["A"], row["B"], row["seeds (A / B)"]) == (
        "resnet18-scratch-64px", "resnet50-scratch-64px", "3 / 3")
    gain = np.mean([100 * frame_metrics(r.test, "")["acc"] for r in runs[3:]]) - mean
    pooled, per_seed = row["Δ test acc % (B − A) [paired patient bootstrap 95 %]"], row[
        "Δ test acc % per seed (mean ± std over seeds)"]
    assert pooled.startswith(f"+{gain:.2f} [+") and per_seed.startswith(f"+{gain:.2f} ± ")


SCREENING_WORDS = ("AUC", "sensitivity", "specificity", "PPV", "NPV")


def unnamed_screening_columns(header: list[str]) -> list[str]:
    """The columns holding a screening number that do not say of which photographs (a table
    with a "photographs" column names them in each row)."""
    if "photographs" in header:
        return []
    return [column for column in header if any(word in column for word in SCREENING_WORDS)
            and not any(name in column for name in POPULATIONS)]


def test_every_screening_number_of_a_study_says_of_which_photographs(tmp_path):
    """One name per number: each AUC, sensitivity and specificity column of every table a
    study writes names its photographs ("all photographs", "gradable photographs", ...)."""
    base, val = predictions(60), predictions(20, seed=9)
    runs = [record("a", base, val=val), record("b", better(base, 0.5), val=val,
                                                model__name="resnet50")]
    written = [f for f in write_report(runs, tmp_path, "names: 2 runs") if f.suffix == ".csv"]
    assert {f.name for f in written} >= {"results.csv", "comparisons.csv", "screening.csv"}
    for path in written:
        header = next(csv.reader(path.open()))
        assert unnamed_screening_columns(header) == [], path.name
    assert unnamed_screening_columns(CROSS_VALIDATION_COLUMNS) == []


def test_an_interval_over_seeds_stays_within_what_the_metric_can_be():
    runs = [RunRecord(f"r{seed}", "resnet18-scratch-64px", "FINISHED",
                      {**PARAMS, "seed": str(seed)}, {}, {}, {"test_referable_auc_selected": auc},
                      None)
            for seed, auc in enumerate([0.999, 0.99, 0.96])]
    header, [row] = results_table(runs)
    cell = dict(zip(header, row, strict=True))["referable AUC (selected, all photographs)"]
    assert cell.startswith("0.983 ± 0.020 [") and cell.endswith(", 1.000]")  # t says 1.033


def test_runs_whose_true_grades_differ_are_not_compared():
    frame = predictions(30)
    relabelled = frame.copy()
    relabelled.loc[:2, "grade"] = (relabelled.loc[:2, "grade"] + 1) % 5
    with pytest.raises(ValueError, match="true grades differ on 3 images"):
        same_images([frame, relabelled])


def test_a_pair_reads_the_numbers_in_option_names():
    frame = predictions(20)
    runs = [record("r0", frame, model__name="resnet101"),
            record("r1", frame, model__name="resnet18")]
    [(change, a, b)] = one_axis_pairs(configurations(runs, run_labels(runs)))
    assert change == "model.name: resnet18 → resnet101"
    runs = [record("r0", frame, tta="flips"), record("r1", frame, tta="none"),
            record("r2", frame, tta="flips", ema_decay="0.999"),
            record("r3", frame, tta="flips", ema_decay="None")]
    changes = {change for change, _, _ in one_axis_pairs(configurations(runs, run_labels(runs)))}
    assert {"tta: none → flips", "ema_decay: None → 0.999"} <= changes  # off is the baseline


def test_seeds_that_agree_pool_to_exactly_one_runs_interval():
    frame = predictions(80)
    single = run_intervals(frame, "test_", rounds=200)
    pooled = pooled_intervals([frame, frame.copy(), frame.copy()], rounds=200)
    for name, (low, high) in pooled.items():
        expected = (single[f"test_{name}_ci_low"], single[f"test_{name}_ci_high"])
        assert (low, high) == pytest.approx(expected, abs=1e-12)  # a mean of equal floats


def test_more_seeds_never_make_the_interval_narrower_than_the_test_set_allows():
    """The defect: three nearly equal seeds gave a t interval far narrower than one run's
    bootstrap interval; the pooled interval keeps the test set's sampling error."""
    base = predictions(80)
    seeds = [better(base, 0.02 * s, s) for s in range(3)]
    single = [run_intervals(f, "test_", rounds=200) for f in seeds]
    pooled = pooled_intervals(seeds, rounds=200)
    width = pooled["acc"][1] - pooled["acc"][0]
    single_widths = [s["test_acc_ci_high"] - s["test_acc_ci_low"] for s in single]
    assert width >= 0.9 * min(single_widths)
    _, _, t_low, t_high = seed_interval([frame_metrics(f, "")["acc"] for f in seeds])
    assert t_high - t_low < 0.5 * width  # what the report showed before


def test_pairs_carry_delong_p_adjusted_over_the_study_and_refused_pairs_are_listed(tmp_path):
    """Three configurations of one axis on one test set: three pairs, each difference with the
    p of that difference (DeLong's for the AUC, patients clustered) and Holm's adjustment over
    the table's nine tests; a fourth configuration tested on other images is listed as not
    compared, with the reason."""
    from retino.evaluation.delong import delong_test, holm_adjusted
    from retino.studies.comparison import AUCS, DIFFERENCE, P_VALUE, comparison_rows

    base = predictions(80)
    sharper = base.copy()
    sharper["p_referable"] = np.where(base["grade"] >= 2, base["p_referable"] + 0.3,
                                      base["p_referable"])
    runs = [record("r0", base, lr=0.001), record("r1", sharper, lr=0.01),
            record("r2", better(base, 0.2), lr=0.1),
            record("r3", predictions(40, seed=7), lr=1.0)]
    compared = comparison_rows(one_axis_pairs(configurations(runs, run_labels(runs))))
    rows = {(row[1], row[2]): dict(zip(COMPARISON_COLUMNS, row, strict=True))
            for row in compared.rows}
    assert len(rows) == 3
    referable = base["grade"] >= 2
    expected = delong_test(referable, base["p_referable"], sharper["p_referable"],
                           base["patient"])
    pair = rows["resnet18-scratch-64px lr=0.001", "resnet18-scratch-64px lr=0.01"]
    assert pair[AUCS] == f"{expected.auc_a:.3f} → {expected.auc_b:.3f}"
    low, high = expected.difference_interval()
    assert pair[DIFFERENCE["referable_auc"]] == \
        f"{expected.difference:+.3f} [{low:+.3f}, {high:+.3f}]"

    def p_of(cell):
        raw, holm = cell.removesuffix(")").split(" (Holm ")
        return float(raw), float(holm)
    assert p_of(pair[P_VALUE["referable_auc"]])[0] == pytest.approx(expected.p, rel=1e-3)
    tests = [p_of(row[P_VALUE[metric]]) for row in rows.values() for metric in P_VALUE]
    assert len(tests) == 9
    assert [holm for _, holm in tests] == pytest.approx(
        holm_adjusted([raw for raw, _ in tests]), rel=1e-2, abs=1e-3)
    assert [(a, b) for a, b, _ in compared.refused] == [
        ("resnet18-scratch-64px lr=0.001", "resnet18-scratch-64px lr=1"),
        ("resnet18-scratch-64px lr=0.01", "resnet18-scratch-64px lr=1"),
        ("resnet18-scratch-64px lr=0.1", "resnet18-scratch-64px lr=1")]
    write_report(runs, tmp_path, "lr: 4 runs")
    text = (tmp_path / "results.md").read_text()
    assert "**Not compared**" in text
    assert "- resnet18-scratch-64px lr=0.1 and resnet18-scratch-64px lr=1: the runs were " \
        "tested on different images" in text


def test_the_study_report_screens_each_run_and_is_one_page(tmp_path):
    """A screening row per run (by patient, two operating points chosen on validation; a run
    without validation at the predicted grade, marked), and report.html with every figure."""
    base, val = predictions(60), predictions(40, seed=9)
    assessed = base.assign(gradable=[i >= 3 for i in range(len(base))])  # 3 not gradable
    runs = [record("r0", assessed, val=val), record("r1", better(base, 0.5), val=None, lr=0.1)]
    files = {f.name for f in write_report(runs, tmp_path, "screening: 2 runs")}
    assert {"screening.csv", "report.html"} <= files
    rows = {(row["run"], row["photographs"]): row
            for row in csv.DictReader((tmp_path / "screening.csv").open())}
    assert sorted(rows) == [
        ("resnet18-scratch-64px lr=0.001", "all photographs"),
        ("resnet18-scratch-64px lr=0.001", "gradable photographs"),
        ("resnet18-scratch-64px lr=0.001", "not gradable = refer"),
        ("resnet18-scratch-64px lr=0.1", "all photographs")]  # quality not assessed
    with_val = rows["resnet18-scratch-64px lr=0.001", "gradable photographs"]
    without = rows["resnet18-scratch-64px lr=0.1", "all photographs"]
    assert with_val["counted by"] == "patient"
    assert with_val["imageability % (k/n) [95 %]"].startswith("97.5 (117/120) [")
    assert without["imageability % (k/n) [95 %]"] == "not assessed"
    cell = with_val["specificity target: specificity % (k/n) [95 %]"]
    assert cell.count("[") == 1 and "/" in cell  # k/n and the interval
    assert without["sensitivity target: sensitivity % (k/n) [95 %]"].endswith(
        "(at predicted grade)")
    assert without["specificity target: sensitivity % (k/n) [95 %]"] == ""
    # The same number under the same name as the run's own report
    from retino.studies.screening_table import run_screening

    report = run_screening(runs[0])
    for population in report.populations:
        sens = population.level("patient").rates["sensitivity target"]["sensitivity"]
        row = rows["resnet18-scratch-64px lr=0.001", population.name]
        assert row["sensitivity target: sensitivity % (k/n) [95 %]"].startswith(
            f"{100 * sens.value:.1f} ({sens.count}/{sens.total}) [")
    page = (tmp_path / "report.html").read_text()
    assert "<h1>screening: 2 runs</h1>" in page and "Screening: referable DR" in page
    assert page.count("<img") == len([f for f in files if f.endswith(".png")])
