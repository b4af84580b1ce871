"""Validation: cut the network for real at a set of points, train a bottleneck there, measure test
accuracy, and say how well CUI (and cheaper or simpler signals) predicted it.

For every point: head (frozen) -> encoder -> decoder -> tail (frozen, or trained with
``finetune="tail"``). The head's outputs for the training and test images are computed once per
point, streaming the data sets through the head (the images themselves are never all held in
memory), and reused for every epoch. Each finished point is written to
``validation_points/<name>.json`` in the output folder, so an interrupted sweep resumes at the
first unfinished point; its trained bottleneck (and fine-tuned tail) goes beside it as
``validation_points/<name>.safetensors``, with the settings that made it in the header, for
``isplit export --bottleneck``. Under torchrun the points are shared out among the processes
(each trains on its own device); rank 0 writes ``validation.json`` from the per-point files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from isplit.analysis import Analysis
from isplit.analysis.curves import best_point
from isplit.data import limit_dataset, make_loader
from isplit.errors import IsplitError
from isplit.graph import ModelGraph
from isplit.io import atomic_write_json, read_json
from isplit.models import weights_fingerprint
from isplit.validation.bottleneck import Bottleneck, save_bottleneck
from isplit.validation.stats import (
    linear_calibration,
    loo_linear,
    predict_accuracy,
    prediction_mae,
    rank_correlations,
    regret,
    spearman_versus,
)

log = logging.getLogger("isplit")

MEMMAP_BYTES = 2 * 1024**3  # cached head outputs larger than this go to disk
#: Predictors scored beside those the analysis computed (``cui`` and
#: :mod:`isplit.importance.predictors`): the baselines minus output bytes and depth (the
#: point's position in the analysis), and a logistic-regression probe fitted here on the
#: training images at each validated point.
BASELINES = ("bytes", "depth", "logistic-probe")
#: Combinations of cheap signals, fitted here: a linear model of accuracy on these features
#: (log10 CUI, log2 output bytes, depth, the analysis probe), leave-one-out over the validated
#: points, whose prediction for each point is that point's score.
COMBINATIONS = {
    "combo": ("cui", "bytes", "depth"),
    "combo-probe": ("cui", "bytes", "depth", "probe"),
}
#: Predictors whose value is itself an accuracy (their raw error as a prediction is reported).
ACCURACY_VALUED = ("probe", "logistic-probe")
#: A bottleneck did not learn when its accuracy is within this of chance (absolute) ...
CHANCE_MARGIN = 0.05
#: ... or when it keeps less than this share of the unsplit model's margin over chance.
MIN_KEPT_MARGIN = 0.5


@dataclass
class Settings:
    ratio: int = 8
    halve: bool = False
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    finetune: str = "none"  # or "tail"
    distill: float = 0.0  # weight of the distillation loss (KL to the unsplit model's logits)
    recon: float = 1.0  # weight of the reconstruction loss (MSE / mean square of the activation)
    train_limit: int | None = 8000
    test_limit: int | None = 5000
    seed: int = 0
    k: int = 3
    n_boot: int = 1000
    flop_shares: tuple[float, ...] = (0.25, 0.5)
    byte_budgets: tuple[int, ...] | None = None  # default: the median bytes of admissible points

    def fingerprint(self) -> str:
        keys = (
            "ratio",
            "halve",
            "epochs",
            "batch_size",
            "lr",
            "finetune",
            "distill",
            "recon",
            "train_limit",
            "test_limit",
            "seed",
        )
        return hashlib.sha256(json.dumps({k: getattr(self, k) for k in keys}).encode()).hexdigest()[
            :16
        ]


@dataclass
class Images:
    """The sweep's training and test sets, streamed through each point's head (never all held
    in memory), and the unsplit model's logits on the training set (for distillation)."""

    train: Dataset
    test: Dataset
    teacher: torch.Tensor | None


def default_points(analysis: Analysis, budget_picks: Sequence[str], at_least: int = 8) -> list[str]:
    """Candidates, the best split, the smallest-CDE point, the budget picks, and evenly spaced
    admissible points until there are at least ``at_least``; in network order."""
    adm = [p for p in analysis.points if p.admissible]
    if not adm:
        raise IsplitError("the analysis has no admissible (spatial) points to validate")
    chosen = set(analysis.candidates) | set(budget_picks)
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
    """The budgets of the regret report, each with isplit's pick (CUI maximum within it)."""
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


def chance_accuracy(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent test class (1 / classes when the
    classes are balanced): what a classifier that learned nothing reaches."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def not_learned(accuracy: float, unsplit: float, chance: float) -> str | None:
    """Why the bottleneck at a point did not learn, or None when it did: its accuracy is within
    ``CHANCE_MARGIN`` of chance, or it keeps less than ``MIN_KEPT_MARGIN`` of the unsplit
    model's margin over chance (e.g. below 0.50 with chance 0.10 and the unsplit model at
    0.90). Such a point's accuracy says more about too little training than about the split."""
    if accuracy <= chance + CHANCE_MARGIN:
        return f"accuracy {accuracy:.3f} is within {CHANCE_MARGIN:.2f} of chance ({chance:.3f})"
    if unsplit > chance and accuracy - chance < MIN_KEPT_MARGIN * (unsplit - chance):
        return (
            f"accuracy {accuracy:.3f} keeps less than {MIN_KEPT_MARGIN:.0%} of the unsplit "
            f"model's margin over chance ({unsplit:.3f} vs chance {chance:.3f})"
        )
    return None


def _reliability(points: list[dict], unsplit: float, chance: float) -> dict:
    """Whether the correlations, predictions and regrets rest on bottlenecks that learned."""
    failed = [p["name"] for p in points if not p["learned"]]
    reason = None
    if unsplit <= chance + CHANCE_MARGIN:
        reason = (
            f"the unsplit model itself is at chance on these images (accuracy {unsplit:.3f}, "
            f"chance {chance:.3f}): no split can be told from another; fit the model to the data "
            "first (`isplit train`)"
        )
    elif failed:
        reason = (
            f"the bottleneck did not learn at {len(failed)} of {len(points)} point(s) "
            f"({', '.join(failed)}): their accuracies reflect too little training rather than "
            "the split; train longer (--epochs, --train-limit) before trusting the statistics"
        )
    return {
        "reliable": reason is None,
        "reason": reason,
        "not_learned": failed,
        "chance_accuracy": chance,
        "thresholds": {"chance_margin": CHANCE_MARGIN, "min_kept_margin": MIN_KEPT_MARGIN},
    }


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


def _stream(
    module: nn.Module, ds: Dataset, device, batch_size: int, out=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``module`` over the data set, batch by batch as the loader decodes it, without
    gradients: its outputs (written into ``out``, a preallocated tensor or memory-mapped array,
    when given) and the labels."""
    chunks, labels, i = [], [], 0
    with torch.no_grad():
        for x, y in make_loader(ds, batch_size):
            r = module(x.to(device))
            if isinstance(r, tuple):
                raise IsplitError(
                    "this cut carries small values beside the tensor (e.g. a batch size read "
                    "at the top of forward); validating such cuts is not supported yet"
                )
            if out is None:
                chunks.append(r.cpu())
            elif isinstance(out, np.ndarray):
                out[i : i + len(r)] = r.cpu().numpy()
            else:
                out[i : i + len(r)] = r.cpu()
            labels.append(y)
            i += len(r)
    if not labels:
        raise IsplitError("the training or test set for validation is empty")
    if out is None:
        return torch.cat(chunks), torch.cat(labels)
    return (torch.from_numpy(out) if isinstance(out, np.ndarray) else out), torch.cat(labels)


def _cache(
    head, ds, device, batch_size, shape, folder: Path, tag: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's outputs on every image of ``ds`` (in memory, or memory-mapped in ``folder``
    above ``MEMMAP_BYTES``), and the labels."""
    n = len(ds)
    if 4 * n * math.prod(shape) <= MEMMAP_BYTES:
        return _stream(head, ds, device, batch_size, torch.empty((n, *shape)))
    folder.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(
        folder / f"{tag}.npy", mode="w+", dtype=np.float32, shape=(n, *shape)
    )
    return _stream(head, ds, device, batch_size, mm)


def linear_probe(z_train, y_train, z_test, y_test, seed: int = 0) -> float:
    """Accuracy of a logistic-regression probe on globally average-pooled activations."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def pool(z):
        return z.flatten(2).mean(2).numpy() if z.dim() > 2 else z.numpy()

    scaler = StandardScaler().fit(pool(z_train))
    clf = LogisticRegression(max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        # lbfgs may stop at max_iter on nearly separable points; the probe is a baseline and
        # its accuracy after 300 iterations is what is reported: one log line, not sklearn's
        # multi-line warning per point
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(pool(z_train)), y_train.numpy())
    if (np.asarray(clf.n_iter_) >= clf.max_iter).any():
        log.info("the logistic probe stopped at %d iterations before converging", clf.max_iter)
    return float(clf.score(scaler.transform(pool(z_test)), y_test.numpy()))


def train_bottleneck(
    tail: nn.Module,
    bottleneck: Bottleneck,
    z: torch.Tensor,
    y: torch.Tensor,
    settings: Settings,
    device,
    teacher: torch.Tensor | None = None,
    progress: bool = False,
    desc: str = "",
) -> list[float]:
    """Train the bottleneck (and the tail with finetune="tail") on cached head outputs ``z``.
    Returns the mean loss of each epoch."""
    params = list(bottleneck.parameters())
    if settings.finetune == "tail":
        for p in tail.parameters():
            p.requires_grad_(True)
        params += [p for p in tail.parameters()]
        tail.train()
    else:
        tail.eval()
    opt = torch.optim.Adam(params, lr=settings.lr)
    steps = settings.epochs * math.ceil(len(z) / settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(settings.seed)
    scale = float(z[: 4 * settings.batch_size].float().pow(2).mean()) or 1.0
    losses = []
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not progress or not sys.stderr.isatty())
    bottleneck.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(z), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(z), settings.batch_size):
            idx = order[i : i + settings.batch_size]
            if len(idx) < 2:  # batch norm needs two
                continue
            zb = z[idx].to(device)
            decoded = bottleneck(zb)
            logits = tail(decoded)
            loss = F.cross_entropy(logits, y[idx].to(device))
            if settings.recon > 0:
                loss = loss + settings.recon * F.mse_loss(decoded, zb) / scale
            if teacher is not None and settings.distill > 0:
                soft = F.log_softmax(teacher[idx].to(device), 1)
                loss = loss + settings.distill * F.kl_div(
                    F.log_softmax(logits, 1), soft, log_target=True, reduction="batchmean"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
        losses.append(total / max(count, 1))
    bar.close()
    bottleneck.eval()
    tail.eval()
    return losses


def _point_file(out: Path, name: str, suffix: str = ".json") -> Path:
    return out / "validation_points" / f"{name.replace('/', '_')}{suffix}"


def bottleneck_file(run: str | Path, name: str) -> Path:
    """Where a validation run keeps the trained bottleneck of point ``name``."""
    return _point_file(Path(run), name, ".safetensors")


def validate(
    model: nn.Module,
    analysis: Analysis,
    train_data,
    test_data,
    out: str | Path,
    *,
    points: str | Sequence[str] = "auto",
    settings: Settings | None = None,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    progress: bool = False,
) -> dict:
    """Run the bottleneck sweep and the prediction report; writes ``validation.json`` and
    ``validation.png`` into ``out`` and returns the report.

    In a torch.distributed process group (torchrun), the points still to validate are shared
    out among the processes, each training on its own device; rank 0 writes the report, and
    every process returns it."""
    from isplit import distributed
    from isplit.models import resolve_device

    settings = settings or Settings()
    if settings.finetune not in ("none", "tail"):
        raise IsplitError(f"--finetune must be none or tail, not {settings.finetune!r}")
    if settings.epochs < 1:
        raise IsplitError("--epochs must be at least 1")
    device = distributed.local_device(resolve_device(device))
    model_name = model_name or analysis.model
    out = Path(out)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    input_shape = tuple(analysis.settings.get("input_shape") or [])
    if not input_shape:
        raise IsplitError("the analysis folder does not record its input shape; rerun analyze")
    graph = ModelGraph(model, input_shape, granularity="all")
    _check_analysis(analysis, graph, model, model_name)
    total_flops = graph.total_flops
    plan = budgets(analysis, settings, total_flops)
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
        if not analysis.points[analysis.point_names.index(n)].spatial:
            raise IsplitError(f"{n} is not spatial (C x H x W): a bottleneck cannot go there")
    names, skipped = _narrow_points(analysis, names, settings.ratio, chosen=points)

    for flag, value in (
        ("--train-limit", settings.train_limit),
        ("--test-limit", settings.test_limit),
    ):
        if value is not None and value < 1:
            raise IsplitError(f"{flag} must be at least 1, not {value}")
    train = limit_dataset(train_data, settings.train_limit, settings.seed)
    test = limit_dataset(test_data, settings.test_limit, settings.seed)
    if len(train) == 0 or len(test) == 0:
        raise IsplitError("the training set or the test set for validation is empty")
    fingerprint = settings.fingerprint() + ":" + model_name
    saved = {
        "model": model_name,
        "weights_sha256": weights_fingerprint(model),
        "fingerprint": fingerprint,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
    }
    done = _finished_points(out, names, fingerprint)
    distributed.barrier()  # every process has seen the same finished points
    todo = [n for n in names if n not in done]
    mine = todo[distributed.rank() :: distributed.world_size()]
    model.to(device)

    def validate_mine() -> None:
        if not mine:
            return
        teacher = None
        if settings.distill > 0:
            teacher, _ = _stream(model, train, device, settings.batch_size)
        images = Images(train, test, teacher)
        shown = progress and distributed.is_main()
        for name in mine:
            result = _validate_point(
                graph, analysis, name, images, settings, device, out, saved, shown
            )
            atomic_write_json(_point_file(out, name), result)

    distributed.agree(validate_mine)  # a mistake found by one process stops them all
    if distributed.is_main():
        logits, y_test = _stream(model, test, device, settings.batch_size)
        unsplit_correct = logits.argmax(1) == y_test
    distributed.barrier()  # every point is written
    if distributed.is_main():
        results = [read_json(_point_file(out, n)) for n in names]
        report = _report(
            analysis,
            results,
            unsplit_correct,
            plan,
            settings,
            model_name,
            total_flops,
            len(train),
            chance_accuracy(y_test.numpy()),
        )
        report["skipped_points"] = skipped  # chosen points the bottleneck does not fit
        if not report["reliability"]["reliable"]:
            reason = report["reliability"]["reason"]
            log.warning("the validation statistics are not reliable: %s", reason)
        atomic_write_json(out / "validation.json", report)
        from isplit.report.figures import plot_validation

        plot_validation(analysis, report, out / "validation.png")
    distributed.barrier()  # the report is written
    return report if distributed.is_main() else read_json(out / "validation.json")


def _narrow_points(
    analysis: Analysis, names: list[str], ratio: int, chosen
) -> tuple[list[str], list[dict]]:
    """The points a bottleneck of ``ratio`` fits (at least ``ratio`` channels), and those it
    does not. Points the user named are an error, found before any training; points isplit
    chose (``all``, ``auto``) are left out with a warning."""
    channels = {p.name: int(p.shape[-3]) for p in analysis.points if p.name in names}
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


def _finished_points(out: Path, names: Sequence[str], fingerprint: str) -> set[str]:
    """The points whose validation is already in ``out`` (made with these settings)."""
    done = set()
    for name in names:
        file = _point_file(out, name)
        if not file.exists():
            continue
        if read_json(file).get("fingerprint") != fingerprint:
            raise IsplitError(
                f"{file} was made with other validation settings or another "
                "model; use another output folder or delete validation_points/"
            )
        log.info("validation of %s already done (%s)", name, file)
        done.add(name)
    return done


def _validate_point(
    graph, analysis, name, images: Images, settings, device, out, saved: dict, progress
) -> dict:
    point = analysis.points[analysis.point_names.index(name)]
    head, tail = graph.split(name)
    head.to(device)
    if settings.finetune == "tail":
        tail = copy.deepcopy(tail)
    tail.to(device)
    started = time.monotonic()
    (z_train, y_train), (z_test, y_test) = (
        _cache(head, ds, device, settings.batch_size, point.shape[1:], out / "cache", f"{name}-{t}")
        for t, ds in (("train", images.train), ("test", images.test))
    )
    probe = linear_probe(z_train, y_train, z_test, y_test, settings.seed)
    torch.manual_seed(settings.seed)
    bottleneck = Bottleneck(point.shape, settings.ratio, settings.halve).to(device)
    losses = train_bottleneck(
        tail, bottleneck, z_train, y_train, settings, device, images.teacher, progress, desc=name
    )
    correct = _correct(tail, bottleneck, z_test, y_test, settings.batch_size, device)
    correct_int8 = _correct(tail, bottleneck, z_test, y_test, settings.batch_size, device, True)
    finetuned = tail if settings.finetune == "tail" else None
    save_bottleneck(bottleneck, bottleneck_file(out, name), {**saved, "point": name}, finetuned)
    return {
        "name": name,
        "fingerprint": saved["fingerprint"],
        "accuracy": float(correct.mean()),
        "correct": "".join("1" if c else "0" for c in correct),
        "accuracy_int8": float(correct_int8.mean()),
        "probe_accuracy": probe,
        "encoded_shape": list(bottleneck.code_shape),
        "encoded_bytes": bottleneck.encoded_bytes,
        "encoded_bytes_int8": bottleneck.encoded_bytes_int8,
        "losses": losses,
        "train_seconds": time.monotonic() - started,
    }


def _correct(tail, bottleneck, z, y, batch_size, device, int8: bool = False) -> np.ndarray:
    """Which test images the split network classifies right; ``int8``: with the code quantised
    as it would cross the link (per image, 8-bit affine)."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(z), batch_size):
            code = bottleneck.encoder(z[i : i + batch_size].to(device))
            if int8:
                code = bottleneck.quantise(code)
            preds.append(tail(bottleneck.decoder(code)).argmax(1).cpu())
    return (torch.cat(preds) == y).numpy()


def _report(
    analysis, results, unsplit_correct, plan, settings, model_name, total_flops, n_train, chance
) -> dict:
    unsplit = float(unsplit_correct.float().mean())
    order = analysis.point_names
    idx = [order.index(r["name"]) for r in results]
    acc = np.array([r["accuracy"] for r in results])
    correct = np.array([[c == "1" for c in r["correct"]] for r in results])
    predictors = _scores(analysis, idx, results)
    predictors.update(_combinations(predictors, acc))
    points = []
    for r, i in zip(results, idx):
        p = analysis.points[i]
        why = not_learned(r["accuracy"], unsplit, chance)
        points.append(
            {
                "name": r["name"],
                "cui": float(analysis.cui[i]),
                "bytes": p.bytes,
                "head_flops": p.head_flops,
                "encoded_shape": r["encoded_shape"],
                "encoded_bytes": r["encoded_bytes"],
                "encoded_bytes_int8": r["encoded_bytes_int8"],
                "accuracy": r["accuracy"],
                "accuracy_drop": unsplit - r["accuracy"],
                "accuracy_int8": r.get("accuracy_int8"),
                "probe_accuracy": r["probe_accuracy"],
                "train_seconds": r["train_seconds"],
                "final_loss": r["losses"][-1] if r["losses"] else None,
                "learned": why is None,
                "not_learned_reason": why,
                "scores": {k: _num(v[len(points)]) for k, v in predictors.items()},
            }
        )
    reliability = _reliability(points, unsplit, chance)
    correlation = {
        k: rank_correlations(v, correct, settings.n_boot, seed=settings.seed)
        for k, v in predictors.items()
    }
    versus_depth = spearman_versus(
        predictors, "depth", correct, settings.n_boot, seed=settings.seed
    )
    prediction = {
        k: prediction_mae(v, acc, settings.k, seed=settings.seed) for k, v in predictors.items()
    }
    validated = {r["name"] for r in results}
    regrets = []
    for b in plan:
        within = np.array([b["within"][i] for i in idx])
        pick = b["pick"]
        choice = [r["name"] for r in results].index(pick) if pick in validated else None
        entry = {
            "budget": b["budget"],
            "kind": b["kind"],
            "limit": b["limit"],
            "pick": pick,
            "validated_within": int(within.sum()),
            **regret(acc, within, choice),
            # the validated points within the budget all learned (and the unsplit model did)
            "reliable": bool(
                reliability["reason"] is None
                or (
                    unsplit > chance + CHANCE_MARGIN
                    and within.any()
                    and all(points[j]["learned"] for j in np.flatnonzero(within))
                )
            ),
        }
        # every predictor's pick under the same budget, for comparison
        entry["regret_by"] = {k: _regret_of_pick(acc, within, v) for k, v in predictors.items()}
        entry["pick_by"] = {
            k: _pick(within, v, [r["name"] for r in results]) for k, v in predictors.items()
        }
        for label, key in (
            ("smallest_bytes", "bytes"),
            ("deepest", "depth"),
            ("best_probe", "logistic-probe"),
        ):
            entry[f"regret_{label}"] = entry["regret_by"][key]
        regrets.append(entry)
    calibration = _calibration(analysis, predictors, acc, settings)
    return {
        "model": model_name,
        "analysis": {"dataset": analysis.dataset.get("name"), "settings": analysis.settings},
        "settings": {
            **{k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "train_images": n_train,
            "test_images": int(len(unsplit_correct)),
        },
        "unsplit_accuracy": unsplit,
        "reliability": reliability,
        "total_flops": total_flops,
        "points": points,
        "correlation": correlation,
        # each predictor's Spearman minus depth's, paired over the same bootstrap resamples
        "versus_depth": versus_depth,
        "prediction": {"k": settings.k, "mae": prediction},
        "calibration": calibration,
        "best_predictor": _best_predictor(correlation, calibration),
        "regret": regrets,
    }


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _scores(analysis: Analysis, idx: list[int], results: list[dict]) -> dict[str, np.ndarray]:
    """Every predictor's score at the validated points (higher: more accuracy expected): those
    the analysis computed, then the baselines."""
    out = {
        name: np.asarray(analysis.curve(name), dtype=float)[idx]
        for name in analysis.predictor_names
    }
    out["bytes"] = -np.array([analysis.points[i].bytes for i in idx], dtype=float)
    out["depth"] = np.array(idx, dtype=float)
    out["logistic-probe"] = np.array([r["probe_accuracy"] for r in results])
    return out


def _everywhere(analysis: Analysis, name: str) -> np.ndarray | None:
    """A predictor's score at every analysed point, where it has one without retraining."""
    if name in analysis.predictor_names:
        return np.asarray(analysis.curve(name), dtype=float)
    if name == "bytes":
        return -np.array([p.bytes for p in analysis.points], dtype=float)
    if name == "depth":
        return np.arange(len(analysis.points), dtype=float)
    return None


def _feature(name: str, score: np.ndarray) -> np.ndarray:
    """The scale on which a predictor relates linearly to accuracy, if anywhere: log10 for CUI
    (it spans orders of magnitude), minus log2 for the output bytes, the score itself else."""
    score = np.asarray(score, dtype=float)
    if name == "cui":
        return np.log10(np.maximum(score, 1e-30))
    if name == "bytes":
        return -np.log2(-score)
    return score


def _combinations(scores: dict[str, np.ndarray], acc: np.ndarray) -> dict[str, np.ndarray]:
    """The leave-one-out predictions of each combination whose parts were all scored."""
    out = {}
    for name, parts in COMBINATIONS.items():
        if all(p in scores and np.isfinite(scores[p]).all() for p in parts):
            features = np.stack([_feature(p, scores[p]) for p in parts], 1)
            predicted = loo_linear(features, acc)
            if predicted is not None:
                out[name] = predicted
    return out


def _calibration(analysis: Analysis, scores: dict, acc: np.ndarray, settings: Settings) -> dict:
    """Each predictor mapped to post-split accuracy (a line on its :func:`_feature`) and the
    error of that absolute prediction; the predicted accuracy with a 95 % interval at every
    admissible analysed point where the predictor has a value; and, for predictors that are
    accuracies themselves, the error of taking them as the prediction unchanged."""
    adm = [i for i, p in enumerate(analysis.points) if p.admissible]
    out = {}
    for name, score in scores.items():
        if name in COMBINATIONS:  # already a prediction of accuracy, leave-one-out
            out[name] = {"points": len(acc), "loo_mae": float(np.abs(score - acc).mean())}
            continue
        x = _feature(name, score)
        entry = linear_calibration(x, acc, settings.k, seed=settings.seed)
        values = _everywhere(analysis, name)
        predicted = (
            None if values is None else predict_accuracy(x, acc, _feature(name, values[adm]))
        )
        if predicted is not None:
            entry["predicted"] = {
                analysis.points[i].name: [float(v) for v in row] for i, row in zip(adm, predicted)
            }
        if name in ACCURACY_VALUED:
            entry["raw_mae"] = float(np.abs(acc - score).mean())
            entry["raw_bias"] = float((acc - score).mean())
        out[name] = entry
    return out


def _best_predictor(correlation: dict, calibration: dict) -> dict:
    """The predictor with the highest Spearman correlation, and the one with the lowest
    leave-one-out error of its predicted accuracy, over the validated points."""
    rho = {k: c["spearman"] for k, c in correlation.items() if c["spearman"] is not None}
    mae = {k: c["loo_mae"] for k, c in calibration.items() if c.get("loo_mae") is not None}
    return {
        "by_spearman": max(rho, key=rho.get) if rho else None,
        "by_loo_mae": min(mae, key=mae.get) if mae else None,
    }


def _pick(within: np.ndarray, score: np.ndarray, names: list[str]) -> str | None:
    ok = within & np.isfinite(score)
    return names[int(np.flatnonzero(ok)[np.argmax(score[ok])])] if ok.any() else None


def _regret_of_pick(acc: np.ndarray, within: np.ndarray, score: np.ndarray) -> float | None:
    """The regret of the point ``score`` ranks highest among the validated points within."""
    ok = within & np.isfinite(score)
    if not ok.any():
        return None
    return regret(acc, within, int(np.flatnonzero(ok)[np.argmax(score[ok])]))["regret"]
