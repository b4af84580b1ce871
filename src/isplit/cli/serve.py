"""`isplit serve`: an exported tail over the Open Inference Protocol (KServe v2 REST)."""

from __future__ import annotations

import argparse

from isplit.cli.options import (
    token,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.deploy.plan import parse_size
    from isplit.deploy.server import TailServer

    server = TailServer(
        args.dir,
        args.host,
        args.port,
        token=token(args),
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
