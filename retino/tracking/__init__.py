"""The tracking stage: the MLflow store, tracked runs, a study's runs, and runs read back as plain
values for reports. The only stage that talks to MLflow runs."""
