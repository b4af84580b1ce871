"""Split points: what one valid cut is (:class:`SplitPoint`), which points are admissible,
which points an analysis looks at (:func:`select_points`) and how users narrow the admissible
ones (:func:`restrict`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from isplit.errors import IsplitError, did_you_mean
from isplit.graph.layout import Layout
from isplit.graph.protocols import official_points

if TYPE_CHECKING:
    from isplit.graph.trace import ModelGraph


@dataclass
class SplitPoint:
    """One valid cut, named by the node whose output crosses the link."""

    name: str
    op: str  # what produces the tensor: a module class name or a function/method name
    shape: tuple[int, ...]  # at batch 1
    bytes: int  # size of the transmitted tensor at batch 1 (the CDE baseline)
    head_flops: int  # FLOPs of the head at batch 1 (torch.utils.flop_counter)
    head_params: int  # parameters the head holds
    spatial: bool  # a known layout with more than one image position (see Layout.spatial)
    admissible: bool = True
    layout: Layout | None = None  # which axes hold channels and positions

    def __post_init__(self) -> None:
        if self.layout is None:
            self.layout = Layout.channels_first(self.shape)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["layout"] = self.layout.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> SplitPoint:
        """A point as written; one written before layouts were recorded was analysed as
        N x C x positions, and reads so."""
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["layout"] = Layout.from_json(d["layout"]) if d.get("layout") else None
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def select_points(
    graph: ModelGraph, points: Sequence[str] | None, protocol: str, model_name: str
) -> list[SplitPoint]:
    """The points to analyse, in network order: ``points`` by name, the authors' layers
    (``protocol="official"``) or every point of the graph."""
    if points is None and protocol == "official":
        points = official_points(graph, model_name)
    if points is None:
        return list(graph.points)
    order = {graph.names[n]: i for i, n in enumerate(graph.nodes)}
    chosen = [graph.point(p) for p in points]  # raises for unknown / invalid names
    if len({p.name for p in chosen}) != len(chosen):
        raise IsplitError("a split point is listed twice in --points")
    return sorted(chosen, key=lambda p: order[p.name])


def restrict(
    points: list[SplitPoint],
    *,
    max_bytes: int | None = None,
    max_head_flops: float | None = None,
    first: str | None = None,
    last: str | None = None,
) -> None:
    """Narrow the admissible points in place (spatial points between ``first`` and ``last``
    within the byte and FLOP budgets)."""
    names = [p.name for p in points]
    for flag, bound in (("--first", first), ("--last", last)):
        if bound is not None and bound not in names:
            raise IsplitError(
                f"{flag} '{bound}' is not one of the analysed points{did_you_mean(bound, names)}; "
                "run `isplit points` to list them"
            )
    lo = names.index(first) if first else 0
    hi = names.index(last) if last else len(points) - 1
    for i, p in enumerate(points):
        p.admissible = (
            p.spatial
            and lo <= i <= hi
            and (max_bytes is None or p.bytes <= max_bytes)
            and (max_head_flops is None or p.head_flops <= max_head_flops)
        )


def why_not_admissible(p: SplitPoint) -> str:
    """Why ``p`` is not admissible, in a few words ("" when it is)."""
    if p.admissible:
        return ""
    if not p.layout.known:
        return f"layout unknown: {p.layout.reason}"
    if not p.spatial:
        return "one image position"
    return "outside the range or budget"


def no_admissible_message(points: Sequence[SplitPoint], budget: dict) -> str:
    """What to tell a user whose ``budget`` (:func:`restrict`'s keywords) left none of
    ``points`` admissible."""
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items() if v is not None)
    smallest = min((p for p in points if p.spatial), key=lambda p: p.bytes, default=None)
    cheapest = min((p for p in points if p.spatial), key=lambda p: p.head_flops, default=None)
    hint = (
        ""
        if smallest is None
        else f" (the smallest spatial point sends {smallest.bytes} bytes; the cheapest head "
        f"has {cheapest.head_flops:.3g} FLOPs)"
    )
    return (
        f"no split point is admissible under {given or 'these settings'}{hint}; relax the "
        "budget or choose other --points"
    )
