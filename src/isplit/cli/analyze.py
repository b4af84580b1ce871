"""`isplit analyze`: CUI curves, candidate split points and the best split."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from isplit.cli.options import (
    add_budget_args,
    add_data_args,
    add_match_classes_arg,
    add_model_args,
    add_predictor_args,
    add_run_args,
    check_output_folder,
    list_of,
    model_from_args,
)
from isplit.errors import IsplitError
from isplit.importance.registry import DEFAULT_CAM, cam_names
from isplit.runfolder import RunFolder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="CUI curves, candidate split points and the best split")
    add_model_args(p, trace=True)
    add_data_args(p, split="test")
    add_match_classes_arg(p)
    add_budget_args(p)
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
        "--cam",
        default=DEFAULT_CAM,
        choices=cam_names(),
        help=f"the CAM method whose maps give the CUI (default: {DEFAULT_CAM}, the paper's)",
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
        action=list_of(str),
        default=None,
        help="the split points to analyse, by name: a,b or a b (default: every point of the "
        "granularity)",
    )
    p.add_argument(
        "--first", default=None, help="first admissible point (name; default: the first)"
    )
    p.add_argument("--last", default=None, help="last admissible point (name; default: the last)")
    add_predictor_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def output_folder(args: argparse.Namespace) -> Path:
    """Where analyze writes: --out."""
    return Path(args.out)


def run(args: argparse.Namespace) -> int:
    from isplit.checks import failed, warn
    from isplit.data import describe_preprocess, load_dataset
    from isplit.data.folders import holdout_note
    from isplit.data.load import holdout_share
    from isplit.data.relabel import match_classes
    from isplit.distributed import is_main

    check_output_folder(output_folder(args))
    loaded = model_from_args(args)
    data = load_dataset(
        args.data or "fashion-mnist",
        args.split,
        loaded.preprocess,
        root=args.data_root,
        download=args.download,
        holdout=holdout_share(args.holdout, loaded.weights),
    )
    data, _ = match_classes(data, loaded.classes, args.match_classes)  # a mismatch: an error
    out = output_folder(args)
    result = analyse_and_save(
        args,
        loaded,
        data,
        out,
        points=args.points,
        target=args.target,
        reduction=args.reduction,
        cam=args.cam,
        protocol=args.protocol,
        granularity=args.granularity,
        max_bytes=args.max_bytes,
        max_head_flops=args.max_head_flops,
        first=args.first,
        last=args.last,
        predictors=args.predictors,
        select_by=args.select_by,
        probe_ratio=args.probe_ratio,
        leaf_modules=args.leaf_module or (),
    )
    if not is_main():
        return 0
    print(result.table())
    if result.skipped_images:
        print(f"isplit: skipped {len(result.skipped_images)} unreadable image(s)", file=sys.stderr)
    # after the run: a refusal stays one line
    print(f"isplit: preprocessing: {describe_preprocess(loaded.preprocess)}", file=sys.stderr)
    print(f"isplit: importance: {_describe_importance(result.settings)}", file=sys.stderr)
    if note := holdout_note(data):
        print(f"isplit: {note}", file=sys.stderr)
    flag = " (see the warnings below)" if failed(result.checks) else ""
    print(f"model accuracy on the analysed images: {result.accuracy:.4f}{flag}")
    _print_pace(result.timing, args.workers)
    warn(result.checks)
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
    picks = result.picks_text()
    if picks:  # with the evidence-backed pick (not with --predictors cui)
        print(picks)
    print(f"wrote {out / 'curves.json'}, {out / 'per_image.npz'}, {out / 'curves.png'}")
    return 0


def analyse_and_save(args: argparse.Namespace, loaded, data, out: Path, **options):
    """Run ``analyze`` with the data and run options of the command line, save into ``out``."""
    from isplit.analysis import analyze
    from isplit.distributed import is_main
    from isplit.report.outputs import save_analysis

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
        if is_main():  # one process writes the outputs of a distributed run
            save_analysis(result, out)  # all its files or none (a full disk)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another process may have removed it
                out.rmdir()  # nothing was saved: leave no empty run folder behind
        raise
    return result


#: above this share of the loop's time spent waiting for data, a note says the data set set
#: the pace (a well-fed run waits a few per cent: the first batches, the workers' warm-up)
DATA_BOUND_SHARE = 0.3


def _describe_importance(settings: dict) -> str:
    """Which CAM, of which score, with which channel reduction: the CUI the curve holds."""
    cam = settings.get("cam", DEFAULT_CAM)
    score = "the true label's" if settings.get("target") == "label" else "the predicted class's"
    channels = "averaged" if settings.get("reduction") == "mean" else "summed"
    return f"{cam} of {score} logit, channels {channels} (--cam, --target, --reduction)"


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
