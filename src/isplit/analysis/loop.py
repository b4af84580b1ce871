"""The analysis loop: batches from the data set through ``GradCAM`` into the accumulators,
with checkpoints on the way, resuming, the merge across processes, and the result.

Every process of a distributed run runs this loop on its share of the data (:class:`Job`'s
``shard``); they agree on every error before the first batch and merge their states at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from isplit import checks, distributed
from isplit.analysis import checkpoint
from isplit.analysis.curves import CurveAccumulator, flat_curve_warning
from isplit.analysis.instrumented import instrument
from isplit.analysis.job import Job, dataset_info
from isplit.analysis.picks import held_out_images, select
from isplit.analysis.progress import progress_bar
from isplit.analysis.result import Analysis
from isplit.data import make_loader, to_device
from isplit.data.loaders import uint8_view
from isplit.data.preprocess import Normalise
from isplit.errors import IsplitError
from isplit.graph import ModelGraph, SplitPoint
from isplit.importance import GradCAM, check_labels
from isplit.importance.predictors import PredictorOptions, PredictorSet

log = logging.getLogger("isplit")


class AnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C during an analysis; the message says what was saved and how to resume."""


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients while analysing; the user's ``training`` flags (of
    every submodule), parameter flags, and the device and memory format of its parameters and
    buffers are restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad, p.data) for p in model.parameters()]
    buffers = [(m, dict(m._buffers)) for m in model.modules()]
    model.eval()
    for p, _, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag, data in flags:
            p.data = data
            p.requires_grad_(flag)
        for m, saved in buffers:
            m._buffers.update(saved)
        for m, mode in modes:
            m.training = mode


@dataclass
class _HostBatch:
    """A batch as the loader gave it, with where the run stands after it."""

    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray  # the images' order keys (their position among the analysed images)
    position: int  # images of the data set done after this batch (where a resume starts)
    skipped: list[str]  # unreadable files skipped so far


class _DataWait:
    """An iterator that counts the time its consumer spends waiting for the next item: how
    long the analysis loop waited for the data set rather than for the model."""

    def __init__(self, items: Iterator) -> None:
        self._items, self.seconds = items, 0.0

    def __iter__(self) -> _DataWait:
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - start


def run_timing(ranks: list[dict]) -> dict:
    """The timing of a run on several processes from each one's (:func:`_timing`): the images
    of all, in the time of the slowest (the processes run side by side), and the mean time a
    process waited for data; ``processes`` says how many."""
    seconds = max(t["seconds"] for t in ranks)
    wait = sum(t["data_wait_seconds"] for t in ranks) / len(ranks)
    out = _timing(
        seconds, sum(t["images"] for t in ranks), wait, max(t["setup_seconds"] for t in ranks)
    )
    return {**out, "processes": len(ranks)}


def _timing(seconds: float, images: int, data_wait: float, setup: float) -> dict:
    return {
        "setup_seconds": round(setup, 3),
        "seconds": round(seconds, 3),
        "images": images,
        "images_per_s": round(images / seconds, 1) if seconds > 0 else None,
        "data_wait_seconds": round(data_wait, 3),
        "data_wait_share": round(data_wait / seconds, 3) if seconds > 0 else None,
    }


class _Pending:
    """Per-batch results kept where they were computed (on a GPU: no host sync per batch),
    moved to the host in bulk into the accumulator."""

    def __init__(self) -> None:
        self._batches: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = []

    def add(self, cui: torch.Tensor, preds: torch.Tensor, hb: _HostBatch) -> None:
        self._batches.append((cui, preds, hb.y.numpy().copy(), hb.index))  # not the pinned one

    def flush(self, acc: CurveAccumulator) -> None:
        if not self._batches:
            return
        cui, preds, labels, index = zip(*self._batches)
        acc.add(
            torch.cat(cui).float().cpu().numpy(),
            np.concatenate(labels),
            torch.cat(preds).cpu().numpy(),
            np.concatenate(index),
        )
        self._batches = []


def _host_batches(source, job: Job, position: int) -> Iterator[_HostBatch]:
    """The batches of this process's share still to analyse, from ``position`` (images of the
    share done) on."""
    s, run = job.settings, job.run
    lo, hi = job.shard.start, job.shard.stop
    n_total = hi - lo
    if isinstance(source, DataLoader):  # one process only: the share is the whole data set
        loader = make_loader(source, s.batch_size, skip_bad_images=run.skip_bad_images)
        per_batch = source.batch_size or 1
        skip_batches, offset = position // per_batch, 0  # the user's loader starts over
    else:
        whole = lo == 0 and position == 0 and hi == len(source)
        rest = source if whole else Subset(source, range(lo + position, hi))
        loader = make_loader(
            rest,
            s.batch_size,
            workers=run.workers,
            skip_bad_images=run.skip_bad_images,
            device=run.device,
        )
        per_batch, skip_batches, offset = s.batch_size, 0, position
    seen = lo + position  # order keys of the rows: analysed images, from the resume point on
    for b, (x, y) in enumerate(loader):
        if b < skip_batches:
            continue
        if seen >= hi:
            break
        x, y = x[: hi - seen], y[: hi - seen]  # a DataLoader longer than --limit
        done = min((b + 1) * per_batch + offset, n_total)
        yield _HostBatch(x, y, np.arange(seen, seen + len(y)), done, list(loader.skipped))
        seen += len(y)


@dataclass
class _State:
    """Where a run stands: its accumulators, the images done, the files skipped, the traced and
    instrumented model, and the batches still to come."""

    acc: CurveAccumulator
    preds: PredictorSet
    position: int
    skipped: list[str]
    input_shape: list[int]
    batches: Iterator[_HostBatch]
    graph: ModelGraph
    chosen: list[SplitPoint]
    cam: GradCAM
    prepare: Normalise | None  # turns the loader's 8-bit batches into model inputs


def _start(model: nn.Module, source, job: Job) -> _State:
    """Resume from the checkpoint (if any), take the first batch, trace and instrument the
    model."""
    ckpt, n_total, device = job.checkpoint, len(job.shard), job.run.device
    acc: CurveAccumulator | None = None
    preds: PredictorSet | None = None
    position, skipped, input_shape = 0, [], None
    if ckpt is not None:
        checkpoint.check_other_checkpoints(job.run.checkpoint, ckpt, job.world)
        checkpoint.remove_partial_writes(ckpt)
    prepare = None
    if job.run.uint8 and not isinstance(source, DataLoader):
        source, prepare = uint8_view(source)
    if ckpt is not None and ckpt.exists():
        acc, preds, position, skipped, input_shape = checkpoint.load_checkpoint(
            ckpt, job.fingerprint, job.settings.predictors
        )
        log.warning("resuming the analysis from %s: %d of %d images done", ckpt, position, n_total)
    batches = _host_batches(source, job, position)
    first = next(batches, None)
    if first is not None:
        input_shape = (
            list(first.x.shape[1:]) if prepare is None else prepare.input_shape(first.x.shape)
        )
        batches = itertools.chain([first], batches)
    if input_shape is None:
        raise IsplitError("no images were analysed (all skipped, or the data set is empty)")
    graph, chosen, cam = _instrument(model, input_shape, job)
    if acc is None:
        acc = _new_accumulator(len(chosen), job.class_names, cam, input_shape, device)
    if preds is None:
        preds = PredictorSet(job.settings.predictors, len(chosen), len(acc.counts))
    return _State(acc, preds, position, skipped, input_shape, batches, graph, chosen, cam, prepare)


def run_job(model: nn.Module, data, source, job: Job) -> Analysis:
    """Analyse ``source`` (``data`` limited, or the user's DataLoader) with ``model`` (frozen)."""
    ckpt = job.checkpoint
    # every process resumes and starts (or all stop with the same error)
    try:
        state = distributed.agree(lambda: _start(model, source, job))
    except KeyboardInterrupt:
        earlier = ckpt is not None and ckpt.exists()
        raise AnalysisInterrupted(
            f"interrupted before the first batch; {ckpt} is unchanged: rerun to resume from it"
            if earlier
            else "interrupted before any image was analysed; nothing was saved"
        ) from None
    run = job.run
    channels_last = run.channels_last
    if channels_last is None:
        channels_last = run.device.type == "cuda"
    if channels_last:
        state.cam.module.to(memory_format=torch.channels_last)
    timing = _loop(state, job, channels_last)
    if job.world > 1:  # every process gets every process's curves, in data set order
        timing = run_timing(distributed.all_gather_json(timing))  # the run's, not this rank's
        state.acc, state.preds, state.skipped = checkpoint.gather(
            state.acc, state.preds, state.skipped
        )
    if state.acc.images == 0:
        raise IsplitError("no images were analysed (all skipped, or the data set is empty)")
    result = _result(model, data, job, state, timing)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return result


def _loop(state: _State, job: Job, channels_last: bool) -> dict:
    """Feed every batch still to come to GradCAM and the accumulators, saving the checkpoint
    when due; Ctrl-C saves it and raises :class:`AnalysisInterrupted`. Returns the timing."""
    s, run, cam, acc = job.settings, job.run, state.cam, state.acc
    resumed_skipped = state.skipped

    def checked(items: Iterator[_HostBatch]):
        """Labels are checked on the host, before the copy: no GPU sync for it."""
        for hb in items:
            check_labels(hb.y, len(acc.counts), "the data set's")
            if s.target == "label" and cam.num_classes is not None:
                check_labels(hb.y, cam.num_classes)
            yield hb.x, hb.y, hb

    pending = _Pending()
    last_save, unsaved = time.monotonic(), 0
    bar = progress_bar(len(job.shard), state.position, run.progress and job.rank == 0)
    waited, started, analysed = _DataWait(state.batches), time.perf_counter(), 0
    try:
        for x, y, hb in to_device(checked(waited), run.device, channels_last, state.prepare):
            res = cam(x, y, target=s.target, extras=state.preds.needs)
            pending.add(res.cui, res.logits.argmax(1), hb)
            state.preds.add(res, hb.y.numpy().copy(), hb.index)
            bar.update(len(hb.y))
            state.position, state.skipped = hb.position, resumed_skipped + hb.skipped
            analysed += len(hb.y)
            unsaved += 1
            if run.checkpoint_due(unsaved, time.monotonic() - last_save):
                pending.flush(acc)
                _save(state, job)
                last_save, unsaved = time.monotonic(), 0
    except KeyboardInterrupt:
        pending.flush(acc)
        raise AnalysisInterrupted(_interrupted(state, job)) from None
    finally:
        bar.close()
    pending.flush(acc)  # on a GPU: waits for the last batches' work
    return _timing(time.perf_counter() - started, analysed, waited.seconds, started - job.started)


def _save(state: _State, job: Job) -> None:
    checkpoint.save_checkpoint(
        job.checkpoint,
        state.acc,
        state.preds,
        state.position,
        state.skipped,
        job.fingerprint,
        state.input_shape,
    )


def _interrupted(state: _State, job: Job) -> str:
    """Save what an interrupted analysis has done; the message says what and how to resume."""
    if job.checkpoint is None or state.acc.images == 0:
        return "interrupted before any image was analysed; nothing was saved"
    _save(state, job)
    return (
        f"interrupted: {state.position} of {len(job.shard)} images analysed, saved in "
        f"{job.checkpoint}; rerun the same command to resume from there"
    )


def _result(model: nn.Module, data, job: Job, state: _State, timing: dict) -> Analysis:
    """The :class:`Analysis` of the accumulated curves and predictor states."""
    s, acc, chosen = job.settings, state.acc, state.chosen
    class_names = job.class_names or [str(i) for i in range(len(acc.counts))]
    curve = acc.global_curve()
    values = state.preds.values(PredictorOptions(probe_ratio=s.probe_ratio))
    mask = [p.admissible for p in chosen]
    arrays = acc.arrays()
    chosen_by = select(curve, values, s.select_by, mask, held_out_images(arrays["index"]))
    class_curves = acc.class_curves()
    warning = flat_curve_warning(curve, mask)
    if warning:
        log.warning("%s", warning)
    return Analysis(
        model=job.model_name,
        dataset={**dataset_info(data, class_names), "images": acc.images},
        settings=job.settings_json(state.input_shape, state.graph.auto_leaf_modules, weights=False),
        points=chosen,
        cui=curve,
        per_class={c: class_curves[i] for i, c in enumerate(class_names)},
        per_image=arrays["cui"],
        labels=arrays["labels"],
        predictions=arrays["predictions"],
        candidates=[chosen[i].name for i in chosen_by.candidates],
        best=None if chosen_by.best is None else chosen[chosen_by.best].name,
        skipped_images=state.skipped,
        total_flops=float(state.graph.total_flops),
        total_params=int(sum(p.numel() for p in model.parameters())),
        predictors=values,
        select_by=chosen_by.select_by,
        timing=timing,
        checks=[*_model_checks(arrays, class_names, job), *chosen_by.checks],
    ).when_read(lambda a: _add_weights(a, job))


def _model_checks(arrays: dict, class_names: list[str], job: Job) -> list[checks.Check]:
    """The checks of the model on these images: its accuracy against chance and against the
    one its weights record, its class names against the data set's (recorded in the result's
    ``checks``; the command line prints the failed ones)."""
    labels, predictions = arrays["labels"], arrays["predictions"]
    images = int(len(labels))
    accuracy = float(np.mean(predictions == labels)) if images else float("nan")
    # chance among the classes these images hold (a data set of 3 of the model's 10 classes:
    # always answering one of them scores 1/3)
    present = int(len(np.unique(labels)))
    out = [
        checks.accuracy_vs_chance(accuracy, images, present),
        checks.class_names(job.model_classes, class_names),
    ]
    if job.trained is not None and present < len(class_names):
        out.append(checks.Check("accuracy_vs_recorded", True, {
            "skipped": f"these images hold {present} of the {len(class_names)} classes; the "
            "weights' accuracy was measured on all of them",
            "recorded": job.trained["accuracy"],
        }))  # fmt: skip
    elif job.trained is not None:
        recorded = checks.accuracy_vs_recorded(
            accuracy, images, job.trained["accuracy"], job.trained.get("test_images")
        )
        out += [recorded] if recorded is not None else []
    return out


def _add_weights(analysis: Analysis, job: Job) -> None:
    """The weights' sha256 and the run's fingerprint, into a result that is being saved or whose
    ``settings`` / ``fingerprint`` are read (computing them costs a pass over the weights)."""
    analysis.settings["weights_sha256"] = job.weights.value()
    analysis.fingerprint = job.fingerprint


def _instrument(
    model: nn.Module, input_shape: Sequence[int], job: Job
) -> tuple[ModelGraph, list[SplitPoint], GradCAM]:
    """The model traced for this input shape (or its last trace again), the points chosen and
    restricted, instrumented on the run's device."""
    graph, chosen, cam = instrument(model, input_shape, job.settings, job.model_name)
    return graph, chosen, cam.to(job.run.device)


def _new_accumulator(
    k: int,
    class_names: list[str] | None,
    cam: GradCAM,
    input_shape: Sequence[int],
    device: torch.device,
) -> CurveAccumulator:
    if class_names:
        return CurveAccumulator(k, len(class_names))
    with torch.no_grad():  # unknown classes: as many as the model has outputs
        logits = cam.module(torch.zeros(1, *input_shape, device=device))[0]
    return CurveAccumulator(k, int(logits.shape[1]))
