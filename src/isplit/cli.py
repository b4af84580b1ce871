"""Command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys

from isplit.errors import IsplitError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="torchvision name, demo-vgg16, demo-resnet50, "
                   "or package.module:factory (default: demo-vgg16)")
    p.add_argument("--weights", default=None, help="torchvision weights name (IMAGENET1K_V1, "
                   "DEFAULT), a .pth/.safetensors state dict, or 'none' for random init")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean")
    p.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std")


def _add_data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data", default=None, help="fashion-mnist, digits, an image folder "
                   "(one sub-folder per class; Tiny-ImageNet layout too), or torchvision:NAME "
                   "(default: fashion-mnist)")
    p.add_argument("--split", default=split, help=f"data split (default: {split})")
    p.add_argument("--data-root", default=None, help="where the data set files are")
    p.add_argument("--download", action="store_true", help="allow downloading the data set")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable image files with a warning instead of stopping")
    p.add_argument("--workers", type=int, default=None, help="data loader worker processes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isplit", description="Where to cut a CNN for split computing (I-SPLIT).")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train or fine-tune a classifier on a data set")
    _add_model_args(p)
    _add_data_args(p, split="train")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pth)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="shift", choices=["none", "shift", "shift+flip"])
    p.add_argument("--test-split", default="test", help="split to report accuracy on "
                   "('none' to skip)")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="isplit: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except IsplitError as e:
        print(f"isplit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("isplit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
