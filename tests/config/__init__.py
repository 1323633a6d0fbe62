"""Tests of config: composition, validation, params and --help."""
