"""The two picks of an analysis: I-SPLIT's (the maximum of CUI over the admissible points, the
paper's method) and the evidence-backed one (the maximum of
:data:`~isplit.importance.registry.EVIDENCE_PREDICTOR`, with
:data:`~isplit.importance.registry.EVIDENCE_REASON`), each with its point, value and head cost.

They follow from the curves and the points, so a run folder written before picks were recorded
has them too; a run without the evidence predictor (``--predictors cui``) has I-SPLIT's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from isplit.analysis.curves import best_point
from isplit.importance.registry import EVIDENCE_PREDICTOR, EVIDENCE_REASON

if TYPE_CHECKING:
    from isplit.analysis.result import Analysis

#: The picks by key, in the order they are shown: key -> (predictor, how the pick is called).
ROLES = {
    "isplit": ("cui", "I-SPLIT's pick (the CUI maximum, the paper's method)"),
    "evidence": (EVIDENCE_PREDICTOR, f"evidence-backed pick (the {EVIDENCE_PREDICTOR} maximum)"),
}


@dataclass(frozen=True)
class Pick:
    """The maximum of one predictor over the admissible points."""

    role: str  # a key of ROLES
    predictor: str
    point: str
    value: float
    head_flops: float
    head_flop_share: float | None  # of the whole model's FLOPs
    bytes: int  # the tensor that crosses the link, at batch 1

    @property
    def title(self) -> str:
        return ROLES[self.role][1]

    def cost(self) -> str:
        """The head's cost in words: MFLOPs and their share of the model's."""
        share = "" if self.head_flop_share is None else f" = {self.head_flop_share:.0%}"
        return f"head {self.head_flops / 1e6:.1f} MFLOPs{share}, {self.bytes} bytes"

    def to_json(self) -> dict:
        return {
            "predictor": self.predictor,
            "point": self.point,
            "value": self.value,
            "head_flops": self.head_flops,
            "head_flop_share": self.head_flop_share,
            "bytes": self.bytes,
        }


def picks(a: Analysis) -> dict[str, Pick]:
    """I-SPLIT's pick and, when the run computed its predictor, the evidence-backed one (by
    :data:`ROLES` key); none where no admissible point has a finite value."""
    mask = [p.admissible for p in a.points]
    out = {}
    for role, (name, _) in ROLES.items():
        if name != "cui" and name not in a.predictors:
            continue
        curve = a.curve(name)
        i = best_point(curve, mask)
        if i is None:
            continue
        p = a.points[i]
        out[role] = Pick(
            role, name, p.name, float(curve[i]), p.head_flops, a.flop_share(p), int(p.bytes)
        )
    return out


def agree(found: dict[str, Pick]) -> bool:
    """Whether both picks exist and are the same point."""
    return len(found) == len(ROLES) and len({p.point for p in found.values()}) == 1


def picks_json(a: Analysis) -> dict:
    """``curves.json``'s ``picks``: each pick, whether they agree, and the evidence's reason
    (only with the evidence-backed pick)."""
    found = picks(a)
    out: dict = {role: p.to_json() for role, p in found.items()}
    if "evidence" in found:
        out["agree"] = agree(found)
        out["reason"] = EVIDENCE_REASON
    return out


def _value(p: Pick) -> str:
    return f"{p.predictor} {p.value:.4g}" if np.isfinite(p.value) else f"{p.predictor} n/a"


def picks_lines(a: Analysis) -> list[str]:
    """The two picks in words (the command line's summary, the report's first screen): none
    without the evidence-backed pick, one line when the picks agree, else one per pick; then
    the reason."""
    found = picks(a)
    if "evidence" not in found:
        return []
    if agree(found):
        p, e = found["isplit"], found["evidence"]
        lines = [
            f"I-SPLIT's pick and the evidence-backed pick agree: {p.point} "
            f"({_value(p)}, {_value(e)}; {p.cost()})"
        ]
    else:
        lines = [f"{p.title}: {p.point} ({_value(p)}; {p.cost()})" for p in found.values()]
    return [*lines, f"why the evidence-backed pick: {EVIDENCE_REASON}"]
