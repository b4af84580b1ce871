"""`isplit infer`: the head run here, its tensor sent to the tail server, the classes printed."""

from __future__ import annotations

import argparse
import json

from isplit.cli.options import (
    token,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.deploy.client import Client

    with Client(
        args.dir,
        args.server,
        token=token(args),
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
