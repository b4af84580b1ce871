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
    from isplit.classes import classes_report, plot_classes
    from isplit.io import atomic_write_json

    analysis = Analysis.load(args.run)
    subset = None if args.classes is None else [c.strip() for c in args.classes.split(",")]
    if subset is not None:
        subset = [c for c in subset if c]
    budget = {"max_bytes": args.max_bytes, "max_head_flops": args.max_head_flops}
    report = classes_report(analysis, subset, **budget)
    out = Path(args.out or args.run)
    if args.validate:
        report["validation"] = _validate_subset(args, analysis, report, out)
    atomic_write_json(out / "classes.json", report)
    plot_classes(analysis, report, out / "classes.png")
    print(f"{'class':<24}{'images':>7}  {'best split':<22}{'shift':>6}  candidates")
    for c, v in report["per_class"].items():
        print(
            f"{c:<24}{v['images']:>7}  {str(v['best']):<22}{_signed(v['shift']):>6}  "
            f"{', '.join(v['candidates'])}"
        )
    pulling = ", ".join(report["pulling"][:3])
    print(
        "classes pulling the split furthest: "
        + (pulling or "none (every class's best split is the global one)")
    )
    if report["most_different"]:
        a, b = report["most_different"]["classes"]
        print(f"most different curves: {a} and {b}")
    print("groups of alike curves: " + "; ".join(", ".join(g) for g in report["groups"]))
    label = "all classes" if subset is None else ", ".join(report["subset"])
    print(
        f"subset ({label}; {report['images']} images): best split {report['best']}, "
        f"global best {report['global_best']} (shift {_signed(report['shift'])} points); "
        f"candidates: {', '.join(report['candidates'])}"
    )
    if "validation" in report:
        v = report["validation"]
        print(
            f"on the subset's images: accuracy at the subset's best {v['subset_best']}: "
            f"{v['subset_best_accuracy']:.4f}, at the global best {v['global_best']}: "
            f"{v['global_best_accuracy']:.4f}"
        )
    print(f"wrote {out / 'classes.json'}, {out / 'classes.png'}")
    return 0


def _signed(v) -> str:
    return "n/a" if v is None else f"{v:+d}"


def _validate_subset(args, analysis, report, out: Path) -> dict:
    """Retrain the bottleneck at the subset's best and at the global best on the subset only."""
    import numpy as np

    from isplit.data import SubsetDataset, load_dataset
    from isplit.validation import Settings, validate

    loaded = analysis.load_model()
    pp = loaded.preprocess
    names = report["subset"]

    def only_subset(split: str):
        root = args.data_root or analysis.dataset.get("root")
        ds = load_dataset(analysis.dataset["name"], split, pp, root=root)
        keep = [ds.classes.index(c) for c in names if c in ds.classes]
        return SubsetDataset(ds, np.flatnonzero(np.isin(ds.targets, keep)))

    points = sorted({report["best"], report["global_best"]}, key=report["points"].index)
    settings = Settings(
        epochs=args.epochs,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        batch_size=args.batch_size,
    )
    result = validate(
        loaded.model,
        analysis,
        only_subset(args.train_split),
        only_subset(analysis.dataset["split"]),
        out / "classes-validation",
        points=points,
        settings=settings,
        device=args.device,
        model_name=loaded.name,
        progress=not args.quiet,
    )
    acc = {p["name"]: p["accuracy"] for p in result["points"]}
    return {
        "subset_best": report["best"],
        "global_best": report["global_best"],
        "subset_best_accuracy": acc[report["best"]],
        "global_best_accuracy": acc[report["global_best"]],
        "subset_best_wins": acc[report["best"]] >= acc[report["global_best"]],
        "settings": result["settings"],
    }
