"""The classes of the weights against the data set's: label k of the data must mean output k of
the model. Equal names in equal order pass; otherwise the user says how to match them (by name,
or by position), and a mismatch they did not settle is an error, never a silent 6 % accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from isplit import checks
from isplit.data.base import LabelledDataset
from isplit.data.preprocess import Normalise
from isplit.errors import IsplitError

#: how a data set's classes may be matched to a model's outputs
MATCHES = ("name", "position")


class RelabelledDataset(LabelledDataset):
    """``base`` with its labels mapped to the model's outputs (``mapping[label]``) and the
    model's class names; keeps the base's 8-bit path."""

    def __init__(self, base: LabelledDataset, mapping: np.ndarray, classes: Sequence[str]):
        self.base, self.mapping = base, np.asarray(mapping, dtype=np.int64)
        super().__init__(base.name, base.split, classes, self.mapping[base.targets])
        self.in_memory = base.in_memory
        self.root, self.holdout = base.root, base.holdout
        self.preprocess, self.uint8, self.scale = base.preprocess, base.uint8, base.scale

    def with_uint8(self) -> LabelledDataset | None:
        base = self.base.with_uint8()
        return None if base is None else RelabelledDataset(base, self.mapping, self.classes)

    def normaliser(self) -> Normalise:
        return self.base.normaliser()

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, int(self.mapping[y])

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [(x, int(self.mapping[y])) for x, y in self.base.__getitems__(indices)]

    def describe(self) -> dict:
        return {**self.base.describe(), "classes": list(self.classes), "matched_by": "name"}


def match_classes(
    data: LabelledDataset, model_classes: Sequence[str] | None, how: str | None = None
) -> tuple[LabelledDataset, checks.Check]:
    """``data`` whose label k is the model's output k, and the ``class_names`` check.

    ``how``: None (equal names in equal order, or weights that record no names; anything else is
    an error), ``"name"`` (each data class goes to the model output of the same name: the data
    may hold a subset of the model's classes, in any order) or ``"position"`` (label k is output
    k whatever the names say: the check is recorded as failed, and warned)."""
    if how is not None and how not in MATCHES:
        raise IsplitError(f"--match-classes must be one of {', '.join(MATCHES)}, not {how!r}")
    check = checks.class_names(model_classes, data.classes)
    if check.passed or how == "position":
        return data, check
    if how is None:
        raise IsplitError(
            f"{check.message}; pass --match-classes name to map each data class to the model "
            "output of the same name, or --match-classes position to take label k as output k"
        )
    index = {name: k for k, name in enumerate(model_classes or [])}
    missing = [c for c in data.classes if c not in index]
    if missing:
        raise IsplitError(
            f"--match-classes name: the weights have no class named {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''} (theirs: {', '.join(list(model_classes)[:5])}"
            f"{', ...' if len(model_classes) > 5 else ''}); rename the data's folders or use "
            "--match-classes position"
        )
    mapping = np.array([index[c] for c in data.classes], dtype=np.int64)
    matched = checks.Check(
        "class_names", True, {**check.values, "matched_by": "name", "mapping": mapping.tolist()}
    )
    return RelabelledDataset(data, mapping, list(model_classes)), matched
