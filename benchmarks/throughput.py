"""Throughput of isplit's one-pass analysis against its lower bound and the naive algorithm.

For each model (torchvision, ``weights=None``, 10 classes, eval mode, parameters frozen) and one
set of random inputs (``torch.manual_seed``), images per second of:

``bare``
    The lower bound: the original (untraced) torchvision model, ``model(x)``, score = the label
    class's logits summed over the batch, then ``torch.autograd.grad(score, leaf)``. ``leaf`` is
    the output of the module that produces isplit's earliest layer-granularity split point
    (``features.1`` in VGG16, ``relu`` in ResNet-50): a forward hook on that module returns
    ``output.detach().requires_grad_(True)``, so the backward pass stops where isplit's does and,
    with frozen parameters, computes activation gradients only. The hook is registered for the
    timed call and removed afterwards.
``isplit``
    ``GradCAM(graph, [every layer-granularity point])`` called on the same batches (one forward
    and one backward per batch, CUI at every point). Tracing and instrumenting happen once,
    before timing.
``isplit_pipeline``
    ``analyze(model, TensorDataset(x, y), batch_size=...)``: the whole pipeline, including its
    tracing of the model, data loading, accumulators and the curve analysis.
``naive``
    ``isplit.importance.reference.naive_cui`` over the same points on the first
    ``--naive-images`` images: batch 1, the network prefix re-run for every point (as the
    I-SPLIT authors' code did). Its timing includes building the head/tail pair of every point
    (under 2% of it for VGG16).

``cui_rel_diff_vs_naive`` (max |isplit - naive| / max |naive| over the naive images) checks that
the two compute the same values. A point whose layout is unknown (VGG16's ``flatten``: channels
and positions merged into one axis) is NaN in both and left out of it (``nan_points``); NaN in
one and not in the other makes it infinite.

Each method runs once for warm-up, then ``--repeats`` rounds of one run each, the order reversed
in every other round (A B C D, D C B A, ...) so that neither background load nor a run's effect
on the next (caches, the allocator) favours a method. Each ratio (``ratio_to_bare``,
``pipeline_ratio_to_bare``, ``speedup_over_naive``) is the median over the rounds of that
round's ratio of images per second, its lowest and highest in ``ratio_range``: pairing the runs
of one round keeps the ratio meaningful when the machine's speed drifts during the benchmark.
``images_per_s`` and ``seconds_median`` are medians per method (``time.perf_counter``).
Ratios are measured in one run; absolute numbers depend on the machine. On CPU, torch runs with
``--threads`` threads (default 1): on a machine shared with other jobs, several OpenMP threads
per process wait on each other and time small ops at up to 100x their cost, which would make
the batch-1 naive baseline look far slower than it is.

    python benchmarks/throughput.py [--models vgg16 resnet50] [--size 64] [--batch-size 32] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from isplit.analysis import analyze
from isplit.graph import ModelGraph
from isplit.importance import GradCAM
from isplit.importance.reference import naive_cui

TARGETS = {"ratio_to_bare": 0.9, "speedup_over_naive": 10.0}
CLASSES = 10


def build_model(name: str) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None, num_classes=CLASSES).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def bare(model: nn.Module, graph: ModelGraph, batch_size: int) -> Callable:
    """Forward + activation-gradient backward of the untraced model, stopped at the first point."""
    first = graph.node(graph.points[0].name)
    if first.op != "call_module":
        raise SystemExit(f"the first point {graph.points[0].name} is not a module's output")
    module = model.get_submodule(first.target)

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        leaves: list[torch.Tensor] = []

        def hook(_mod, _inp, out):
            leaves.append(out.detach().requires_grad_(True))
            return leaves[-1]

        handle = module.register_forward_hook(hook)
        try:
            for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
                leaves.clear()
                score = model(xb).gather(1, yb[:, None]).sum()
                assert len(leaves) == 1, "the first point's module ran more than once"
                torch.autograd.grad(score, leaves[0])
        finally:
            handle.remove()

    return run


def isplit(graph: ModelGraph, batch_size: int, device: torch.device) -> Callable:
    """isplit's GradCAM at every layer-granularity point, one forward + one backward per batch."""
    cam = GradCAM(graph, [p.name for p in graph.points]).to(device)

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [cam(xb, yb).cui for xb, yb in zip(x.split(batch_size), y.split(batch_size))]
        )

    return run


def pipeline(model: nn.Module, batch_size: int, device: torch.device) -> Callable:
    """The full ``analyze()`` pipeline on an in-memory data set."""

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        analyze(
            model,
            TensorDataset(x, y),
            batch_size=batch_size,
            device=device,
            classes=[str(c) for c in range(CLASSES)],
            workers=0,
            predictors="cui",  # the CUI pass alone (pca-probe, the default, costs more)
        )

    return run


def naive(model: nn.Module, graph: ModelGraph) -> Callable:
    """The naive algorithm: batch 1, network prefix re-run for every point."""
    names = [p.name for p in graph.points]

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return naive_cui(model, x, y, names, graph=graph)

    return run


def rel_diff(fast: torch.Tensor, slow: torch.Tensor) -> tuple[float, int]:
    """(max |fast - slow| / max |slow|, number of points NaN in both) for CUI values [N, K]:
    entries NaN in both are left out; NaN in only one of them makes the difference infinite."""
    nan = fast.isnan()
    nan_points = int((nan & slow.isnan()).all(0).sum())
    if not torch.equal(nan, slow.isnan()):
        return float("inf"), nan_points
    fast, slow = fast[~nan], slow[~nan]
    if not slow.numel():
        return 0.0, nan_points
    return float((fast - slow).abs().max() / slow.abs().max().clamp_min(1e-30)), nan_points


def round_order(names: Sequence[str], r: int) -> list[str]:
    """The order of the runs in round ``r``: ``names`` in even rounds, reversed in odd ones, so
    that neither a drift of the machine's speed nor a run's effect on the next favours one."""
    return list(names) if r % 2 == 0 else list(names)[::-1]


def _timed(fn: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """(seconds, result) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    model = build_model(name).to(device)
    x = torch.randn(args.images, 3, args.size, args.size, device=device)
    y = torch.randint(0, CLASSES, (args.images,), device=device)
    graph = ModelGraph(model, (3, args.size, args.size))
    bs = args.batch_size
    methods = {  # name -> (runner, number of images it is given)
        "bare": (bare(model, graph, bs), args.images),
        "isplit": (isplit(graph, bs, device), args.images),
        "isplit_pipeline": (pipeline(model, bs, device), args.images),
        "naive": (naive(model, graph), args.naive_images),
    }
    for m, (fn, n) in methods.items():  # warm-up: one batch (one image for the naive one)
        k = 1 if m == "naive" else min(n, bs)
        fn(x[:k], y[:k])
    times: dict[str, list[float]] = {m: [] for m in methods}
    out = {}
    for r in range(args.repeats):
        for m in round_order(list(methods), r):
            fn, n = methods[m]
            seconds, out[m] = _timed(fn, x[:n], y[:n], device)
            times[m].append(seconds)
    ips = {m: methods[m][1] / statistics.median(t) for m, t in times.items()}
    rounds = [{m: methods[m][1] / times[m][r] for m in methods} for r in range(args.repeats)]
    ratios = {  # key -> (numerator, denominator), per round
        "ratio_to_bare": ("isplit", "bare"),
        "pipeline_ratio_to_bare": ("isplit_pipeline", "bare"),
        "speedup_over_naive": ("isplit", "naive"),
    }
    paired = {k: [rd[a] / rd[b] for rd in rounds] for k, (a, b) in ratios.items()}
    # Like is compared with like: both algorithms give the same CUI values.
    mismatch, nan_points = rel_diff(out["isplit"][: args.naive_images].double().cpu(), out["naive"])

    result = {
        "images_per_s": {m: round(v, 3) for m, v in ips.items()},
        **{k: round(statistics.median(v), 4) for k, v in paired.items()},
        "ratio_range": {k: [round(min(v), 4), round(max(v), 4)] for k, v in paired.items()},
        "cui_rel_diff_vs_naive": mismatch,
        "nan_points": nan_points,
        "points": len(graph.points),
        "images": args.images,
        "naive_images": args.naive_images,
        "seconds_median": {m: round(statistics.median(t), 4) for m, t in times.items()},
        "seconds": {m: [round(v, 4) for v in t] for m, t in times.items()},  # every round's
    }
    result["targets_met"] = {key: result[key] >= v for key, v in TARGETS.items()}
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["vgg16", "resnet50"],
        help="torchvision model names (default: vgg16 resnet50)",
    )
    p.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument(
        "--images",
        type=int,
        default=64,
        help="images per timed run of bare / isplit / pipeline (default 64)",
    )
    p.add_argument(
        "--naive-images",
        type=int,
        default=4,
        help="images per timed run of the naive algorithm (default 4)",
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="timed runs per method (median; default 5)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable ratios on a shared machine)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    counts = (args.size, args.batch_size, args.images, args.naive_images, args.repeats)
    if min(*counts, args.threads) < 1:
        p.error("sizes, counts, repeats and threads must be positive")
    if args.naive_images > args.images:
        p.error("--naive-images must not exceed --images")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print one JSON object and return it."""
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        models = {name: bench_model(name, args, device) for name in args.models}
    finally:
        torch.set_num_threads(threads)
    report = {
        "models": models,
        "targets": TARGETS,
        "targets_met": all(all(r["targets_met"].values()) for r in models.values()),
        "batch_size": args.batch_size,
        "image_size": args.size,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": args.threads,
        "device": str(device),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
