"""A data audit on disk: its report (Markdown and HTML, figures inline), its tables and the
summary that runs on the same data quote (all in one folder, <data root>/audit by default)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from retino.core.files import atomic_write_text  # noqa: E402
from retino.core.names import (  # noqa: E402
    AUDIT_REPORT_FILE,
    AUDIT_SUMMARY_FILE,
    DUPLICATES_FIGURE,
    DUPLICATES_FILE,
    FELLOW_EYES_FILE,
    PROPERTIES_FIGURE,
    SURVEY_FILE,
)
from retino.core.pages import html_page, markdown_table  # noqa: E402
from retino.data.prepare.preprocess import BadImage, decode_for_size, inspect_image  # noqa: E402
from retino.data.prepare.properties import PROPERTIES  # noqa: E402
from retino.evaluation.data_audit import (  # noqa: E402
    NOT_GRADABLE_SHARE,
    DataAudit,
    properties_by_grade,
    resolutions_by_grade,
)
from retino.evaluation.shortcut import SHORTCUT_NAME  # noqa: E402

LISTED = 20  # rows of a long list shown in the report (the CSV beside it holds them all)
GROUPS_SHOWN = 8  # duplicate groups drawn as thumbnails
THUMBNAIL = 160  # px
FIGURE_PROPERTIES = ("width", "file_kb", "jpeg_quality", "brightness", "field_radius",
                     "border_share")  # what a camera or an export changes most


def write_audit(audit: DataAudit, out: Path, digest: str, root: Path) -> list[Path]:
    """Every file of the audit in out; returns them (the report first)."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {SURVEY_FILE: audit.table, DUPLICATES_FILE: audit.groups,
              FELLOW_EYES_FILE: audit.fellow_eyes}
    for name, table in tables.items():
        atomic_write_text(out / name, table.to_csv(index=False))
    readable = (audit.table["problem"] == "").any()
    figures = [plot_properties(audit.table, out / PROPERTIES_FIGURE)] if readable else []
    if not audit.groups.empty:
        figures.append(plot_duplicate_groups(audit.table, audit.duplicates.groups,
                                             out / DUPLICATES_FIGURE))
    markdown = audit_markdown(audit, digest, root)
    report = out / AUDIT_REPORT_FILE
    atomic_write_text(report, markdown)
    page = report.with_suffix(".html")
    atomic_write_text(page, html_page(f"Data audit: {root.name}", markdown, figures))
    summary = out / AUDIT_SUMMARY_FILE
    atomic_write_text(summary, json.dumps(audit.summary(digest, str(root)), indent=2) + "\n")
    return [report, page, summary, *(out / name for name in tables), *figures]


def audit_markdown(audit: DataAudit, digest: str, root: Path) -> str:
    table = audit.table
    per_split = ", ".join(f"{count} {split}" for split, count
                          in table["split"].value_counts(sort=False).items())
    text = (f"# Data audit: {root.name}\n\n`{root}` (data digest `{digest}`): "
            f"{len(table)} photographs ({per_split}) of {table['patient'].nunique()} patients."
            "\n\n")
    return text + "\n".join([_floor_section(audit), _duplicates_section(audit),
                             _fellow_eyes_section(audit), _unreadable_section(audit),
                             _properties_section(audit)])


def _floor_section(audit: DataAudit) -> str:
    text = "## The score without the retina\n\n"
    if audit.floor is None:
        return text + "Too few patients or grades to cross-validate a model on them.\n"
    top = list(audit.floor.importances.items())[:5]
    return (text + f"{audit.floor.sentence()[0].upper()}{audit.floor.sentence()[1:]}. A "
            "network's score on this set holds that much without any retinopathy learned.\n\n"
            "What carries it: the kappa each property reaches alone (a small tree on it, the "
            "same folds; 0: it carries nothing):\n\n"
            + markdown_table(["property", "kappa alone"],
                             [(PROPERTIES[name], f"{value:.2f}") for name, value in top]))


def _duplicates_section(audit: DataAudit) -> str:
    counts = audit.group_counts()
    text = (f"## Duplicates by content\n\n{counts['duplicate_groups']} group(s) of one "
            f"photograph under several names: {counts['groups_across_splits']} cross splits "
            f"(a photograph tested that a model trained on), {counts['conflicting_groups']} "
            "carry conflicting grades. "
            f"{counts['near_duplicates_across_splits']} near-duplicate pair(s) (another capture "
            "of the eye, or an edited copy) lie in two splits. The grades the copies disagree on "
            f"cap any grader's accuracy at {100 * audit.ceiling:.1f} % "
            "(the label-agreement ceiling).\n\n")
    if audit.groups.empty:
        return text
    shown = audit.groups.loc[audit.groups["crosses_splits"] | audit.groups["conflicting_grades"]]
    shown = shown if not shown.empty else audit.groups
    rows = shown.head(LISTED)[["group", "split", "name", "grade", "patient"]]
    return (text + markdown_table(list(rows.columns), rows.itertuples(index=False))
            + _more(len(shown), DUPLICATES_FILE))


def _fellow_eyes_section(audit: DataAudit) -> str:
    gaps = audit.fellow_eyes
    text = (f"## Patients whose eyes are graded two or more apart\n\n{len(gaps)} patient(s): a "
            "data-quality flag (a patient's eyes usually differ by a grade at most).\n\n")
    if gaps.empty:
        return text
    return (text + markdown_table(list(gaps.columns), gaps.head(LISTED).itertuples(index=False))
            + _more(len(gaps), FELLOW_EYES_FILE))


def _unreadable_section(audit: DataAudit) -> str:
    bad = audit.unreadable
    text = f"## Files that cannot be read\n\n{len(bad)} file(s).\n\n"
    if bad.empty:
        return text
    return (text + markdown_table(list(bad.columns), bad.head(LISTED).itertuples(index=False))
            + _more(len(bad), SURVEY_FILE))


def _properties_section(audit: DataAudit) -> str:
    medians = properties_by_grade(audit.table)
    columns = ["split", "grade", "photographs", *FIGURE_PROPERTIES,
               *([NOT_GRADABLE_SHARE] if NOT_GRADABLE_SHARE in medians else [])]
    resolutions = resolutions_by_grade(audit.table)
    return ("## Image properties per grade and split\n\nMedians; a property that moves with "
            f"the grade is what {SHORTCUT_NAME} can learn.\n\n"
            + markdown_table(columns, medians[columns].itertuples(index=False))
            + "\nThe most common resolutions:\n\n"
            + markdown_table(list(resolutions.columns), resolutions.itertuples(index=False)))


def _more(count: int, file: str) -> str:
    return f"\n... {count - LISTED} more in {file}.\n" if count > LISTED else ""


def plot_properties(table: pd.DataFrame, path: Path) -> Path:
    """Box plots of the properties a camera changes most, per grade, one panel each."""
    readable = table.loc[table["problem"] == ""]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    grades = sorted(readable["grade"].unique())
    for ax, name in zip(axes.ravel(), FIGURE_PROPERTIES, strict=True):
        ax.boxplot([readable.loc[readable["grade"] == g, name].to_numpy() for g in grades],
                   tick_labels=[str(g) for g in grades], showfliers=False)
        ax.set(title=PROPERTIES[name], xlabel="grade")
        ax.title.set_fontsize(9)
    fig.suptitle("Image properties per grade (all splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_duplicate_groups(table: pd.DataFrame, groups: list[list[int]], path: Path) -> Path:
    """The first groups of one photograph as rows of thumbnails, each named with its split
    and grade."""
    shown = groups[:GROUPS_SHOWN]
    width = max(len(group) for group in shown)
    fig, axes = plt.subplots(len(shown), width, figsize=(2.2 * width, 2.4 * len(shown)),
                             squeeze=False)
    for row, group in enumerate(shown):
        for col in range(width):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(group):
                member = table.iloc[group[col]]
                ax.imshow(_thumbnail(Path(member["path"])))
                ax.set_title(f"{member['name']}\n{member['split']}, grade {member['grade']}",
                             fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _thumbnail(path: Path) -> np.ndarray:
    """The photograph, its longer side THUMBNAIL px, RGB (decoded reduced where large)."""
    try:
        width, height, _ = inspect_image(path)
        image = decode_for_size(path, width, height, THUMBNAIL)
    except BadImage:
        return np.zeros((THUMBNAIL, THUMBNAIL, 3), np.uint8)
    scale = THUMBNAIL / max(image.shape[:2])
    return cv2.cvtColor(cv2.resize(image, None, fx=scale, fy=scale,
                                   interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
