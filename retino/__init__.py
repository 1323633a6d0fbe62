"""retino: diabetic-retinopathy grading experiments (PyTorch, Hydra, MLflow)."""

from pathlib import Path

# The project root holds run.py, conf/ and the default MLflow store; paths are made absolute
# from here so that a Hydra job's working folder never changes where things land.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
