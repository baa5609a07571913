"""Augmentations used during distillation and evaluation."""

from distillkit.augment.dsa import DSA, FAMILIES, DSAParams

__all__ = ["DSA", "DSAParams", "FAMILIES"]
