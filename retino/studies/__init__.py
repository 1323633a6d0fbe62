"""The studies stage: a multirun as a study (Hydra callbacks: a parent run, a report at the end),
paired comparisons, the report, the Model Registry's choice, and reproduction of what was logged."""
