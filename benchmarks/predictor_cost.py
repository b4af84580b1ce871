"""Extra cost of the predictors in the analysis pass: ``analyze()`` with and without them.

For each model (a demo network with its packaged weights, or ``--weights``) on the first
``--limit`` images of the Fashion-MNIST test set, the wall time of the whole ``analyze()`` call
with CUI alone and with each predictor set of ``--variants`` (default: each predictor alone, and
all of them). Each variant runs once for warm-up, then ``--repeats`` times, round-robin across
variants (every other round in reverse order) so that background load hits all of them alike.
Reported: the median time, and
``extra[variant]``, the median over rounds of ``time(variant) / time(cui) - 1`` within the
same round (``extra_range``: the smallest and largest; ``runs``: every time). Targets: under 0.5
for the probe, and at most 0.15 for ``pca-probe``, which ``analyze`` computes by default beside
CUI (``default_target_met``). Ratios are measured in one run; absolute numbers depend on the
machine. Run it on an otherwise idle machine: under contention the ratios mean little.

    python benchmarks/predictor_cost.py [--models demo-vgg16 demo-resnet50 demo-mobilenet
        demo-convnext demo-vit] [--limit 10000] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

from isplit.analysis import analyze
from isplit.data import load_dataset
from isplit.models import load_model, resolve_device
from isplit.models.demo import DEMO_MODELS, packaged_weights_path

TARGET_PROBE_EXTRA = 0.5
TARGET_DEFAULT_EXTRA = 0.15  # the default predictors (CUI and pca-probe) over CUI alone
# The demo networks whose weights ship (all five).
MODELS = [n for n in DEMO_MODELS if packaged_weights_path(n).is_file()]
DEFAULT_VARIANTS = ["probe", "taylor", "cam-share", "pca-probe", "probe,taylor,cam-share,pca-probe"]


def _time(run) -> float:
    start = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--weights", default=None, help="weights for every model (default: packaged)")
    p.add_argument("--limit", type=int, default=10_000, help="images analysed per run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    report: dict = {
        "limit": args.limit,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "target_probe_extra": TARGET_PROBE_EXTRA,
        "target_default_extra": TARGET_DEFAULT_EXTRA,
        "models": {},
    }
    for name in args.models:
        loaded = load_model(name, args.weights)
        data = load_dataset("fashion-mnist", "test", loaded.preprocess, root=args.data_root)
        variants = ["cui", *args.variants]
        times: dict[str, list[float]] = {v: [] for v in variants}

        def run(variant: str, loaded=loaded, data=data) -> None:
            analyze(
                loaded,
                data,
                limit=args.limit,
                batch_size=args.batch_size,
                device=device,
                predictors=variant,  # "cui": CUI alone
            )

        for v in variants:  # warm-up
            run(v)
        for r in range(args.repeats):
            # every other round in reverse order: a drift of the machine's speed within a
            # round favours no variant over the rounds
            for v in variants if r % 2 == 0 else variants[::-1]:
                times[v].append(_time(lambda v=v: run(v)))
        median = {v: statistics.median(t) for v, t in times.items()}
        # each round's ratio to CUI alone in the same round: slow drifts of the machine's
        # speed cancel, and the median of the ratios is the figure
        paired = {v: [t / c for t, c in zip(times[v], times["cui"])] for v in args.variants}
        report["models"][name] = {
            "seconds": median,
            "runs": times,
            "extra": {v: statistics.median(r) - 1 for v, r in paired.items()},
            "extra_range": {v: [min(r) - 1, max(r) - 1] for v, r in paired.items()},
        }
        extra = report["models"][name]["extra"]
        if "probe" in args.variants:
            report["models"][name]["probe_target_met"] = extra["probe"] < TARGET_PROBE_EXTRA
        if "pca-probe" in args.variants:
            met = extra["pca-probe"] <= TARGET_DEFAULT_EXTRA
            report["models"][name]["default_target_met"] = met
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
