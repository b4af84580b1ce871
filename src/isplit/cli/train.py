"""`isplit train`: train or fine-tune a classifier on a data set."""

from __future__ import annotations

import argparse

from isplit.cli.options import (
    add_data_args,
    add_model_args,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a classifier on a data set")
    add_model_args(
        p,
        weights_default="none, random init seeded by --seed, for every model: demo and timm "
        "models too; name weights to fine-tune from them",
    )
    add_data_args(p, split="train")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pth)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: 0.05 x batch size / 128 for sgd, 1e-3 x batch "
        "size / 128 for adamw)",
    )
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "adamw"],
        help="sgd (Nesterov momentum, weight decay 5e-4) or adamw (weight decay 0.05 on weight "
        "matrices: for ConvNeXt and vision transformers)",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        optimizer=args.optimizer,
        holdout=args.holdout,
    )
    print(result.summary())
    return 0
