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
    """One valid cut, named by the node whose output crosses the link.

    A point is admissible when it is ``spatial`` (its layout is known and has more than one
    image position) and it does not send the image (:attr:`sends_image`); :func:`restrict`
    narrows the admissible points further and :func:`why_not_admissible` says why one is not.
    """

    name: str
    op: str  # what produces the tensor: a module class name or a function/method name
    shape: tuple[int, ...]  # at batch 1
    bytes: int  # size of the transmitted tensor at batch 1 (the CDE baseline)
    head_flops: int  # FLOPs of the head at batch 1 (torch.utils.flop_counter)
    head_params: int  # parameters the head holds
    spatial: bool  # a known layout with more than one image position (see Layout.spatial)
    admissible: bool = True
    layout: Layout | None = None  # which axes hold channels and positions
    #: what crosses here is the image, or a cheap fixed function of it: nothing on the tensor's
    #: way from the input holds parameters or does counted FLOPs (no convolution or matrix
    #: product, even with fixed weights held as buffers): dropout, identity, padding, reshapes
    #: (TNT's unfold into patches), a fixed pooling, a normalisation by constants. Splitting
    #: there is the "send the image" option every split is weighed against, not a split: such
    #: a point is listed, never admissible.
    sends_image: bool = False

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
    within the byte and FLOP budgets; a point that sends the image never is, whatever the
    range)."""
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
            and not p.sends_image
            and lo <= i <= hi
            and (max_bytes is None or p.bytes <= max_bytes)
            and (max_head_flops is None or p.head_flops <= max_head_flops)
        )


def _closed(p: SplitPoint) -> str:
    """What keeps ``p`` from being admissible whatever the range and budget: ``"unknown"`` (its
    layout), ``"one position"`` (a vector, or a grid pooled to one position), ``"image"`` (it
    sends the image: :attr:`SplitPoint.sends_image`), or ``""`` (nothing)."""
    if not p.layout.known:
        return "unknown"
    if not p.spatial:
        return "one position"
    return "image" if p.sends_image else ""


def why_not_admissible(p: SplitPoint) -> str:
    """Why ``p`` is not admissible, in a few words ("" when it is)."""
    if p.admissible:
        return ""
    closed = _closed(p)
    if closed == "unknown":
        return f"layout unknown: {p.layout.reason}"
    if closed == "one position":
        return "one image position"
    if closed == "image":
        return "sends the image: nothing learned computes it (no split)"
    return "outside the range or budget"


def no_admissible_message(points: Sequence[SplitPoint], budget: dict) -> str:
    """What to tell a user when none of ``points`` is admissible under ``budget``
    (:func:`restrict`'s keywords): why none could be, whatever the budget, and what to try; or,
    where the budget (or range) given is what excluded them, what the smallest and cheapest
    candidates need."""
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items() if v is not None)
    candidates = [p for p in points if not _closed(p)]
    if not candidates:
        whatever = f", whatever the budget ({given})" if given else ""
        return f"no split point is admissible{whatever}: {_why_none(points)}"
    smallest = min(candidates, key=lambda p: p.bytes)
    cheapest = min(candidates, key=lambda p: p.head_flops)
    hint = (
        f" (the smallest spatial point sends {smallest.bytes} bytes; the cheapest head "
        f"has {cheapest.head_flops:.3g} FLOPs)"
    )
    relax = "relax the budget or choose" if given else "choose"
    under = given or "these settings"
    return f"no split point is admissible under {under}{hint}; {relax} other --points"


def _why_none(points: Sequence[SplitPoint]) -> str:
    """Why no point of ``points`` can be admissible (each one's layout unknown, one image
    position or the image sent), and what to try."""
    if not points:
        return "the model has no valid cut between its input and its logits"
    closed = [_closed(p) for p in points]
    unknown = [p for p, c in zip(points, closed) if c == "unknown"]
    counts = [
        (len(unknown), "point's layout is", "points' layouts are", "unknown"),
        (closed.count("one position"), "point has", "points have", "one image position"),
        (closed.count("image"), "point sends", "points send", "the image (nothing learned before)"),
    ]
    parts = [
        f"{'every' if n == len(points) else f'{n} of {len(points)}'} "
        f"{one if n == len(points) else many} {what}"
        for n, one, many, what in counts
        if n
    ]
    if unknown:
        parts[0] += f" (first reason: {unknown[0].layout.reason})"
        advice = (
            "keep the module that loses it whole (--leaf-module CLASS), try another "
            "--granularity, or report it as a bug of isplit's layout inference"
        )
    elif closed.count("one position"):
        advice = (
            "the image is pooled to one position before every cut: try --granularity all or "
            "a larger --image-size"
        )
    else:
        advice = "the network computes nothing learned before its last cut"
    return f"{', '.join(parts)}; {advice}"
