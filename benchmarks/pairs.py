"""The interleaved-pairs check of ``isplit.analyze`` against the bare pass on the CPU: for each
model (torchvision, random weights, 10 classes), ``--pairs`` times in turn one bare forward +
activation-gradient backward pass over the images (``throughput.bare``) and one whole
``analyze()`` call on the same images as a ``TensorDataset`` (``throughput.pipeline``: tracing,
set-up and results included), the bare pass first in even pairs and ``analyze()`` first in odd
ones; prints one JSON object with the per-pair ratios (bare seconds / analyze seconds), their
median and quartiles, the figures the README's "Speed" quotes.

    python benchmarks/pairs.py [--models vgg16 resnet50] [--images 128] [--pairs 7]

Run it from another checkout (``PYTHONPATH=OTHER/src``) to compare versions of isplit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py beside this file

import isplit  # noqa: E402
from isplit.graph import ModelGraph  # noqa: E402
from throughput import CLASSES, bare, build_model, pipeline, round_order  # noqa: E402


def pairs(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = build_model(name)
    x = torch.randn(args.images, 3, args.size, args.size)
    y = torch.randint(0, CLASSES, (args.images,))
    graph = ModelGraph(model, (3, args.size, args.size))
    runs = {"bare": bare(model, graph, args.batch_size)}
    runs["analyze"] = pipeline(model, args.batch_size, torch.device("cpu"))
    for run in runs.values():  # warm-up
        run(x[: args.batch_size], y[: args.batch_size])
    ratios, seconds = [], {k: [] for k in runs}
    for i in range(args.pairs):
        for key in round_order(list(runs), i):  # bare first in even pairs, analyze in odd
            start = time.perf_counter()
            runs[key](x, y)
            seconds[key].append(time.perf_counter() - start)
        ratios.append(seconds["bare"][-1] / seconds["analyze"][-1])
    return {
        "median_ratio": round(statistics.median(ratios), 4),
        "quartiles": [round(q, 4) for q in statistics.quantiles(ratios, n=4)]
        if len(ratios) > 1
        else None,
        "ratios": [round(r, 4) for r in ratios],
        "median_seconds": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {
        "isplit": str(Path(isplit.__file__).resolve().parents[1]),
        "images": args.images,
        "size": args.size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "models": {name: pairs(name, args) for name in args.models},
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
