"""Tests of studies: comparisons, folds, the fold ensemble, the registry, bundles."""
