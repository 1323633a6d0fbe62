"""Tests of serving: a trained run as a grader (predict, evaluate, export, served)."""
