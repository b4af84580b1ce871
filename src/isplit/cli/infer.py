"""`isplit infer`: the head run here, its tensor sent to the tail server, the classes printed.

Each image's line is printed (and flushed) as soon as it is answered; an image that cannot be read
or whose request fails gets its own line saying why, and the run goes on. The exit code is 0 when
every image was answered, 1 when some were not (the count is the last line on stderr), 2 for a
mistake in the command (nothing sent).
"""

from __future__ import annotations

import argparse
import json
import sys

from isplit.cli.options import (
    token,
)
from isplit.texttable import table_line

HEADER = ("image", "class", "bytes", "head ms", "rtt ms", "tail ms")


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
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per image ({"image", "error"} for one that failed)',
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="tries again a refused or dropped connection (or a 503) this many times, waiting "
        "0.5 s, 1 s, 2 s, ... (default 3); then the images left are reported as not sent",
    )
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
        retries=args.retries,
    ) as client:
        widths = _widths(args.images, client.manifest.classes)
        if not args.json:
            print(table_line(HEADER, widths, left=2, note=False), flush=True)
        failed = 0
        for p in client.predict_files(args.images):
            failed += p.error is not None
            print(json.dumps(p.to_json()) if args.json else _row(p, widths), flush=True)
    if failed:
        print(f"isplit: {failed} of {len(args.images)} images failed", file=sys.stderr)
        return 1
    return 0


def _widths(images: list[str], classes: list[str]) -> list[int]:
    """The table's column widths, known before the first answer (each line is printed as soon as
    its image is answered): the longest path, the longest class name; the numbers' columns as
    wide as their header or 7 characters (a wider number pushes the line right, two spaces from
    its neighbour, never into it)."""
    return [
        max([len(HEADER[0]), *(len(str(i)) for i in images)]),
        max([len(HEADER[1]), *(len(c) for c in classes)]),
        *(max(len(h), 7) for h in HEADER[2:]),
    ]


def _row(p, widths: list[int]) -> str:
    if p.error is not None:
        return f"{p.image.ljust(widths[0])}  error: {p.error}"
    tail = "n/a" if p.tail_ms is None else f"{p.tail_ms:.2f}"
    cells = [p.image, p.class_name, p.bytes, f"{p.head_ms:.2f}", f"{p.rtt_ms:.2f}", tail]
    return table_line(cells, widths, left=2, note=False)
