"""The standard evaluation protocol: one function for every method and for saved sets."""

from distillkit.evaluation.protocol import EvalSettings, evaluate_set, train_and_test

__all__ = ["EvalSettings", "evaluate_set", "train_and_test"]
