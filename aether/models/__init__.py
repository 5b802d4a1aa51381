"""Backbones: providers that build a classifier or a multi-scale encoder and say how to preprocess
for it (backbone.py), and the dense tasks' networks over an encoder (dense.py, heads.py)."""
