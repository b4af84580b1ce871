"""Command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from isplit.errors import IsplitError, PeerFailed


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="torchvision name, demo-vgg16, demo-resnet50, "
        "or package.module:factory (default: demo-vgg16)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name (IMAGENET1K_V1, "
        "DEFAULT), a .pth/.safetensors state dict, or 'none' for random init",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random initialisation (weights 'none'; layers a weights file does "
        "not cover) and of the command's own sampling and training (default: 0)",
    )
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean")
    p.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std")


def _add_data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="fashion-mnist, digits, an image folder "
        "(one sub-folder per class; Tiny-ImageNet layout too), or torchvision:NAME "
        "(default: fashion-mnist)",
    )
    p.add_argument("--split", default=split, help=f"data split (default: {split})")
    p.add_argument("--data-root", default=None, help="where the data set files are")
    p.add_argument("--download", action="store_true", help="allow downloading the data set")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable image files with a warning instead of stopping",
    )
    p.add_argument("--workers", type=int, default=None, help="data loader worker processes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """How an analysis is carried out (analyze, and validate's analysis)."""
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save checkpoint.npz in the output folder after every N batches "
        "(default: every 60 s); a rerun of the same command resumes from it",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="the network's forward pass in this type (torch.autocast; fp16: CUDA only); "
        "CUI is computed in float32 either way (default: fp32)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="K",
        help="run on K processes (one per GPU on CUDA, at most one per core on a CPU) through "
        "torchrun; the same as `torchrun --nproc-per-node K -m isplit ...`",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from isplit.train import train

    result = train(
        model=args.model or "demo-vgg16",
        weights=args.weights,
        data=args.data or "fashion-mnist",
        split=args.split,
        data_root=args.data_root,
        download=args.download,
        epochs=args.epochs,
        out=args.out,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        augment=args.augment,
        device=args.device,
        limit=args.limit,
        workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        image_size=args.image_size,
        mean=args.mean,
        std=args.std,
        progress=not args.quiet,
        test_split=args.test_split,
    )
    print(result.summary())
    return 0


def _load(args: argparse.Namespace):
    from isplit.models import load_model

    return load_model(
        args.model,
        args.weights,
        image_size=args.image_size,
        mean=args.mean,
        std=args.std,
        seed=args.seed,
    )


def _analyse_and_save(args: argparse.Namespace, loaded, data, out: Path, **options):
    """Run ``analyze`` with the data and run options of the command line, save into ``out``."""
    from isplit.analysis import analyze
    from isplit.distributed import is_main

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IsplitError(
            f"cannot create the output folder {out} ({e}); choose another --out"
        ) from None
    try:
        result = _analyze_into(args, loaded, data, out, analyze, options)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another process may have removed it
                out.rmdir()  # nothing was saved: leave no empty run folder behind
        raise
    if is_main():  # one process writes the outputs of a distributed run
        result.save(out)
    return result


def _analyze_into(args, loaded, data, out: Path, analyze, options):
    return analyze(
        loaded,
        data,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        model_name=loaded.name,
        workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.quiet,
        checkpoint=out / "checkpoint.npz",
        checkpoint_every=args.checkpoint_every,
        precision=args.precision,
        **options,
    )


def _check_output_folder(out: Path) -> None:
    """A clear error before any work when ``out`` cannot be written (nothing is created)."""
    if out.exists() and not out.is_dir():
        raise IsplitError(f"the output folder {out} is a file; choose another --out")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise IsplitError(f"cannot create the output folder {out}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise IsplitError(f"cannot write to {parent} (permission denied); choose another --out")


def _cmd_analyze(args: argparse.Namespace) -> int:
    from isplit.data import load_dataset
    from isplit.distributed import is_main

    _check_output_folder(Path(args.out))
    loaded = _load(args)
    data = load_dataset(
        args.data or "fashion-mnist",
        args.split,
        loaded.preprocess,
        root=args.data_root,
        download=args.download,
    )
    if (
        is_main()
        and loaded.classes
        and len(loaded.classes) == len(data.classes)
        and list(loaded.classes) != list(data.classes)
    ):
        print(
            f"isplit: note: the model's class names differ from the data set's; "
            f"using the data set's ({', '.join(data.classes[:3])}, ...)",
            file=sys.stderr,
        )
    out = Path(args.out)
    result = _analyse_and_save(
        args,
        loaded,
        data,
        out,
        points=args.points.split(",") if args.points else None,
        target=args.target,
        reduction=args.reduction,
        protocol=args.protocol,
        granularity=args.granularity,
        max_bytes=args.max_bytes,
        max_head_flops=args.max_head_flops,
        first=args.first,
        last=args.last,
    )
    if not is_main():
        return 0
    if not args.quiet:
        print(result.table())
    if result.skipped_images:
        print(f"isplit: skipped {len(result.skipped_images)} unreadable image(s)", file=sys.stderr)
    print(f"model accuracy on the analysed images: {result.accuracy:.4f}")
    n_data = len(data.classes)
    if loaded.num_classes > n_data and result.accuracy < 2.0 / n_data:
        print(
            f"isplit: note: the model has {loaded.num_classes} outputs but the data set "
            f"{n_data} classes, so its labels cannot be the model's classes and the accuracy "
            "is not meaningful; differentiate the predicted class instead (--target "
            "predicted) or fit the model to these classes first (`isplit train`)",
            file=sys.stderr,
        )
    print(result.recommendation())
    print(f"wrote {out / 'curves.json'}, {out / 'per_image.npz'}, {out / 'curves.png'}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from isplit.analysis import Analysis
    from isplit.data import load_dataset
    from isplit.distributed import is_main
    from isplit.validate import Settings, validate

    _check_output_folder(Path(args.out or args.analysis or "runs/validation"))
    analysis = Analysis.load(args.analysis) if args.analysis else None
    if analysis is not None and args.model is None and args.weights is None:
        loaded = analysis.load_model()  # the network the run analysed
    else:
        loaded = _load(args)
    data = args.data or "fashion-mnist"
    kw = {"root": args.data_root, "download": args.download}
    test = load_dataset(data, args.split, loaded.preprocess, **kw)
    train = load_dataset(data, args.train_split, loaded.preprocess, **kw)
    if analysis is not None:
        out = Path(args.out or args.analysis)
    else:
        out = Path(args.out or "runs/validation")
        analysis = _analyse_and_save(args, loaded, test, out)
        if is_main():
            print(analysis.recommendation())
    points = args.points if args.points in ("auto", "all") else args.points.split(",")
    settings = Settings(
        ratio=args.ratio,
        halve=args.halve,
        epochs=args.epochs,
        lr=args.lr,
        finetune=args.finetune,
        distill=args.distill,
        recon=args.recon,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
        k=args.k,
        n_boot=args.bootstrap,
        flop_shares=tuple(args.flop_shares),
        byte_budgets=tuple(args.byte_budgets) if args.byte_budgets else None,
    )
    report = validate(
        loaded.model,
        analysis,
        train,
        test,
        out,
        points=points,
        settings=settings,
        device=args.device,
        model_name=loaded.name,
        progress=not args.quiet,
    )
    if not is_main():
        return 0
    print(f"unsplit accuracy: {report['unsplit_accuracy']:.4f}")
    print(
        f"{'point':<24}{'log10 CUI':>10}{'bytes':>9}{'encoded':>9}{'accuracy':>10}"
        f"{'drop':>8}{'int8':>8}{'probe':>8}"
    )
    for p in report["points"]:
        print(
            f"{p['name']:<24}{math.log10(p['cui']) if p['cui'] > 0 else float('-inf'):>10.3f}"
            f"{p['bytes']:>9}{p['encoded_bytes']:>9}{p['accuracy']:>10.4f}"
            f"{p['accuracy_drop']:>8.4f}{_fmt(p['accuracy_int8']):>8}{p['probe_accuracy']:>8.4f}"
        )
    for name, c in report["correlation"].items():
        print(
            f"{name:>6}: Spearman {_fmt(c['spearman'])} {_ci(c['spearman_ci'])}, Kendall "
            f"{_fmt(c['kendall'])} {_ci(c['kendall_ci'])}, prediction MAE "
            f"{_fmt(report['prediction']['mae'][name])}"
        )
    for r in report["regret"]:
        print(
            f"regret, {r['budget']}: isplit picks {r['pick']}: {_fmt(r['regret'])} "
            f"(smallest bytes {_fmt(r['regret_smallest_bytes'])}, deepest "
            f"{_fmt(r['regret_deepest'])}, probe {_fmt(r['regret_best_probe'])})"
        )
    print(f"wrote {out / 'validation.json'}, {out / 'validation.png'}")
    return 0


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _cmd_classes(args: argparse.Namespace) -> int:
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
    print(f"classes pulling the split furthest: {', '.join(report['ranking'][:3])}")
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
    from isplit.data import SubsetDataset, load_dataset
    from isplit.validate import Settings, validate

    loaded = analysis.load_model()
    pp = loaded.preprocess
    names = report["subset"]

    def only_subset(split: str):
        ds = load_dataset(analysis.dataset["name"], split, pp, root=args.data_root)
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


def _cmd_points(args: argparse.Namespace) -> int:
    from isplit.analysis import restrict
    from isplit.graph import ModelGraph

    loaded = _load(args)
    pp = loaded.preprocess
    graph = ModelGraph(loaded.model, (pp.channels, pp.size, pp.size), args.granularity)
    points = graph.points
    restrict(points, max_bytes=args.max_bytes, max_head_flops=args.max_head_flops)
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.name,
                    "input_shape": [pp.channels, pp.size, pp.size],
                    "total_flops": graph.total_flops,
                    "points": [p.to_json() for p in points],
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{loaded.name}: {len(points)} split points for input "
        f"{pp.channels}x{pp.size}x{pp.size} (model: {graph.total_flops / 1e6:.1f} MFLOPs)"
    )
    print(
        f"{'point':<32}{'op':<20}{'shape':>16}{'bytes':>12}{'head MFLOPs':>13}"
        f"{'head params':>13}  admissible"
    )
    for p in points:
        print(
            f"{p.name:<32}{p.op:<20}{'x'.join(map(str, p.shape)):>16}{p.bytes:>12}"
            f"{p.head_flops / 1e6:>13.2f}{p.head_params:>13}  {'yes' if p.admissible else 'no'}"
        )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from isplit.report import write_report

    path = write_report(
        args.run, samples=args.samples, data_root=args.data_root, device=args.device
    )
    print(f"wrote {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from isplit.models import list_model_names

    print("\n".join(list_model_names()))
    return 0


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--granularity",
        default="layer",
        choices=["layer", "all"],
        help="layer: cut after the activation that follows a layer (default); all: every valid cut",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="admissible points send at most this many bytes (batch 1)",
    )
    p.add_argument(
        "--max-head-flops",
        type=float,
        default=None,
        help="admissible points have at most this many head FLOPs (batch 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isplit", description="Where to cut a CNN for split computing (I-SPLIT)."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="CUI curves, candidate split points and the best split")
    _add_model_args(p)
    _add_data_args(p, split="test")
    _add_budget_args(p)
    p.add_argument("--out", default="runs/analysis", help="output folder (default: runs/analysis)")
    p.add_argument(
        "--target",
        default="label",
        choices=["label", "predicted"],
        help="class whose score is differentiated (default: the true label)",
    )
    p.add_argument(
        "--reduction",
        default="mean",
        choices=["mean", "sum"],
        help="channel reduction of the Grad-CAM map (mean: the authors' code)",
    )
    p.add_argument(
        "--protocol",
        default="default",
        choices=["default", "official"],
        help="official: the authors' published choices (predicted class, their layers)",
    )
    p.add_argument("--points", default=None, help="comma-separated split point names")
    p.add_argument("--first", default=None, help="first admissible point (name)")
    p.add_argument("--last", default=None, help="last admissible point (name)")
    _add_run_args(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "validate",
        help="train a bottleneck at split points, measure accuracy, "
        "and report how well CUI predicted it",
    )
    _add_model_args(p)
    _add_data_args(p, split="test")
    p.add_argument("--train-split", default="train", help="split to train bottlenecks on")
    p.add_argument(
        "--analysis",
        default=None,
        help="an analysis run folder to reuse (default: run the analysis first)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: the --analysis folder, else runs/validation)",
    )
    p.add_argument(
        "--points",
        default="auto",
        help="auto (candidates, best, smallest CDE, "
        "budget picks, evenly spaced up to 8), all, or comma-separated names",
    )
    p.add_argument("--ratio", type=int, default=8, help="channel reduction of the bottleneck")
    p.add_argument("--halve", action="store_true", help="the bottleneck also halves H and W")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--finetune", default="none", choices=["none", "tail"])
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight of distillation from the unsplit model's logits",
    )
    p.add_argument("--recon", type=float, default=1.0, help="weight of the reconstruction loss")
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--test-limit", type=int, default=5000)
    p.add_argument("--k", type=int, default=3, help="retrained points the prediction is fit on")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--flop-shares",
        type=float,
        nargs="+",
        default=[0.25, 0.5],
        help="head FLOP budgets for the regret, as shares of the model's FLOPs",
    )
    p.add_argument(
        "--byte-budgets",
        type=int,
        nargs="+",
        default=None,
        help="link byte budgets for the regret (default: median admissible bytes)",
    )
    _add_run_args(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "classes",
        help="the best split for a subset of classes, per-class best "
        "splits, and groups of classes with alike curves (from a saved run)",
    )
    p.add_argument("run", help="an analysis run folder")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.add_argument("--max-bytes", type=int, default=None)
    p.add_argument("--max-head-flops", type=float, default=None)
    p.add_argument(
        "--validate",
        action="store_true",
        help="retrain the bottleneck at the "
        "subset's best and the global best split on the subset's images",
    )
    p.add_argument("--train-split", default="train")
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--test-limit", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_classes)

    p = sub.add_parser("points", help="list the valid split points of a model")
    _add_model_args(p)
    _add_budget_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_points)

    p = sub.add_parser(
        "report", help="one self-contained HTML page (report.html) for an analysis run folder"
    )
    p.add_argument("run", metavar="RUN_DIR", help="the --out folder of an `isplit analyze` run")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="images in the Grad-CAM figure (default: one per class, at most 10; 0: no figure)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="where the run's data set is, if not where the analysis found it "
        "(for an image-folder data set: the folder)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("models", help="list the model names isplit knows")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train or fine-tune a classifier on a data set")
    _add_model_args(p)
    _add_data_args(p, split="train")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pth)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--augment", default="shift", choices=["none", "shift", "shift+flip"])
    p.add_argument(
        "--test-split", default="test", help="split to report accuracy on ('none' to skip)"
    )
    p.set_defaults(func=_cmd_train)
    return parser


_DISTRIBUTED = ("analyze", "validate")


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """``--nproc K``: check what can be checked here, then start K processes via torchrun."""
    from isplit import distributed
    from isplit.importance import autocast_dtype
    from isplit.models import resolve_device

    device = resolve_device(args.device)
    distributed.check_nproc(args.nproc, device)
    autocast_dtype(args.precision, device)
    out = args.out if args.command == "analyze" else (args.out or args.analysis)
    _check_output_folder(Path(out or "runs/validation"))
    if args.nproc == 1:
        return args.func(args)
    return distributed.launch(args.nproc, argv)


def _distributed(args: argparse.Namespace) -> int:
    """One process of a torchrun launch: join the process group, run the command."""
    from isplit import distributed

    if args.command not in _DISTRIBUTED:
        raise IsplitError(
            f"only {' and '.join(_DISTRIBUTED)} run on several processes, not {args.command}; "
            "run it without torchrun"
        )
    distributed.init(args.device)
    try:
        return args.func(args)
    finally:
        distributed.finish()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="isplit: %(levelname)s: %(message)s",
    )
    try:
        from isplit.distributed import launched

        if launched():
            return _distributed(args)
        if getattr(args, "nproc", None) is not None:
            return _launch(args, argv)
        return args.func(args)
    except IsplitError as e:
        from isplit.distributed import report_error

        if not report_error(str(e)):
            print(f"isplit: error: {e}", file=sys.stderr)
        return 2
    except PeerFailed as e:
        from isplit.distributed import ERROR_FILE_ENV

        if ERROR_FILE_ENV not in os.environ:  # the launcher prints the failed process's error
            print(f"isplit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"isplit: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
