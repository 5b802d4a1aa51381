"""Backbones: providers that build a classifier network and say how to preprocess for it."""
