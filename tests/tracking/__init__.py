"""Tests of tracking: the MLflow store and tracked runs."""
