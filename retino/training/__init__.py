"""The training stage: the epoch loop, the epoch a run keeps, checkpoints and resume, precision
and devices, CIFAR-10 pretraining, and one run built from a config (retino/training/pipeline.py).
Imports neither MLflow nor Hydra: a Tracker is handed in."""
