"""The standard evaluation protocol: one function for every method and for saved sets."""

from distillkit.evaluation.protocol import (
    EvalSettings,
    evaluate_in_turn,
    evaluate_set,
    test_accuracy,
    train_and_test,
    train_network,
)
from distillkit.evaluation.soft_labels import soft_loss, teacher_for

__all__ = [
    "EvalSettings",
    "evaluate_in_turn",
    "evaluate_set",
    "soft_loss",
    "teacher_for",
    "test_accuracy",
    "train_and_test",
    "train_network",
]
