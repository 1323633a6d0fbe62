"""Tests of models: the networks, heads, pretrained weights, timm's backbones, cost."""
