"""Checkpoints of an analysis (the accumulated curves and predictor states, where the run
stands, saved atomically and resumed from) and the merge of the states of several processes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from isplit import distributed
from isplit.analysis.curves import CurveAccumulator
from isplit.errors import IsplitError
from isplit.importance.predictors import PredictorSet
from isplit.io import atomic_write_npz
from isplit.runfolder import upgrade_checkpoint


def save_checkpoint(
    path: Path,
    acc: CurveAccumulator,
    preds: PredictorSet | None,
    position: int,
    skipped: list[str],
    fingerprint: str,
    input_shape: list[int] | None,
) -> None:
    """Save the accumulated state atomically: where the run stands (``position`` images done,
    the files skipped), the fingerprint it belongs to, and the arrays of ``acc`` and ``preds``."""
    meta = {
        "position": position,
        "skipped": skipped,
        "fingerprint": fingerprint,
        "input_shape": input_shape,
    }
    more = preds.state() if preds is not None else {}
    atomic_write_npz(path, meta=np.array(json.dumps(meta)), **acc.state(), **more)


def gather(
    acc: CurveAccumulator, preds: PredictorSet, skipped: list[str]
) -> tuple[CurveAccumulator, PredictorSet, list[str]]:
    """Merge the accumulators, predictor states (and skipped files) of all processes: sums and
    counts add up, per-image rows keep their data set order."""
    mine = {**acc.state(), **preds.state(), "skipped": np.array(skipped, dtype=str)}
    parts = distributed.all_gather_arrays(mine)
    merged, merged_preds = from_state(parts[0], preds.names)
    for part in parts[1:]:
        a, p = from_state(part, preds.names)
        merged.merge(a)
        merged_preds.merge(p)
    return merged, merged_preds, [str(f) for part in parts for f in part["skipped"]]


def from_state(
    state: dict[str, np.ndarray], predictors: Sequence[str]
) -> tuple[CurveAccumulator, PredictorSet]:
    """The accumulator and predictor states held in a checkpoint's (or a shard's) arrays."""
    acc = CurveAccumulator.from_state(
        {k: v for k, v in state.items() if not k.startswith("predictor/") and k != "skipped"}
    )
    preds = PredictorSet.from_state(predictors, acc.sums.shape[1], len(acc.counts), state)
    return acc, preds


def check_other_checkpoints(base: Path, mine: Path, world: int) -> None:
    """Checkpoints of the same run folder made with another number of processes cannot be
    resumed by this one: say so instead of starting afresh beside them."""
    others = [base] if base != mine and base.exists() else []
    pattern = f"{base.stem}-rank*-of-*{base.suffix}"
    suffix = f"-of-{world}{base.suffix}"
    others += [p for p in base.parent.glob(pattern) if world == 1 or not p.name.endswith(suffix)]
    if not others:
        return
    counts = sorted({int(p.stem.rsplit("-of-", 1)[1]) if "-of-" in p.stem else 1 for p in others})
    k = counts[0]
    raise IsplitError(
        f"{base.parent} holds checkpoints of an analysis on {k} process(es) "
        f"({', '.join(sorted(p.name for p in others))}); rerun it with --nproc {k} to resume, "
        "or delete them to start afresh"
    )


def remove_partial_writes(path: Path) -> None:
    """Delete temporary files that a run killed while writing its checkpoint left behind."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def load_checkpoint(
    path: Path, fingerprint: str, predictors: Sequence[str]
) -> tuple[CurveAccumulator, PredictorSet, int, list[str], list[int] | None]:
    """The accumulator, predictor states, position, skipped files and input shape saved in
    ``path``; an error when it belongs to another analysis than ``fingerprint``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = upgrade_checkpoint({k: npz[k] for k in npz.files})
        meta = json.loads(str(state.pop("meta")))
    except (OSError, ValueError, KeyError) as e:
        raise IsplitError(
            f"cannot read the checkpoint {path} ({e}); delete it to start the analysis afresh"
        ) from None
    if meta.get("fingerprint") != fingerprint:
        raise IsplitError(
            f"{path} holds a checkpoint of a different analysis (other model or weights, "
            "data or settings); rerun with the same ones to resume, or delete it or use another "
            "--out to start afresh"
        )
    acc, preds = from_state(state, predictors)
    return acc, preds, int(meta["position"]), list(meta["skipped"]), meta.get("input_shape")
