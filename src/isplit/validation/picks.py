"""The analysis's two picks, measured: ``validation.json``'s ``picks`` block (each pick's point
and its accuracy with the trained bottleneck where it was validated) and the line that says how
each did (``isplit validate``'s output, the report's validation section).

The picks are the analysis's (:attr:`isplit.analysis.Analysis.picks`), not derived again here. A
``validation.json`` written before the block existed has none, and shows no line."""

from __future__ import annotations

from collections.abc import Mapping

from isplit.analysis import Analysis

#: How the line calls each pick, by the key of :data:`isplit.analysis.picks.ROLES`.
NAMES = {"isplit": "I-SPLIT's pick", "evidence": "evidence-backed pick"}


def measured_picks(analysis: Analysis, accuracies: Mapping[str, float]) -> dict:
    """The ``picks`` block: per pick its predictor, point and accuracy (None where its point was
    not validated); with the evidence-backed pick also whether the two agree and the evidence's
    accuracy minus I-SPLIT's (None unless both were measured). Empty without picks."""
    out: dict = {
        role: {"predictor": p.predictor, "point": p.point, "accuracy": accuracies.get(p.point)}
        for role, p in analysis.picks.items()
    }
    if "evidence" in out:
        isplit, evidence = out.get("isplit"), out["evidence"]
        both = isplit is not None and None not in (isplit["accuracy"], evidence["accuracy"])
        out["agree"] = isplit is not None and isplit["point"] == evidence["point"]
        out["evidence_minus_isplit"] = evidence["accuracy"] - isplit["accuracy"] if both else None
    return out


def picks_line(block: Mapping | None) -> str | None:
    """How each pick did, in one line (None without picks): each pick's point and accuracy, the
    evidence's difference in percentage points; one statement when the picks agree."""
    if not block or not any(role in block for role in NAMES):
        return None
    if block.get("agree"):
        p = block["evidence"]
        return f"I-SPLIT's pick and the evidence-backed pick agree: {p['point']}: {_accuracy(p)}"
    parts = [
        f"{NAMES[role]} {block[role]['point']}: {_accuracy(block[role])}"
        for role in NAMES
        if role in block
    ]
    diff = block.get("evidence_minus_isplit")
    return "; ".join(parts) + ("" if diff is None else f" ({100 * diff:+.2f} pp)")


def _accuracy(pick: Mapping) -> str:
    acc = pick.get("accuracy")
    return "not validated" if acc is None else f"accuracy {acc:.4f}"
