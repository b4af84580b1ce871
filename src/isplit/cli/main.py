"""Command line: parses, calls the library, prints. No logic of its own.

Only the standard library is imported here at the top: each command imports what it needs
(torch, matplotlib, scipy, ...) when it runs, so that ``--help`` and argument errors answer at
once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

from isplit.errors import IsplitError, PeerFailed
from isplit.runfolder import RunFolder

DEVICES = ["cpu", "cuda", "auto"]
#: The further predictors (isplit.importance.predictors.PREDICTORS without "cui"; kept here so that
#: --help does not import torch; a test checks they agree).
PREDICTOR_NAMES = ("probe", "taylor", "cam-share", "pca-probe")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help unless the help already says it or there
    is no default worth showing (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """The parser of isplit and of each of its commands: defaults shown in --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _count(text: str) -> int:
    """A whole number >= 0, also written in float notation (``1e5``, ``2.5e4``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(value)


def _non_negative(text: str) -> float:
    """A number >= 0 (``2e7``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def _list_of(convert, separators: str = r"[,\s]+"):
    """An argparse action for a list option given as one comma-separated argument, as several
    arguments, or both: ``--mean 0.5,0.5,0.5`` equals ``--mean 0.5 0.5 0.5``. Use it with
    ``nargs="+"``; ``convert`` turns each item into its value (an ArgumentTypeError for a bad
    one)."""

    class ListAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            items = [v for text in values for v in re.split(separators, text.strip()) if v]
            if not items:
                raise argparse.ArgumentError(self, "expected at least one value")
            out = []
            for item in items:
                try:
                    out.append(convert(item))
                except (argparse.ArgumentTypeError, ValueError) as e:
                    message = str(e) if isinstance(e, argparse.ArgumentTypeError) else ""
                    raise argparse.ArgumentError(
                        self, message or f"invalid value {item!r}"
                    ) from None
            setattr(namespace, self.dest, out)

    return ListAction


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="torchvision name, demo-vgg16, demo-resnet50, demo-mobilenet, "
        "or package.module:factory (default: demo-vgg16)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name (IMAGENET1K_V1, DEFAULT), a .pth/.safetensors state "
        "dict, or 'none' for random init (default: the packaged weights of a demo network, "
        "random init for any other model)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random initialisation (weights 'none'; layers a weights file does "
        "not cover) and of the command's own sampling and training (default: 0)",
    )
    _add_device_arg(p, "auto")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels (default: the model's or its weights' preset)",
    )
    p.add_argument(
        "--mean",
        nargs="+",
        action=_list_of(float),
        default=None,
        help="normalisation mean per channel, e.g. 0.5,0.5,0.5 or 0.5 0.5 0.5 "
        "(default: the model's or its weights' preset)",
    )
    p.add_argument(
        "--std",
        nargs="+",
        action=_list_of(float),
        default=None,
        help="normalisation std per channel, as --mean (default: the model's or its weights' "
        "preset)",
    )


def _add_device_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--device",
        default=default,
        choices=DEVICES,
        help="where the network runs (auto: cuda when available, else cpu)",
    )


def _add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (results are printed all the same)"
    )


def _add_data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="fashion-mnist, digits, an image folder "
        "(one sub-folder per class; Tiny-ImageNet layout too), or torchvision:NAME "
        "(default: fashion-mnist)",
    )
    p.add_argument("--split", default=split, help=f"data split (default: {split})")
    p.add_argument(
        "--data-root",
        default=None,
        help="where the data set files are (default: the usual places; see the README)",
    )
    p.add_argument("--download", action="store_true", help="allow downloading the data set")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable image files with a warning instead of stopping",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader worker processes (default: 0 for in-memory data sets, else up to 4)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument(
        "--limit", type=_count, default=None, help="use at most this many images (default: all)"
    )
    _add_quiet_arg(p)


def _add_predictor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--predictors",
        nargs="+",
        action=_list_of(str),
        default=None,
        help="further predictors of post-split accuracy to compute in the same pass: "
        f"{', '.join(PREDICTOR_NAMES)} (a,b or a b; CUI always); see the README",
    )
    p.add_argument(
        "--select-by",
        default="cui",
        help="the predictor whose maximum over the admissible points is the best split "
        "(default: cui, the paper's)",
    )
    p.add_argument(
        "--probe-ratio",
        type=_count,
        default=None,
        help="pca-probe keeps channels / N principal components: the bottleneck it stands for "
        "(default: 8 in analyze; validate's --ratio in validate)",
    )


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
    from isplit.models.train import train

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
        result = analyze(
            loaded,
            data,
            batch_size=args.batch_size,
            limit=args.limit,
            device=args.device,
            model_name=loaded.name,
            workers=args.workers,
            skip_bad_images=args.skip_bad_images,
            progress=not args.quiet,
            checkpoint=RunFolder(out).checkpoint,
            checkpoint_every=args.checkpoint_every,
            precision=args.precision,
            **options,
        )
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another process may have removed it
                out.rmdir()  # nothing was saved: leave no empty run folder behind
        raise
    if is_main():  # one process writes the outputs of a distributed run
        result.save(out)
    return result


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
        points=args.points,
        target=args.target,
        reduction=args.reduction,
        protocol=args.protocol,
        granularity=args.granularity,
        max_bytes=args.max_bytes,
        max_head_flops=args.max_head_flops,
        first=args.first,
        last=args.last,
        predictors=args.predictors,
        select_by=args.select_by,
        probe_ratio=args.probe_ratio,
    )
    if not is_main():
        return 0
    print(result.table())
    if result.skipped_images:
        print(f"isplit: skipped {len(result.skipped_images)} unreadable image(s)", file=sys.stderr)
    print(f"model accuracy on the analysed images: {result.accuracy:.4f}")
    _print_pace(result.timing, args.workers)
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


#: above this share of the loop's time spent waiting for data, a note says the data set set
#: the pace (a well-fed run waits a few per cent: the first batches, the workers' warm-up)
DATA_BOUND_SHARE = 0.3


def _print_pace(timing: dict | None, workers: int | None) -> None:
    """The loop's speed; a note when the data set, not the model, set the pace."""
    if not timing or not timing.get("images") or not timing.get("images_per_s"):
        return
    print(
        f"analysed {timing['images']} images in {timing['seconds']:.1f} s "
        f"({timing['images_per_s']:.0f} images/s; waiting for data "
        f"{100 * timing['data_wait_share']:.0f} % of the time)"
    )
    share = timing["data_wait_share"]
    if share >= DATA_BOUND_SHARE and timing["seconds"] >= 1.0:
        given = "the default" if workers is None else str(workers)
        print(
            f"isplit: note: the analysis waited for the data set {100 * share:.0f} % of the "
            f"time: loading, not the model, set the pace; more loader processes (--workers, "
            f"now {given}) or a faster data set would speed it up",
            file=sys.stderr,
        )


def _cmd_validate(args: argparse.Namespace) -> int:
    from isplit.analysis import Analysis
    from isplit.data import load_dataset
    from isplit.distributed import is_main
    from isplit.validation import Settings, validate

    _check_output_folder(Path(args.out or args.analysis or "runs/validation"))
    analysis = Analysis.load(args.analysis) if args.analysis else None
    if analysis is not None and (args.predictors or args.select_by != "cui" or args.probe_ratio):
        raise IsplitError(
            "--predictors, --select-by and --probe-ratio set up the analysis that validate runs "
            f"itself; the --analysis folder has its own ({', '.join(analysis.predictor_names)}): "
            "rerun `isplit analyze --predictors ...` into it, or leave --analysis out"
        )
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
        analysis = _analyse_and_save(
            args,
            loaded,
            test,
            out,
            predictors=args.predictors,
            select_by=args.select_by,
            probe_ratio=args.probe_ratio or args.ratio,  # pca-probe stands for this bottleneck
        )
        if is_main():
            print(analysis.recommendation())
    points = args.points[0] if args.points in (["auto"], ["all"]) else args.points
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
        f"{'drop':>8}{'int8':>8}{'log. probe':>11}"
    )
    for p in report["points"]:
        print(
            f"{p['name']:<24}{math.log10(p['cui']) if p['cui'] > 0 else float('-inf'):>10.3f}"
            f"{p['bytes']:>9}{p['encoded_bytes']:>9}{p['accuracy']:>10.4f}"
            f"{p['accuracy_drop']:>8.4f}{_fmt(p['accuracy_int8']):>8}{p['probe_accuracy']:>11.4f}"
            + ("" if p["learned"] else "  did not learn")
        )
    reliable = report["reliability"]["reliable"]
    if not reliable:
        print(f"NOT RELIABLE: {report['reliability']['reason']}")
    calibration = report.get("calibration", {})
    for name, c in report["correlation"].items():
        cal = calibration.get(name, {})
        print(
            f"{name:>14}: Spearman {_fmt(c['spearman'])} {_ci(c['spearman_ci'])}, Kendall "
            f"{_fmt(c['kendall'])} {_ci(c['kendall_ci'])}, prediction MAE "
            f"{_fmt(report['prediction']['mae'][name])}, linear leave-one-out MAE "
            f"{_fmt(cal.get('loo_mae'))}" + ("" if reliable else " (unreliable)")
        )
    for r in report["regret"]:
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in r.get("regret_by", {}).items())
        print(
            f"regret, {r['budget']}: isplit picks {r['pick']}: {_fmt(r['regret'])} ({others})"
            + ("" if r["reliable"] else " (unreliable)")
        )
    best = report.get("best_predictor") or {}
    if best.get("by_spearman"):
        by_mae = best.get("by_loo_mae")
        print(
            f"best predictor here: {best['by_spearman']} by Spearman"
            + (f", {by_mae} by the error of its predicted accuracy" if by_mae else "")
            + ("" if reliable else " (unreliable)")
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


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train-limit",
        type=_count,
        default=8000,
        help="training images for each bottleneck (a fixed random sample)",
    )
    p.add_argument(
        "--test-limit",
        type=_count,
        default=5000,
        help="test images the accuracy is measured on (a fixed random sample)",
    )


# -- deployment: export, serve, infer, plan ------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    from isplit.analysis import Analysis
    from isplit.deploy.export import check_images, export_split, find_bottleneck

    run = args.analysis
    if run is None and args.bottleneck and (Path(args.bottleneck) / "curves.json").is_file():
        run = args.bottleneck  # a validation run holds its analysis
    analysis = Analysis.load(run) if run else None
    if analysis is not None and args.model is None and args.weights is None:
        loaded = analysis.load_model()  # the network the run analysed
    else:
        loaded = _load(args)
    point = args.point or (analysis.best if analysis is not None else None)
    if point is None:
        raise IsplitError(
            "pass --point NAME (`isplit points` lists them), or --analysis RUN_DIR to export at "
            "the run's best split"
        )
    bottleneck = find_bottleneck(args.bottleneck, point) if args.bottleneck else None
    data = args.data or (analysis.dataset.get("name") if analysis is not None else None)
    inputs, note = check_images(loaded, data or "fashion-mnist", args.split, args.data_root,
                                args.check_images)  # fmt: skip
    if note:
        print(f"isplit: note: {note}", file=sys.stderr)
    classes = None
    if analysis is not None and len(analysis.dataset.get("classes") or []) == loaded.num_classes:
        classes = loaded.classes or list(analysis.dataset["classes"])
    m = export_split(
        loaded,
        point,
        args.out,
        bottleneck=bottleneck,
        name=args.name,
        classes=classes,
        check_inputs=inputs,
        max_batch=args.max_batch,
    )
    c = m.checks
    shape = "x".join(map(str, m.transmitted_shape))
    what = "8-bit code of the bottleneck" if m.bottleneck else "activation"
    print(
        f"exported {m.model['model']} cut after {m.point}: the {what} {shape} crosses the link "
        f"({4 * m.transmitted_numel} bytes float32, {m.transmitted_numel + 5} as 8-bit)"
    )
    diffs = ", ".join(
        f"{part} {c[f'{key}_max_abs_diff']:.2e}"
        for part, key in (("head", "head"), ("tail", "tail"), ("tail int8", "tail_int8"),
                          ("end to end", "end_to_end"))
    )  # fmt: skip
    print(
        f"checked with onnxruntime on {c['inputs']}: max abs diff {diffs} (against the "
        f"{c['reference']}); predictions agree {c['agreement']:.1%}, "
        f"{c['agreement_int8']:.1%} with 8 bits"
    )
    print(
        f"wrote {args.out}: head.onnx, tail.onnx, tail_int8.onnx, {m.pytorch['head']['file']}, "
        f"{m.pytorch['tail']['file']}, manifest.json, triton/{m.name}, triton/{m.int8_name}"
    )
    print(f"serve the tail with: isplit serve {args.out}")
    return 0


def _token(args: argparse.Namespace) -> str | None:
    import os

    return args.token or os.environ.get("ISPLIT_TOKEN") or None


def _cmd_serve(args: argparse.Namespace) -> int:
    from isplit.deploy.plan import parse_size
    from isplit.deploy.server import TailServer

    server = TailServer(
        args.dir,
        args.host,
        args.port,
        token=_token(args),
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_request_bytes=parse_size(args.max_request_bytes),
        runtime=args.runtime,
        device=args.device,
    ).start()
    m = server.app.state.manifest
    print(
        f"serving {m.name} (float32) and {m.int8_name} (8-bit), the tail of {m.model['model']} "
        f"after {m.point}, at {server.url}/v2 (Open Inference Protocol); Ctrl-C stops",
        flush=True,
    )
    server.wait()
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from isplit.deploy.client import Client

    with Client(
        args.dir,
        args.server,
        token=_token(args),
        quantize=not args.no_quantize,
        runtime=args.runtime,
        device=args.device,
    ) as client:
        predictions = client.classify_files(args.images)
    if args.json:
        for p in predictions:
            print(json.dumps(p.to_json()))
        return 0
    print(f"{'image':<32}{'class':<16}{'bytes':>8}{'head ms':>9}{'rtt ms':>9}{'tail ms':>9}")
    for p in predictions:
        tail = "n/a" if p.tail_ms is None else f"{p.tail_ms:.2f}"
        print(
            f"{p.image:<32}{p.class_name:<16}{p.bytes:>8}{p.head_ms:>9.2f}{p.rtt_ms:>9.2f}{tail:>9}"
        )
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from isplit.deploy.plan import (
        PLAN_JSON,
        PLAN_PNG,
        Link,
        make_plan,
        parse_bandwidth,
        parse_duration,
        parse_size,
        parse_speed,
        plan_table,
        plot_plan,
    )
    from isplit.io import atomic_write_json

    link = Link(parse_bandwidth(args.bandwidth), parse_duration(args.rtt))
    plan = make_plan(
        args.run,
        link,
        device_speed=parse_speed(args.device_speed),
        server_speed=parse_speed(args.server_speed),
        max_latency=None if args.max_latency is None else parse_duration(args.max_latency),
        max_bytes=None if args.max_bytes is None else parse_size(args.max_bytes),
        score=args.score,
        quantize=not args.no_quantize,
        repeats=args.repeats,
        threads=args.threads or None,
    )
    out = Path(args.out or args.run)
    atomic_write_json(out / PLAN_JSON, plan)
    plot_plan(plan, out / PLAN_PNG)
    print(plan_table(plan))
    print(f"wrote {out / PLAN_JSON}, {out / PLAN_PNG}")
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
        type=_count,
        default=None,
        help="admissible points send at most this many bytes (batch 1; 40000 or 4e4; "
        "default: no limit)",
    )
    p.add_argument(
        "--max-head-flops",
        type=_non_negative,
        default=None,
        help="admissible points have at most this many head FLOPs (batch 1; e.g. 2e7; "
        "default: no limit)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isplit", description="Where to cut a CNN for split computing (I-SPLIT).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what isplit does")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    p.add_argument(
        "--points",
        nargs="+",
        action=_list_of(str),
        default=None,
        help="the split points to analyse, by name: a,b or a b (default: every point of the "
        "granularity)",
    )
    p.add_argument(
        "--first", default=None, help="first admissible point (name; default: the first)"
    )
    p.add_argument("--last", default=None, help="last admissible point (name; default: the last)")
    _add_predictor_args(p)
    _add_run_args(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "validate",
        help="train a bottleneck at split points, measure accuracy, "
        "and report how well CUI predicted it",
    )
    _add_model_args(p)
    _add_data_args(p, split="test")
    p.add_argument("--train-split", default="train", help="data split to train bottlenecks on")
    p.add_argument(
        "--analysis",
        default=None,
        help="an analysis run folder to reuse (default: run the analysis first)",
    )
    _add_predictor_args(p)
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: the --analysis folder, else runs/validation)",
    )
    p.add_argument(
        "--points",
        nargs="+",
        action=_list_of(str),
        default=["auto"],
        help="auto (candidates, best, smallest CDE, budget picks, evenly spaced up to 8), all, "
        "or point names (a,b or a b)",
    )
    p.add_argument("--ratio", type=int, default=8, help="channel reduction of the bottleneck")
    p.add_argument("--halve", action="store_true", help="the bottleneck also halves H and W")
    p.add_argument("--epochs", type=int, default=4, help="training epochs of each bottleneck")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle)")
    p.add_argument(
        "--finetune",
        default="none",
        choices=["none", "tail"],
        help="tail: train the tail with the bottleneck (none: the tail stays frozen)",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight of distillation from the unsplit model's logits",
    )
    p.add_argument("--recon", type=float, default=1.0, help="weight of the reconstruction loss")
    _add_limit_args(p)
    p.add_argument("--k", type=int, default=3, help="retrained points the prediction is fit on")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--flop-shares",
        nargs="+",
        action=_list_of(_non_negative),
        default=[0.25, 0.5],
        help="head FLOP budgets for the regret, as shares of the model's FLOPs (0.25,0.5 or "
        "0.25 0.5)",
    )
    p.add_argument(
        "--byte-budgets",
        nargs="+",
        action=_list_of(_count),
        default=None,
        help="link byte budgets for the regret, as --flop-shares (default: the median bytes "
        "of the admissible points)",
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
    p.add_argument(
        "--max-bytes",
        type=_count,
        default=None,
        help="admissible points send at most this many bytes (batch 1; default: no limit)",
    )
    p.add_argument(
        "--max-head-flops",
        type=_non_negative,
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
    _add_limit_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    _add_device_arg(p, "auto")
    _add_quiet_arg(p)
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
    _add_device_arg(p, "cpu")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("models", help="list the model names isplit knows")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train or fine-tune a classifier on a data set")
    _add_model_args(p)
    _add_data_args(p, split="train")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pth)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: 0.05 x batch size / 128)",
    )
    p.add_argument(
        "--augment",
        default="shift",
        choices=["none", "shift", "shift+flip"],
        help="training augmentation: random shifts, and horizontal flips",
    )
    p.add_argument(
        "--test-split", default="test", help="split to report accuracy on ('none' to skip)"
    )
    p.set_defaults(func=_cmd_train)

    _add_deploy_parsers(sub)
    return parser


def _add_deploy_parsers(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write the head and tail at a split point as ONNX and PyTorch programs, a "
        "manifest, and a Triton model repository for the tail",
    )
    _add_model_args(p)
    p.add_argument("--out", required=True, help="the folder to write (replaced if an export)")
    p.add_argument("--point", default=None, help="split point (default: the --analysis best)")
    p.add_argument(
        "--analysis",
        default=None,
        metavar="RUN_DIR",
        help="an analysis run: its network (unless --model/--weights) and its best split",
    )
    p.add_argument(
        "--bottleneck",
        default=None,
        metavar="VALIDATION_RUN",
        help="a validation run folder: put its trained bottleneck at --point into the split",
    )
    p.add_argument("--name", default=None, help="the served model name (default: MODEL-tail)")
    p.add_argument(
        "--data", default=None, help="images to check the export on (default: the run's data "
        "set, else fashion-mnist)"
    )  # fmt: skip
    p.add_argument("--split", default="test", help="data split of the check images")
    p.add_argument("--data-root", default=None, help="where the data set files are")
    p.add_argument("--check-images", type=int, default=64, help="images to check on (64)")
    p.add_argument(
        "--max-batch", type=int, default=64, help="max_batch_size of the Triton configuration"
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "serve", help="serve an exported tail over the Open Inference Protocol (KServe v2 REST)"
    )
    p.add_argument("dir", metavar="DIR", help="the --out folder of `isplit export`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000; 0: a free one)")
    p.add_argument(
        "--token",
        default=None,
        help="require this bearer token (default: $ISPLIT_TOKEN, else none)",
    )
    p.add_argument(
        "--max-batch", type=int, default=16, help="images run together at most (1: no batching)"
    )
    p.add_argument(
        "--batch-wait-ms", type=float, default=2.0, help="how long a batch waits for more (2)"
    )
    p.add_argument(
        "--max-request-bytes", default="64MiB", help="largest request body accepted (64MiB)"
    )
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "onnxruntime", "torch"],
        help="what runs the tail: onnxruntime (tail.onnx), torch (the network rebuilt from "
        "its recorded weights), or auto (onnxruntime where installed)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the tail runs"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "infer",
        help="run the head on images here, send the tensor to the tail server, print the classes",
    )
    p.add_argument("dir", metavar="DIR", help="the --out folder of `isplit export`")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--server", required=True, help="the tail server, e.g. http://host:8000")
    p.add_argument("--token", default=None, help="bearer token (default: $ISPLIT_TOKEN)")
    p.add_argument("--no-quantize", action="store_true", help="send float32, not the 8-bit code")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=["onnxruntime", "torch"],
        help="what runs the head: onnxruntime (head.onnx) or torch (the rebuilt network)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the head runs"
    )
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser(
        "plan",
        help="end-to-end latency of every split point over a link, the Pareto front and the "
        "recommended point under a latency budget",
    )
    p.add_argument("run", metavar="RUN_DIR", help="an analysis run folder")
    p.add_argument("--bandwidth", required=True, help="link bandwidth: 10Mbit/s, 1.5MB/s, ...")
    p.add_argument("--rtt", required=True, help="round-trip time: 20ms, 0.1s, ...")
    p.add_argument(
        "--device-speed", default="measured", help="measured (here) or the device's GFLOPS"
    )
    p.add_argument(
        "--server-speed", default="measured", help="measured (here) or the server's GFLOPS"
    )
    p.add_argument("--max-latency", default=None, help="latency budget per image: 50ms, ...")
    p.add_argument("--max-bytes", default=None, help="request size budget: 4096, 16kB, ...")
    p.add_argument(
        "--score", default="cui", choices=["cui", "probe"],
        help="cui, or probe: the linear-probe accuracy of a validated run",
    )  # fmt: skip
    p.add_argument("--no-quantize", action="store_true", help="plan for float32 tensors")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per part (median)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while timing (1: steadiest for batch-1 timings; 0: torch's default)",
    )
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR)")
    p.set_defaults(func=_cmd_plan)


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
        print(f"isplit: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
