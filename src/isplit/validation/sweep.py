"""Validation: cut the network for real at a set of points, train a bottleneck there, measure test
accuracy, and say how well CUI (and cheaper or simpler signals) predicted it.

For every point: head (frozen) -> encoder -> decoder -> tail (frozen, or trained with
``finetune="tail"``). The head's outputs for the training and test images are computed once per
point (:mod:`~isplit.validation.cache`) and reused for every epoch
(:mod:`~isplit.validation.train`). Each finished point is written to its own file, so that an
interrupted sweep resumes and torchrun shares the points out
(:mod:`~isplit.validation.distribute`); its trained bottleneck (and fine-tuned tail) goes beside
it, with the settings that made it in the header, for ``isplit export --bottleneck``. The main
process scores the predictors (:mod:`~isplit.validation.result`) and writes the report.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from isplit import checks, distributed
from isplit.analysis import Analysis
from isplit.data import limit_dataset
from isplit.errors import IsplitError
from isplit.graph import ModelGraph
from isplit.models import weights_fingerprint
from isplit.validation.bottleneck import Bottleneck, save_bottleneck
from isplit.validation.cache import head_outputs, stream
from isplit.validation.distribute import bottleneck_file, read_results, validate_shared
from isplit.validation.points import budgets, choose_points, warn_not_halved
from isplit.validation.probe import linear_probe
from isplit.validation.reliability import chance_accuracy
from isplit.validation.result import Measured, ValidationReport, build_report
from isplit.validation.settings import Settings
from isplit.validation.train import correct, train_bottleneck

log = logging.getLogger("isplit")

#: Beside the point files: head outputs too large for memory, memory-mapped while a point trains.
CACHE = "cache"


@dataclass
class Images:
    """The sweep's training and test sets, streamed through each point's head (never all held
    in memory), and the unsplit model's logits on the training set (for distillation)."""

    train: Dataset
    test: Dataset
    teacher: torch.Tensor | None


@dataclass
class _Sweep:
    """What every point of one sweep shares."""

    graph: ModelGraph
    analysis: Analysis
    settings: Settings
    device: torch.device
    out: Path
    saved: dict  # the header of every saved bottleneck: model, weights, fingerprint, settings
    progress: bool


def validate(
    model: nn.Module,
    analysis: Analysis,
    train_data: Dataset,
    test_data: Dataset,
    out: str | Path,
    *,
    points: str | Sequence[str] = "auto",
    settings: Settings | None = None,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Run the bottleneck sweep and the prediction report at ``points`` (``auto``: isplit's
    choice, ``all``: every admissible point, or names); writes ``validation.json`` into
    ``out`` (``isplit validate`` draws ``validation.png`` beside it) and returns the report.

    In a torch.distributed process group (torchrun), the points still to validate are shared
    out among the processes, each training on its own device; rank 0 writes the report, and
    every process returns it."""
    from isplit.models import resolve_device

    settings = settings or Settings()
    settings.check()
    device = distributed.local_device(resolve_device(device))
    model_name = model_name or analysis.model
    out = Path(out)
    graph = _graph(model, analysis, model_name)
    plan = budgets(analysis, settings, graph.total_flops)
    names, skipped = choose_points(analysis, graph, points, plan, settings.ratio)
    if settings.halve:
        warn_not_halved(analysis, names)
    train = limit_dataset(train_data, settings.train_limit, settings.seed)
    test = limit_dataset(test_data, settings.test_limit, settings.seed)
    if len(train) == 0 or len(test) == 0:
        raise IsplitError("the training set or the test set for validation is empty")
    fingerprint = settings.fingerprint() + ":" + model_name
    saved = {
        "model": model_name,
        "weights_sha256": weights_fingerprint(model),
        "fingerprint": fingerprint,
        "settings": settings.to_json(),
    }
    sweep = _Sweep(
        graph, analysis, settings, device, out, saved, progress and distributed.is_main()
    )
    model.to(device)

    def validate_points(mine: list[str]) -> Iterator[tuple[str, dict]]:
        teacher = None
        if settings.distill > 0:
            teacher, _ = stream(model, train, device, settings.batch_size, **loading(settings))
        images = Images(train, test, teacher)
        for name in mine:
            yield name, _validate_point(sweep, name, images)

    validate_shared(out, names, fingerprint, validate_points)
    if distributed.is_main():
        logits, y_test = stream(model, test, device, settings.batch_size, **loading(settings))
        unsplit_correct = logits.argmax(1) == y_test
    distributed.barrier()  # every point is written
    if distributed.is_main():
        chance = chance_accuracy(y_test.numpy())
        measured = Measured(read_results(out, names), unsplit_correct, chance, len(train), skipped)
        report = build_report(analysis, measured, plan, settings, model_name, graph.total_flops)
        if not report.reliable:
            reason = report.reliability["reason"]
            log.warning("the validation statistics are not reliable: %s", reason)
        checks.warn(report.failed_checks())
        report.save(out)
    distributed.barrier()  # the report is written
    return report if distributed.is_main() else ValidationReport.load(out)


def loading(settings: Settings) -> dict:
    """How every loader of the sweep reads the images: the user's ``--workers`` and
    ``--skip-bad-images``."""
    return {"workers": settings.workers, "skip_bad_images": settings.skip_bad_images}


def _graph(model: nn.Module, analysis: Analysis, model_name: str) -> ModelGraph:
    """The frozen model's graph, every valid cut, checked against the analysis."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    input_shape = tuple(analysis.settings.get("input_shape") or [])
    if not input_shape:
        raise IsplitError("the analysis folder does not record its input shape; rerun analyze")
    graph = ModelGraph(model, input_shape, "all", analysis.leaf_modules)
    _check_analysis(analysis, graph, model, model_name)
    return graph


def _check_analysis(
    analysis: Analysis, graph: ModelGraph, model: nn.Module, model_name: str
) -> None:
    if analysis.model != model_name:
        raise IsplitError(
            f"the analysis folder was made for {analysis.model}, not {model_name}; analyse "
            "this model first or pass the matching --analysis folder"
        )
    want = analysis.settings.get("weights_sha256")
    if want and weights_fingerprint(model) != want:
        raise IsplitError(
            f"the analysis folder was made with other weights of {model_name} (weights "
            f"{analysis.settings.get('weights')}, seed {analysis.settings.get('seed')}); pass "
            "the run's --weights and --seed, or leave --model/--weights out to use the run's"
        )
    names = set(graph.all_cuts)
    for p in analysis.points:
        if p.name not in names or tuple(graph.point(p.name).shape) != tuple(p.shape):
            raise IsplitError(
                f"the analysis folder was made for {analysis.model}, not {model_name} (its "
                f"point {p.name} {list(p.shape)} does not exist in this model); analyse this "
                "model first or pass the matching --analysis folder"
            )


def _validate_point(sweep: _Sweep, name: str, images: Images) -> dict:
    """Train and measure the bottleneck at point ``name``: the point's file's contents."""
    settings, device = sweep.settings, sweep.device
    point = sweep.analysis.point(name)
    head, tail = sweep.graph.split(name)
    head.to(device)
    if settings.finetune == "tail":
        tail = copy.deepcopy(tail)
    tail.to(device)
    started = time.monotonic()
    (z_train, y_train), (z_test, y_test) = (
        head_outputs(
            head,
            ds,
            device,
            settings.batch_size,
            point.shape[1:],
            sweep.out / CACHE,
            f"{name}-{t}",
            **loading(settings),
        )  # fmt: skip
        for t, ds in (("train", images.train), ("test", images.test))
    )
    probe = linear_probe(z_train, y_train, z_test, y_test, settings.seed, point.layout)
    torch.manual_seed(settings.training_seed)
    bottleneck = Bottleneck(point.shape, settings.ratio, settings.halve, point.layout).to(device)
    losses = train_bottleneck(
        tail, bottleneck, z_train, y_train, settings, device, images.teacher, sweep.progress, name
    )
    right = correct(tail, bottleneck, z_test, y_test, settings.batch_size, device)
    right_int8 = correct(tail, bottleneck, z_test, y_test, settings.batch_size, device, True)
    finetuned = tail if settings.finetune == "tail" else None
    header = {**sweep.saved, "point": name}
    save_bottleneck(bottleneck, bottleneck_file(sweep.out, name), header, finetuned)
    return {
        "name": name,
        "fingerprint": sweep.saved["fingerprint"],
        "accuracy": float(right.mean()),
        "correct": "".join("1" if c else "0" for c in right),
        "accuracy_int8": float(right_int8.mean()),
        "probe_accuracy": probe,
        "halved": bottleneck.halve,
        "not_halved": bottleneck.not_halved,
        "encoded_shape": list(bottleneck.code_shape),
        "encoded_bytes": bottleneck.encoded_bytes,
        "encoded_bytes_int8": bottleneck.encoded_bytes_int8,
        "losses": losses,
        "train_seconds": time.monotonic() - started,
    }
