"""The evaluation stage: per-image predictions → metrics, intervals, comparisons' statistics,
figures and activation maps. Pure functions of predictions: no training state, no MLflow."""
