"""What a plan knows about each point besides its latency: its score and, for an exported point,
the bytes its export really sends.

The score is the best the run has (``score="best"``):

1. ``validated``: the accuracy that ``isplit validate`` measured at the point with its trained
   bottleneck (its 8-bit accuracy when the plan sends 8-bit tensors), where the run folder holds a
   ``validation.json``. A validated point's row is then the split *with* that bottleneck (its
   code's bytes, its encoder's and decoder's compute: :attr:`Scores.bottleneck`); the points
   not validated keep their plain split, their accuracy not measured (no score);
2. else the predictor the run selected its best split by (``select_by`` in ``curves.json``: the
   probe, ...);
3. else CUI itself (the selection curve of a default run).

Not splitting ("all on the device", "all on the server") loses nothing: it has the unsplit
network's accuracy where the score is an accuracy, and ranks above every split point whatever
the score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isplit.analysis import Analysis
from isplit.checks import Check
from isplit.errors import IsplitError
from isplit.importance.registry import PREDICTORS
from isplit.runfolder import RunFolder

BEST, VALIDATED = "best", "validated"


@dataclass(frozen=True)
class Scores:
    """The score of each scored point, the score of not splitting (None where the scale has
    none, as CUI), a short label for tables and the sentence that says where they come from."""

    source: str  # validated, cui or a predictor's name
    label: str
    description: str
    values: dict[str, float]
    unsplit: float | None
    #: the validated bottleneck's ``ratio`` and ``halve`` (the validation's settings): a
    #: validated point's score is the split's with it; None: the scores are of the plain split
    bottleneck: dict | None = None
    #: the admissible points without a score that the plan keeps, their accuracy not measured
    unscored: list[str] = field(default_factory=list)
    #: what the scores' source says about itself (bottlenecks that did not learn)
    checks: list[Check] = field(default_factory=list)


def plan_scores(analysis: Analysis, run: Path, score: str, quantize: bool) -> Scores:
    """The scores of ``analysis``'s admissible points: ``best``, ``validated``, ``cui`` or a
    predictor the run computed (see the module docstring)."""
    folder = RunFolder(run)
    chosen = "as asked"
    if score == BEST:
        score = VALIDATED if folder.validation.is_file() else analysis.select_by
        chosen = "the best this run has"
    if score == VALIDATED:
        return _validated(analysis, folder, quantize, chosen)
    choices = ", ".join([BEST, VALIDATED, *analysis.predictor_names])
    if score not in PREDICTORS:
        raise IsplitError(f"--score {score!r} is not a score: use one of {choices}")
    if score not in analysis.predictor_names:
        raise IsplitError(
            f"--score {score} needs a run analysed with the {score} predictor; {run} has "
            f"{', '.join(analysis.predictor_names)} (--score can be {choices}): rerun "
            f"`isplit analyze --predictors {score} --out {run}`, or use --score best"
        )
    values = analysis.curve(score)
    scored = {
        p.name: float(v) for p, v in zip(analysis.points, values) if p.admissible and np.isfinite(v)
    }
    label = "CUI" if score == "cui" else score
    validated = "" if folder.validation.is_file() else f"no {folder.VALIDATION}; "
    by = "it" if score == analysis.select_by else analysis.label(analysis.select_by)
    what = (
        f"{analysis.label(score)} ({chosen}: {validated}the run selects its best split by "
        f"{by}; not splitting ranks first, it loses nothing)"
    )
    return Scores(score, label, what, scored, None)


def _validated(analysis: Analysis, folder: RunFolder, quantize: bool, chosen: str) -> Scores:
    if not folder.validation.is_file():
        raise IsplitError(
            f"--score validated needs a validated run; {folder.root} has no {folder.VALIDATION}: "
            f"run `isplit validate --analysis {folder.root}` first, or use --score best"
        )
    doc = folder.read(RunFolder.VALIDATION, "validation")
    admissible = [p.name for p in analysis.points if p.admissible]
    key = "accuracy_int8" if quantize else "accuracy"
    scored, rows = {}, {}
    for p in doc.get("points", []):
        value = p.get(key) if p.get(key) is not None else p.get("accuracy")
        if p.get("name") in admissible and value is not None:
            scored[p["name"]] = float(value)
            rows[p["name"]] = p
    unsplit = doc.get("unsplit_accuracy")
    unscored = [n for n in admissible if n not in scored]
    bits = "8-bit " if quantize else ""
    what = (
        f"validated accuracy ({chosen}: {folder.VALIDATION}'s {bits}accuracy at "
        f"{len(scored)} validated point(s), each row the split with its trained bottleneck (its "
        f"code's bytes, its encoder and decoder in the times), the unsplit network's when not "
        f"splitting; the {len(unscored)} point(s) not validated: the plain split, accuracy not "
        "measured)"
    )
    settings = doc.get("settings") or {}
    bottleneck = {"ratio": int(settings.get("ratio", 8)), "halve": bool(settings.get("halve"))}
    chance = (doc.get("reliability") or {}).get("chance_accuracy")
    check = learned_check(rows, scored, unsplit, chance)
    return Scores(VALIDATED, "accuracy", what, scored, None if unsplit is None else float(unsplit),
                  bottleneck, unscored, [check])  # fmt: skip


def learned_check(
    rows: dict[str, dict], scored: dict[str, float], unsplit: float | None, chance: float | None
) -> Check:
    """Whether the validated bottlenecks learned: ``validation.json`` marks those whose
    accuracy is near chance or far below the unsplit network's (``learned``; a file from before
    that mark: judged here, as `isplit validate` does)."""
    from isplit.validation.reliability import not_learned

    failed = {}
    for name, row in rows.items():
        if "learned" in row:
            why = None if row["learned"] else row.get("not_learned_reason") or "marked so"
        elif unsplit is not None and chance is not None and math.isfinite(chance):
            why = not_learned(scored[name], float(unsplit), float(chance))
        else:
            why = None
        if why is not None:
            failed[name] = why
    values = {"validated": len(rows), "not_learned": failed, "unsplit_accuracy": unsplit}
    if not failed:
        return Check("bottlenecks_learned", True, values)
    names = ", ".join(failed)
    return Check(
        "bottlenecks_learned",
        False,
        values,
        f"the bottleneck did not learn at {len(failed)} of {len(rows)} validated point(s) "
        f"({names}): their accuracy in this plan reflects too little training, not the split; "
        "validate them again with more --epochs or --train-limit before choosing by it",
    )


@dataclass(frozen=True)
class Exported:
    """An exported point: what crosses the link and the export it comes from."""

    folder: str
    shape: tuple[int, ...]
    bottleneck: bool


def exported_points(
    exports: Sequence[str | Path], analysis: Analysis, scores: Scores
) -> dict[str, Exported]:
    """The point of each export folder (``isplit export --out``) of the run's network, with the
    shape of the tensor it sends (a bottleneck's code where it has one); each must be at a
    point with a score."""
    from isplit.deploy.manifest import Manifest

    out: dict[str, Exported] = {}
    admissible = {p.name for p in analysis.points if p.admissible}
    for folder in exports:
        m = Manifest.load(folder)
        ours = analysis.settings.get("weights_sha256")
        theirs = m.model.get("weights_sha256")
        if m.model.get("model") != analysis.model or (ours and theirs and ours != theirs):
            raise IsplitError(
                f"export {folder} is of {m.model.get('model')!r}, not of this run's network "
                f"{analysis.model!r} with the same weights: pass an export of this run"
            )
        if m.point not in admissible:
            raise IsplitError(
                f"export {folder} is at {m.point!r}, not an admissible point of this run: "
                "pass an export at one of the run's points"
            )
        if m.point not in scores.values:
            raise IsplitError(
                f"export {folder} is at {m.point}, which has no {scores.source} score: "
                f"validate it (`isplit validate --points {m.point}`), or pass another --score"
            )
        if scores.bottleneck is not None and m.bottleneck is None:
            raise IsplitError(
                f"export {folder} sends the plain tensor at {m.point}, but the plan's accuracy "
                "there is the validated one, with its trained bottleneck: export it with "
                "`isplit export --bottleneck RUN_DIR`, or plan with another --score"
            )
        out[m.point] = Exported(str(folder), tuple(m.transmitted_shape), m.bottleneck is not None)
    return out
