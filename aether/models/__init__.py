"""Backbones: providers that build a classifier or a multi-scale encoder and say how to preprocess
for it (backbone.py), and the networks of a task head over an encoder (encoder_net.py, heads.py)."""
