"""The config stage: the schema (every key, default and meaning), value validation, flat params,
run names and the help text. Imports no torch and no MLflow; only registration.py imports Hydra."""
