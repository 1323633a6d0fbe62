"""Tests of training: the loop, weight averaging, precision, the kept epoch, CIFAR-10."""
