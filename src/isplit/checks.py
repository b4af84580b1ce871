"""Self-checks: what isplit verifies about its own inputs and results before anyone trusts them.

Every command that computes or reuses a result runs the checks that apply, prints each failed one
as one warning line (what it means, what to do), and records all of them in its output file
under ``checks`` (name, passed, the values compared). A check never changes a result: it says
that the result should not be trusted, and why. The report shows the failed ones on its first
screen.

A check is a plain record (:class:`Check`); the functions below make the ones every command
shares, each from the numbers it compares, so that two commands never word the same check in two
ways."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

#: z of the two-sided 99 % interval: a check flags a gap only beyond it (a false alarm in
#: about one run of a hundred that is right)
Z = 2.576
#: fewer held-out images than this and a held-out predictor cannot rank the points
MIN_HELD_OUT = 30


@dataclass(frozen=True)
class Check:
    """One check: its ``name``, whether it ``passed``, the ``values`` it compared (JSON numbers
    and strings) and, when it failed, a one-line ``message``: what it means, what to do."""

    name: str
    passed: bool
    values: dict = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict:
        out = {"name": self.name, "passed": bool(self.passed), "values": _plain(self.values)}
        if self.message:
            out["message"] = self.message
        return out

    @classmethod
    def from_json(cls, d: dict) -> Check:
        return cls(
            name=str(d["name"]),
            passed=bool(d["passed"]),
            values=dict(d.get("values") or {}),
            message=str(d.get("message", "")),
        )


def to_json(checks: Iterable[Check]) -> list[dict]:
    return [c.to_json() for c in checks]


def from_json(items: Sequence[dict] | None) -> list[Check]:
    return [Check.from_json(d) for d in items or []]


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]


def warn(checks: Iterable[Check], file: TextIO | None = None) -> None:
    """Print every failed check as one ``isplit: warning: ...`` line on stderr."""
    for c in failed(checks):
        print(f"isplit: warning: {c.message}", file=file or sys.stderr)


def interval(p: float, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` measured on ``n`` trials."""
    if n <= 0 or not math.isfinite(p):
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _differ(a: float, n_a: int, b: float, n_b: int | None) -> bool:
    """Whether two accuracies differ beyond sampling: a two-proportion z-test at :data:`Z`
    (``n_b`` None: ``b`` is taken as exact)."""
    var = a * (1 - a) / max(n_a, 1)
    if n_b:
        var += b * (1 - b) / n_b
    # a floor: two accuracies of 1.0 (or 0.0) have no variance, yet 1 image in n may differ
    var = max(var, 0.25 / max(n_a, 1) ** 2)
    return abs(a - b) > Z * math.sqrt(var)


def accuracy_vs_chance(accuracy: float, images: int, classes: int) -> Check:
    """The model's accuracy must be clearly above chance (1 / classes) on these images: at or
    near chance the network is untrained, fed wrongly (preprocessing) or fed other classes, and
    every importance it gives is noise."""
    chance = 1.0 / classes if classes else float("nan")
    values = {"accuracy": accuracy, "images": images, "classes": classes, "chance": chance}
    if not images or not classes or not math.isfinite(accuracy):
        return Check("accuracy_vs_chance", True, {**values, "skipped": "no images"})
    values["interval"] = list(interval(accuracy, images))
    passed = values["interval"][0] > chance
    return Check(
        "accuracy_vs_chance",
        passed,
        values,
        ""
        if passed
        else f"the model's accuracy on these images ({100 * accuracy:.1f} %) is not above chance "
        f"({100 * chance:.1f} % for {classes} classes): this describes an untrained or wrongly "
        "fed network, not yours; check the weights, the classes and the preprocessing "
        "(--mean/--std/--image-size)",
    )


def accuracy_vs_recorded(
    accuracy: float, images: int, recorded: float | None, recorded_images: int | None = None
) -> Check | None:
    """The accuracy measured now against the one the weights file records (``isplit train``'s
    test accuracy): a gap beyond sampling means other data, other preprocessing or other
    classes than the weights were trained for. None when the weights record no accuracy."""
    if recorded is None or not images or not math.isfinite(accuracy):
        return None
    values = {
        "accuracy": accuracy,
        "images": images,
        "recorded": float(recorded),
        "recorded_images": recorded_images,
    }
    passed = not _differ(accuracy, images, float(recorded), recorded_images)
    return Check(
        "accuracy_vs_recorded",
        passed,
        values,
        ""
        if passed
        else f"the model's accuracy here ({100 * accuracy:.1f} % on {images} images) is far from "
        f"the {100 * recorded:.1f} % its weights file records: other data, classes or "
        "preprocessing than it was trained with; check --data, --split and the preprocessing",
    )


def class_names(model_classes: Sequence[str] | None, data_classes: Sequence[str]) -> Check:
    """The class names (and their order) of the weights against the data set's."""
    values = {
        "model_classes": None if model_classes is None else list(model_classes),
        "data_classes": list(data_classes),
    }
    if model_classes is None:
        return Check("class_names", True, {**values, "skipped": "the weights record no classes"})
    passed = list(model_classes) == list(data_classes)
    if passed:
        return Check("class_names", True, values)
    if sorted(model_classes) == sorted(data_classes):
        what = "the same classes in another order"
    else:
        what = (
            f"{len(model_classes)} classes ({', '.join(list(model_classes)[:3])}, ...) against "
            f"the data's {len(data_classes)} ({', '.join(list(data_classes)[:3])}, ...)"
        )
    return Check(
        "class_names",
        False,
        values,
        f"the weights were trained on other classes than the data set holds ({what}): label k "
        "of the data is not output k of the model",
    )


def reused_accuracy(
    what: str,
    analysis_accuracy: float | None,
    analysis_images: int | None,
    measured: float | None,
    measured_images: int | None,
) -> Check | None:
    """An analysis reused by another command (``what``: validate, classes, export, plan, ...)
    against the accuracy that command measures on the unsplit model: a gap beyond sampling
    means the analysis was made on another model, other data or other preprocessing."""
    if analysis_accuracy is None or measured is None or not analysis_images:
        return None
    values = {
        "analysis_accuracy": analysis_accuracy,
        "analysis_images": analysis_images,
        "measured": measured,
        "measured_images": measured_images,
        "command": what,
    }
    passed = not _differ(analysis_accuracy, analysis_images, measured, measured_images)
    return Check(
        "reused_analysis_accuracy",
        passed,
        values,
        ""
        if passed
        else f"the analysis reused here measured {100 * analysis_accuracy:.1f} % accuracy, "
        f"{what} measures {100 * measured:.1f} % on the unsplit model: they were not made on "
        "the same model, data or preprocessing; analyse again with this command's options",
    )


def predictor_usable(
    name: str,
    values: Sequence[float],
    held_out: int | None = None,
    admissible: Sequence[bool] | None = None,
) -> Check:
    """Whether predictor ``name`` can rank the split points: its ``values`` (one per point) are
    finite somewhere among the ``admissible`` ones (default: all), not all the same there
    (flat: max == min over two or more), and, for a predictor scored on held-out images
    (``held_out`` not None), computed on at least :data:`MIN_HELD_OUT` of them. A predictor
    that fails picks nothing: the caller falls back to CUI and says why."""
    v = [float(x) for x in values]
    keep = [True] * len(v) if admissible is None else [bool(a) for a in admissible]
    at = [x for x, ok in zip(v, keep) if ok]
    finite = [x for x in at if math.isfinite(x)]
    out = {
        "predictor": name,
        "admissible_points": len(at),
        "finite_points": len(finite),
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "held_out": held_out,
        "min_held_out": MIN_HELD_OUT if held_out is not None else None,
    }
    if not at:
        return Check("predictor_usable", True, {**out, "skipped": "no admissible point"})
    if held_out is not None and held_out < MIN_HELD_OUT:
        why = (
            f"was scored on {held_out} held-out images, fewer than the {MIN_HELD_OUT} it needs "
            "to rank the points"
        )
        todo = "analyse more images (about a fifth of them are held out)"
    elif not finite:
        why = f"has no finite value at any of the {len(at)} admissible points"
        todo = "check the inputs and their normalisation (--mean/--std), or try --precision fp32"
    elif len(finite) > 1 and max(finite) == min(finite):
        why = f"is {finite[0]:.4g} at every admissible point (flat)"
        todo = "analyse more images, or select by another predictor"
    else:
        return Check("predictor_usable", True, out)
    return Check(
        "predictor_usable",
        False,
        {**out, "reason": why},  # reads after the predictor's name
        f"{name} cannot rank the split points: it {why}, so it picks no split (CUI's pick "
        f"is used); {todo}",
    )


def _plain(v):
    """``v`` as plain JSON: numpy numbers and arrays as Python ones, NaN and inf as None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        v = v.tolist() if hasattr(v, "tolist") else v
        return [_plain(x) for x in v] if isinstance(v, list) else _plain(v)
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return v if isinstance(v, int) or math.isfinite(v) else None
    return str(v)
