"""`isplit classes`: the best split for a subset of classes, per-class best splits and groups
of classes with alike curves, from a saved run."""

from __future__ import annotations

import argparse
from pathlib import Path

from isplit.cli.options import (
    add_device_arg,
    add_limit_args,
    add_quiet_arg,
    count,
    non_negative,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classes",
        help="the best split for a subset of classes, per-class best "
        "splits, and groups of classes with alike curves (from a saved run)",
    )
    p.add_argument("run", help="an analysis run folder")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.add_argument(
        "--max-bytes",
        type=count,
        default=None,
        help="admissible points send at most this many bytes (batch 1; default: no limit)",
    )
    p.add_argument(
        "--max-head-flops",
        type=non_negative,
        default=None,
        help="admissible points have at most this many head FLOPs (batch 1; default: no limit)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="retrain the bottleneck at the "
        "subset's best and the global best split on the subset's images",
    )
    p.add_argument("--train-split", default="train", help="data split to train the bottlenecks on")
    p.add_argument(
        "--data-root",
        default=None,
        help="where the run's data set is (default: where the analysis found it)",
    )
    p.add_argument("--epochs", type=int, default=4, help="training epochs of each bottleneck")
    add_limit_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    add_device_arg(p, "auto")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.analysis import Analysis
    from isplit.classes import classes_report, validate_subset
    from isplit.report.outputs import save_classes
    from isplit.runfolder import RunFolder
    from isplit.validation import Settings

    analysis = Analysis.load(args.run)
    subset = None if args.classes is None else [c.strip() for c in args.classes.split(",")]
    if subset is not None:
        subset = [c for c in subset if c]
    budget = {"max_bytes": args.max_bytes, "max_head_flops": args.max_head_flops}
    report = classes_report(analysis, subset, **budget)
    out = Path(args.out or args.run)
    if args.validate:
        settings = Settings(
            epochs=args.epochs,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
            batch_size=args.batch_size,
        )
        validate_subset(
            analysis,
            report,
            out,
            settings,
            train_split=args.train_split,
            data_root=args.data_root,
            device=args.device,
            progress=not args.quiet,
        )
    save_classes(report, analysis, out)
    print(report.table())
    print(f"wrote {RunFolder(out).classes}, {RunFolder(out) / RunFolder.CLASSES_PNG}")
    return 0
