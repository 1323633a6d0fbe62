"""The DR grades, defined once: 0 no DR, 1 mild, 2 moderate, 3 severe, 4 proliferative.

Every stage that counts, parses, names or thresholds grades imports them from here.
"""

from __future__ import annotations

NUM_GRADES = 5  # the classifier head's width, the confusion matrix's side
GRADES = tuple(range(NUM_GRADES))
GRADE_NAMES = ("0 no DR", "1 mild", "2 moderate", "3 severe", "4 proliferative")
REFERABLE_GRADE = 2  # grade >= 2 ("moderate or worse") is referable DR, the screening threshold
PROBABILITY_COLUMNS = [f"p{grade}" for grade in GRADES]  # of a predictions file
# A predictions file ranks referable DR by P(referable), or, for a regression head (which gives
# no probabilities), by its output: the grade as a number
REFERABLE_PROBABILITY_COLUMN = "p_referable"
OUTPUT_COLUMN = "output"
# ... and says of each photograph (one row each) its name, whose eye it is, the grader's grade
# and the model's
IMAGE_COLUMN = "image"
PATIENT_COLUMN = "patient"
GRADE_COLUMN = "grade"
PREDICTED_COLUMN = "predicted"


def parse_grade(text: str) -> int | None:
    """A label as the CSVs write it ('2'; '2.0' from a spreadsheet) -> 2; None if it is not a
    grade 0-4. Every reader of labels (training, prepare, the public sets) parses with this."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and int(value) in GRADES else None
