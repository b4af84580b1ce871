"""What several commands share: option groups, argument types, and what the options are turned
into (the model, the output folder's check, the server token)."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit.errors import IsplitError
from isplit.importance.registry import predictor_names

if TYPE_CHECKING:
    from isplit.models import LoadedModel

DEVICES = ["cpu", "cuda", "auto"]


def count(text: str) -> int:
    """A whole number >= 0, also written in float notation (``1e5``, ``2.5e4``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(value)


def non_negative(text: str) -> float:
    """A number >= 0 (``2e7``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def list_of(convert: Callable[[str], Any], separators: str = r"[,\s]+") -> type[argparse.Action]:
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


def add_model_args(
    p: argparse.ArgumentParser,
    trace: bool = False,
    *,
    runs: bool = True,
    normalises: bool = True,
    weights_default: str | None = None,
) -> None:
    """The model options; ``trace``: the command traces the model (``--leaf-module``);
    ``runs``: it runs the network on a device it lets the user choose (``--device``);
    ``normalises``: it normalises images (``--mean``, ``--std``); ``weights_default``: what
    ``--weights`` defaults to in this command, when not the model's own weights."""
    p.add_argument(
        "--model",
        default=None,
        help="torchvision name, timm:NAME (a timm model; pip install 'isplit[timm]'), "
        "demo-vgg16, demo-resnet50, demo-mobilenet, demo-convnext, demo-vit, or "
        "package.module:factory (a function without arguments returning the model; default: "
        "demo-vgg16)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name (IMAGENET1K_V1, DEFAULT), timm pretrained tag "
        "(DEFAULT, in1k, ...), a .pth/.safetensors state dict, or 'none' for random init "
        + (
            f"(default: {weights_default})"
            if weights_default
            else "(default: the packaged weights of a demo network, timm's pretrained weights "
            "for a timm model, random init for any other model)"
        ),
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random initialisation (weights 'none'; layers a weights file does "
        "not cover) and of the command's own sampling and training (default: 0)",
    )
    if runs:
        add_device_arg(p, "auto")
    if trace:
        p.add_argument(
            "--leaf-module",
            action="append",
            default=None,
            metavar="NAME",
            help="a submodule class that torch.fx must not trace into (data-dependent Python "
            "control flow): kept whole, one node, no split point inside it; by class name or "
            "qualified type name (timm.layers.Attention); repeat for several",
        )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels (default: the model's or its weights' preset)",
    )
    if normalises:
        add_normalisation_args(p)


def add_normalisation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mean",
        nargs="+",
        action=list_of(float),
        default=None,
        help="normalisation mean per channel, e.g. 0.5,0.5,0.5 or 0.5 0.5 0.5 "
        "(default: the model's or its weights' preset)",
    )
    p.add_argument(
        "--std",
        nargs="+",
        action=list_of(float),
        default=None,
        help="normalisation std per channel, as --mean (default: the model's or its weights' "
        "preset)",
    )


def add_device_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--device",
        default=default,
        choices=DEVICES,
        help="where the network runs (auto: cuda when available, else cpu)",
    )


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (results are printed all the same)"
    )


def add_match_classes_arg(p: argparse.ArgumentParser) -> None:
    """``--match-classes``: how the data set's classes meet the model's outputs when the names
    its weights record differ (see :func:`isplit.data.relabel.match_classes`)."""
    p.add_argument(
        "--match-classes",
        default=None,
        choices=["name", "position"],
        help="when the class names the weights record differ from the data set's (another "
        "order, a subset): name maps each data class to the model output of that name, "
        "position takes label k as output k (default: refuse)",
    )


def add_data_args(
    p: argparse.ArgumentParser,
    split: str,
    batch_size: int | None = 64,
    batch_help: str = "images per batch",
) -> None:
    """The data options; ``batch_size``, ``batch_help``: --batch-size's default and help."""
    p.add_argument(
        "--data",
        default=None,
        help="fashion-mnist, digits, an image folder "
        "(one sub-folder per class; Tiny-ImageNet layout too), or torchvision:NAME "
        "(default: fashion-mnist)",
    )
    p.add_argument(
        "--split",
        default=split,
        help=f"data split (default: {split}); a folder without split sub-folders: train (the "
        "images not held out), test (the held-out images, --holdout) or all",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=None,
        metavar="SHARE",
        help="a folder without split sub-folders: the share of its images held out for testing, "
        "chosen by a hash of each file's path, the same on every machine (default: the share "
        "the weights were trained with by isplit train, else 0.2)",
    )
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
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument(
        "--limit",
        type=count,
        default=None,
        help="use at most this many images, a random sample drawn with --seed (default: all)",
    )
    add_quiet_arg(p)


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--predictors",
        nargs="+",
        action=list_of(str),
        default=None,
        help="further predictors of post-split accuracy to compute in the same pass: "
        f"{', '.join(predictor_names(include_cui=False))} (a,b or a b; CUI always); see the README",
    )
    p.add_argument(
        "--select-by",
        default="cui",
        help="the predictor whose maximum over the admissible points is the best split "
        "(default: cui, the paper's)",
    )
    p.add_argument(
        "--probe-ratio",
        type=count,
        default=None,
        help="pca-probe keeps channels / N principal components: the bottleneck it stands for "
        "(default: 8 in analyze; validate's --ratio in validate)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
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


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--granularity",
        default="layer",
        choices=["layer", "all"],
        help="layer: cut after the activation that follows a layer (default); all: every valid cut",
    )
    p.add_argument(
        "--max-bytes",
        type=count,
        default=None,
        help="admissible points send at most this many bytes (batch 1; 40000 or 4e4; "
        "default: no limit)",
    )
    p.add_argument(
        "--max-head-flops",
        type=non_negative,
        default=None,
        help="admissible points have at most this many head FLOPs (batch 1; e.g. 2e7; "
        "default: no limit)",
    )


def add_limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train-limit",
        type=count,
        default=8000,
        help="training images for each bottleneck (a fixed random sample)",
    )
    p.add_argument(
        "--test-limit",
        type=count,
        default=5000,
        help="test images the accuracy is measured on (a fixed random sample)",
    )


def model_from_args(args: argparse.Namespace) -> LoadedModel:
    """The network of the model options (:func:`add_model_args`)."""
    from isplit.models import load_model

    return load_model(
        args.model,
        args.weights,
        image_size=args.image_size,
        mean=getattr(args, "mean", None),  # None: the command does not normalise (points)
        std=getattr(args, "std", None),
        seed=args.seed,
    )


def check_output_folder(out: Path) -> None:
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


def token(args: argparse.Namespace) -> str | None:
    """The server's bearer token: ``--token``, else ``$ISPLIT_TOKEN``, else none."""
    return args.token or os.environ.get("ISPLIT_TOKEN") or None
