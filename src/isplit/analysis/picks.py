"""The two picks of an analysis: I-SPLIT's (the maximum of CUI over the admissible points, the
paper's method) and the evidence-backed one (the maximum of
:data:`~isplit.importance.registry.EVIDENCE_PREDICTOR`, with
:data:`~isplit.importance.registry.EVIDENCE_REASON`), each with its point, value and head cost.

They follow from the curves and the points, so a run folder written before picks were recorded
has them too; a run without the evidence predictor (``--predictors cui``) has I-SPLIT's alone,
and so has one whose evidence predictor cannot rank the points (:func:`usable`: NaN, flat, too
few held-out images), saying why. :func:`select` makes an analysis's best split and candidates
the same way: by the predictor asked for, or by CUI, with the reason, when that one cannot rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from isplit import checks
from isplit.analysis.curves import best_point, local_maxima
from isplit.checks import Check
from isplit.importance.probe import PROBE_HOLDOUT, PROBE_MAX_HELDOUT, holdout_keys
from isplit.importance.registry import EVIDENCE_PREDICTOR, EVIDENCE_REASON

if TYPE_CHECKING:
    from isplit.analysis.result import Analysis

#: The picks by key, in the order they are shown: key -> (predictor, how the pick is called).
ROLES = {
    "isplit": ("cui", "I-SPLIT's pick (the CUI maximum, the paper's method)"),
    "evidence": (EVIDENCE_PREDICTOR, f"evidence-backed pick (the {EVIDENCE_PREDICTOR} maximum)"),
}


#: The predictors scored on held-out images (:mod:`isplit.importance.probe`): they cannot rank
#: the points with fewer than :data:`isplit.checks.MIN_HELD_OUT` of them.
HELD_OUT_PREDICTORS = ("probe", "pca-probe")


def held_out_images(index: Sequence[int] | np.ndarray) -> int:
    """How many of the analysed images (their order keys ``index``: positions among the analysed
    images) the probe predictors score on."""
    keys = holdout_keys(np.asarray(index, dtype=np.int64))
    return int(min((keys < int(PROBE_HOLDOUT * 2**63)).sum(), PROBE_MAX_HELDOUT))


def usable(
    name: str, values: Sequence[float], mask: Sequence[bool], held_out: int, role: str
) -> Check:
    """:func:`isplit.checks.predictor_usable` of predictor ``name`` over the admissible points
    (``mask``), with the held-out images where it is scored on them; ``role``: what the run
    would use it for (``select_by`` or a key of :data:`ROLES`), recorded in its values."""
    held = held_out if name in HELD_OUT_PREDICTORS else None
    c = checks.predictor_usable(name, values, held, mask)
    return replace(c, values={**c.values, "role": role})


@dataclass(frozen=True)
class Selection:
    """Where an analysis's best split comes from: the predictor used (``select_by``: the one
    asked for, or CUI when that one cannot rank the points), the best point and the
    candidates (indices; the best is always one of them), and the checks of the predictors
    that pick a point."""

    select_by: str
    best: int | None
    candidates: list[int]
    checks: list[Check]


def select(
    cui: np.ndarray,
    predictors: Mapping[str, np.ndarray],
    select_by: str,
    mask: Sequence[bool],
    held_out: int,
) -> Selection:
    """The best split and the candidates: the maximum and the local maxima of ``select_by``
    over the admissible points (``mask``); of CUI instead when ``select_by`` fails
    :func:`usable` (NaN everywhere, flat, or too few held-out images), the check saying why.
    The evidence predictor, when computed, is checked too (its pick is left out if it fails)."""
    found = []
    if select_by != "cui" and select_by in predictors:
        found.append(usable(select_by, predictors[select_by], mask, held_out, "select_by"))
    if EVIDENCE_PREDICTOR in predictors and select_by != EVIDENCE_PREDICTOR:
        found.append(
            usable(EVIDENCE_PREDICTOR, predictors[EVIDENCE_PREDICTOR], mask, held_out, "evidence")
        )
    failed = [c for c in found if not c.passed and c.values["role"] == "select_by"]
    by = "cui" if failed else select_by
    curve = cui if by == "cui" else predictors[by]
    best = best_point(curve, mask)
    candidates = local_maxima(curve, mask)
    if best is not None and best not in candidates:  # local_maxima guarantees it; kept true
        candidates = sorted([*candidates, best])
    return Selection(by, best, candidates, found)


def predictor_check(a: Analysis, name: str) -> Check:
    """The run's recorded check of predictor ``name`` (:func:`select`), or, for a run folder
    written before checks were recorded, the check made now (held-out images counted from the
    analysed images)."""
    for c in a.checks:
        if c.name == "predictor_usable" and c.values.get("predictor") == name:
            return c
    role = "select_by" if name == a.select_by else "evidence"
    mask = [p.admissible for p in a.points]
    return usable(name, a.curve(name), mask, held_out_images(np.arange(len(a.labels))), role)


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
    """I-SPLIT's pick and, when the run computed its predictor and it can rank the points
    (:func:`predictor_check`), the evidence-backed one (by :data:`ROLES` key); none where no
    admissible point has a finite value."""
    mask = [p.admissible for p in a.points]
    out = {}
    for role, (name, _) in ROLES.items():
        if name != "cui" and (name not in a.predictors or not predictor_check(a, name).passed):
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
    elif (why := left_out(a)) is not None:
        out["evidence_left_out"] = why
    return out


def left_out(a: Analysis) -> str | None:
    """Why the run computed the evidence predictor yet makes no evidence-backed pick (its
    check failed); None when it makes one or did not compute it."""
    if EVIDENCE_PREDICTOR not in a.predictors:
        return None
    c = predictor_check(a, EVIDENCE_PREDICTOR)
    return None if c.passed else str(c.values.get("reason", "it cannot rank the points"))


def _value(p: Pick) -> str:
    return f"{p.predictor} {p.value:.4g}" if np.isfinite(p.value) else f"{p.predictor} n/a"


def picks_lines(a: Analysis) -> list[str]:
    """The two picks in words (the command line's summary, the report's first screen): none
    without the evidence predictor, one line saying why when it cannot rank the points, one
    line when the picks agree, else one per pick; then the reason."""
    found = picks(a)
    if "evidence" not in found:
        why = left_out(a)
        return [] if why is None else [f"no evidence-backed pick: {EVIDENCE_PREDICTOR} {why}"]
    if agree(found):
        p, e = found["isplit"], found["evidence"]
        lines = [
            f"I-SPLIT's pick and the evidence-backed pick agree: {p.point} "
            f"({_value(p)}, {_value(e)}; {p.cost()})"
        ]
    else:
        lines = [f"{p.title}: {p.point} ({_value(p)}; {p.cost()})" for p in found.values()]
    return [*lines, f"why the evidence-backed pick: {EVIDENCE_REASON}"]
