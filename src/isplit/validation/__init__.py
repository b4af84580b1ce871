"""Validation: cut the network for real, insert a trained bottleneck, measure accuracy, and score
how well each predictor ranked the points."""

from isplit.validation.sweep import (
    Settings,
    bottleneck_file,
    chance_accuracy,
    linear_probe,
    not_learned,
    train_bottleneck,
    validate,
)

__all__ = [
    "Settings",
    "bottleneck_file",
    "chance_accuracy",
    "linear_probe",
    "not_learned",
    "train_bottleneck",
    "validate",
]
