"""`isplit validate`: bottlenecks trained at split points, their accuracy, and how well CUI
and the further predictors predicted it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from isplit.cli.analyze import analyse_and_save
from isplit.cli.options import (
    add_data_args,
    add_limit_args,
    add_match_classes_arg,
    add_model_args,
    add_predictor_args,
    add_run_args,
    check_output_folder,
    count,
    list_of,
    model_from_args,
    non_negative,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="train a bottleneck at split points, measure accuracy, "
        "and report how well CUI predicted it",
    )
    add_model_args(p)
    # one --batch-size for the analysis (64 unless given) and the bottlenecks' training (128)
    add_data_args(
        p,
        split="test",
        batch_size=None,
        batch_help="images per batch (default: 64 in the analysis, 128 in training)",
    )
    add_match_classes_arg(p)
    p.add_argument("--train-split", default="train", help="data split to train bottlenecks on")
    p.add_argument(
        "--analysis",
        default=None,
        help="an analysis run folder to reuse (default: run the analysis first)",
    )
    add_predictor_args(p)
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: the --analysis folder, else runs/validation)",
    )
    p.add_argument(
        "--points",
        nargs="+",
        action=list_of(str),
        default=["auto"],
        help="auto (candidates, best, I-SPLIT's and the evidence-backed pick, smallest CDE, "
        "budget picks, evenly spaced up to 8), all, or point names (a,b or a b)",
    )
    p.add_argument("--ratio", type=int, default=8, help="channel reduction of the bottleneck")
    p.add_argument("--halve", action="store_true", help="the bottleneck also halves H and W")
    p.add_argument(
        "--bottleneck-seed",
        type=int,
        default=0,
        help="seed of the bottlenecks' initialisation and training order only (the images, "
        "probe and bootstrap follow --seed, so runs with other bottleneck seeds are paired)",
    )
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
    add_limit_args(p)
    p.add_argument("--k", type=int, default=3, help="retrained points the prediction is fit on")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--flop-shares",
        nargs="+",
        action=list_of(non_negative),
        default=[0.25, 0.5],
        help="head FLOP budgets for the regret, as shares of the model's FLOPs (0.25,0.5 or "
        "0.25 0.5)",
    )
    p.add_argument(
        "--byte-budgets",
        nargs="+",
        action=list_of(count),
        default=None,
        help="link byte budgets for the regret, as --flop-shares (default: the median bytes "
        "of the admissible points)",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def output_folder(args: argparse.Namespace) -> Path:
    """Where validate writes: --out, else the --analysis folder, else runs/validation."""
    return Path(args.out or args.analysis or "runs/validation")


def _settings(args: argparse.Namespace, given_batch: int | None):
    """The validation's :class:`~isplit.validation.Settings` from the command line."""
    from isplit.validation import Settings

    return Settings(
        ratio=args.ratio,
        halve=args.halve,
        epochs=args.epochs,
        lr=args.lr,
        finetune=args.finetune,
        distill=args.distill,
        recon=args.recon,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        **({} if given_batch is None else {"batch_size": given_batch}),
        seed=args.seed,
        bottleneck_seed=args.bottleneck_seed,
        k=args.k,
        n_boot=args.bootstrap,
        flop_shares=tuple(args.flop_shares),
        byte_budgets=tuple(args.byte_budgets) if args.byte_budgets else None,
        workers=args.workers,
        skip_bad_images=args.skip_bad_images,
    )


def run(args: argparse.Namespace) -> int:
    """Map the options to :mod:`isplit.validation.job`'s calls; run and save the analysis
    when no --analysis folder is given; print the report and draw its figure."""
    from isplit.analysis import AnalysisSettings
    from isplit.checks import warn
    from isplit.distributed import is_main
    from isplit.report.outputs import draw_validation
    from isplit.runfolder import RunFolder
    from isplit.validation.job import (
        load_validation_data,
        reused_analysis,
        validate_run,
        validation_model,
    )

    given_batch = args.batch_size  # the bottlenecks' training keeps its own default without it
    args.batch_size = given_batch or AnalysisSettings.batch_size

    out = output_folder(args)
    check_output_folder(out)
    settings = _settings(args, given_batch)
    settings.check()  # before the analysis: a wrong option costs no time
    analysis = reused_analysis(
        args.analysis,
        predictors=args.predictors,
        select_by=args.select_by,
        probe_ratio=args.probe_ratio,
    )
    own_model = analysis is not None and args.model is None and args.weights is None
    loaded = validation_model(analysis, None if own_model else model_from_args(args))
    train, test, note = load_validation_data(
        loaded,
        args.data,
        train_split=args.train_split,
        test_split=args.split,
        root=args.data_root,
        download=args.download,
        holdout=args.holdout,
        match_classes=args.match_classes,
    )
    if analysis is None:
        analysis = analyse_and_save(
            args,
            loaded,
            test,
            out,
            predictors=args.predictors,
            select_by=args.select_by,
            probe_ratio=args.probe_ratio or args.ratio,  # pca-probe stands for this bottleneck
        )
        if is_main():
            warn(analysis.checks)
            print(analysis.recommendation())
    if note and is_main():  # after the analysis: a refusal before it stays one line
        print(f"isplit: {note}", file=sys.stderr)
    points = args.points[0] if args.points in (["auto"], ["all"]) else args.points
    report = validate_run(
        loaded,
        analysis,
        train,
        test,
        out,
        points=points,
        settings=settings,
        device=args.device,
        progress=not args.quiet,
    )
    if not is_main():
        return 0
    draw_validation(report, analysis, out)
    print(report.table())
    print(f"wrote {RunFolder(out).validation}, {RunFolder(out) / RunFolder.VALIDATION_PNG}")
    return 0
