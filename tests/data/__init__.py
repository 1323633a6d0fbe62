"""Tests of data: loaders, augmentation, prepare, public sets, quality, leakage, audit."""
