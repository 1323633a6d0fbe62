"""Tests of jobs: the lifecycle, its decisions, identity, signals, files a stranger wrote."""
