"""Checks that run before training: the dataset schema validator and the in-process pytest gate.

Standard library only, so `thinker validate` answers in well under a second without importing torch.
"""
