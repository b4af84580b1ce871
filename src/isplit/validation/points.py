"""Which points a validation sweep trains a bottleneck at: isplit's choice (candidates, the best
split, the analysis's two picks, the budget picks, evenly spaced fill), all admissible points,
or the user's; and the budgets of the regret report, each with isplit's pick."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from isplit.analysis import Analysis
from isplit.analysis.curves import best_point
from isplit.errors import IsplitError
from isplit.graph import ModelGraph, SplitPoint
from isplit.validation.arrange import halve_refusal, map_form
from isplit.validation.settings import Settings

log = logging.getLogger("isplit")


def default_points(analysis: Analysis, budget_picks: Sequence[str], at_least: int = 8) -> list[str]:
    """Candidates, the best split, both picks (I-SPLIT's and, when the analysis computed its
    predictor, the evidence-backed one), the smallest-CDE point, the budget picks, and evenly
    spaced admissible points until there are at least ``at_least``; in network order."""
    adm = [p for p in analysis.points if p.admissible]
    if not adm:
        raise IsplitError("the analysis has no admissible (spatial) points to validate")
    chosen = set(analysis.candidates) | set(budget_picks)
    chosen |= {p.point for p in analysis.picks.values()}
    if analysis.best:
        chosen.add(analysis.best)
    chosen.add(min(adm, key=lambda p: (p.bytes, -analysis.point_names.index(p.name))).name)
    chosen &= {p.name for p in adm}
    n = min(at_least, len(adm))
    steps = 1
    while len(chosen) < n:
        for i in np.linspace(0, len(adm) - 1, n + steps).round().astype(int):
            chosen.add(adm[i].name)
            if len(chosen) >= n:
                break
        steps += 1
    return [p for p in analysis.point_names if p in chosen]


def budgets(analysis: Analysis, settings: Settings, total_flops: int) -> list[dict]:
    """The budgets of the regret report, each with isplit's pick (the run's selection maximum
    within it)."""
    adm = np.array([p.admissible for p in analysis.points])
    byte_budgets = settings.byte_budgets
    if byte_budgets is None:
        byte_budgets = (int(np.median([p.bytes for p in analysis.points if p.admissible])),)
    out = []
    for share in settings.flop_shares:
        within = np.array([p.head_flops <= share * total_flops for p in analysis.points])
        out.append(
            {
                "budget": f"head FLOPs <= {share:.0%} of the model",
                "kind": "flops",
                "limit": share * total_flops,
                "within": within,
            }
        )
    for b in byte_budgets:
        within = np.array([p.bytes <= b for p in analysis.points])
        out.append(
            {"budget": f"bytes on the link <= {b}", "kind": "bytes", "limit": b, "within": within}
        )
    for b in out:
        pick = best_point(analysis.selection, adm & b["within"])
        b["pick"] = None if pick is None else analysis.points[pick].name
    return out


def choose_points(
    analysis: Analysis,
    graph: ModelGraph,
    points: str | Sequence[str],
    plan: list[dict],
    ratio: int,
) -> tuple[list[str], list[dict]]:
    """The points to validate (``auto``, ``all`` or the user's names, in network order) and
    those left out because a bottleneck of ``ratio`` does not fit them."""
    if points == "auto":
        names = default_points(analysis, [b["pick"] for b in plan if b["pick"]])
    elif points == "all":
        names = [p.name for p in analysis.points if p.admissible]
    else:
        names = list(points)
        unknown = [n for n in names if n not in analysis.point_names]
        if unknown:
            for n in unknown:
                graph.node(n)  # a clear error for a name that is not a valid cut at all
            raise IsplitError(
                f"{', '.join(unknown)} not in the analysis; analyse it with "
                "--points or --granularity all first"
            )
        names = [n for n in analysis.point_names if n in names]
    for n in names:
        layout = analysis.point(n).layout
        if not layout.known:
            raise IsplitError(
                f"{n}: its layout is unknown ({layout.reason}), so the bottleneck's channel axis "
                "is too; a bottleneck cannot go there: validate at another point"
            )
        if not analysis.point(n).spatial:
            raise IsplitError(
                f"{n} is not spatial (one image position, laid out {layout.describe()}): a "
                "bottleneck cannot go there"
            )
    return narrow_points(analysis, names, ratio, chosen=points)


def point_channels(point: SplitPoint) -> int:
    """The channels at ``point``, along its layout's channel axes (several are one dimension)."""
    return math.prod(point.shape[a] for a in point.layout.channels)


def narrow_points(
    analysis: Analysis, names: list[str], ratio: int, chosen: str | Sequence[str]
) -> tuple[list[str], list[dict]]:
    """The points a bottleneck of ``ratio`` fits (at least ``ratio`` channels), and those it
    does not. Points the user named are an error, found before any training; points isplit
    chose (``all``, ``auto``) are left out with a warning."""
    channels = {p.name: point_channels(p) for p in analysis.points if p.name in names}
    narrow = [n for n in names if channels[n] < ratio]
    if not narrow:
        return names, []
    listed = ", ".join(f"{n} ({channels[n]} channels)" for n in narrow)
    if chosen not in ("all", "auto"):
        raise IsplitError(
            f"--ratio {ratio} is larger than the channels at {listed}; use --ratio "
            f"{min(channels[n] for n in narrow)} or less, or leave these points out"
        )
    kept = [n for n in names if n not in narrow]
    if not kept:
        raise IsplitError(f"--ratio {ratio} is larger than the channels at every point ({listed})")
    log.warning("--ratio %d leaves no channel at %s: not validated there", ratio, listed)
    reason = f"fewer channels than --ratio {ratio}"
    return kept, [{"name": n, "channels": channels[n], "reason": reason} for n in narrow]


def warn_not_halved(analysis: Analysis, names: Sequence[str]) -> dict[str, str]:
    """The points of ``names`` where ``--halve`` cannot halve H and W, with the reason; one
    warning names them all (their bottlenecks compress the channels only)."""
    refused = {}
    for n in names:
        point = analysis.point(n)
        why = halve_refusal(map_form(point.shape, point.layout))
        if why is not None:
            refused[n] = why
    if refused:
        listed = "; ".join(f"{n}: {why}" for n, why in refused.items())
        log.warning(
            "--halve cannot halve H and W at %d point(s), whose bottlenecks compress the "
            "channels only (validation.json says which: halved false): %s",
            len(refused),
            listed,
        )
    return refused
