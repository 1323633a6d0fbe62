"""Tests of evaluation: metrics, DeLong, intervals, screening, activation maps."""
