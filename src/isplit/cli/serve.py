"""`isplit serve`: an exported tail over the Open Inference Protocol (KServe v2 REST)."""

from __future__ import annotations

import argparse
import sys

from isplit.cli.options import (
    token,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve an exported tail over the Open Inference Protocol (KServe v2 REST)"
    )
    p.add_argument("dir", metavar="DIR", help="the --out folder of `isplit export`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port, 0 to 65535 (0: any free port)")
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
        "--max-request-bytes",
        default=None,
        help="largest request body accepted (default: what the export's max_batch_size images "
        "take as JSON, at most 64MiB)",
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
    _add_limits(p)
    p.set_defaults(func=run)


def port(text: str) -> int:
    """A TCP port: a whole number from 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value} is not a port: ports go from 0 to 65535 (0: any free port)"
        )
    return value


def _add_limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits, TLS and stopping")
    g.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds to send a request's head (10)"
    )
    g.add_argument(
        "--body-timeout", type=float, default=30.0, help="seconds to send a request's body (30)"
    )
    g.add_argument(
        "--keep-alive", type=float, default=5.0, help="seconds an idle connection stays open (5)"
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections at most; more are answered 503 (256)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM/SIGINT: seconds to finish accepted requests (30)",
    )
    g.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="on SIGTERM/SIGINT: seconds to answer not-ready before closing the port (0)",
    )
    g.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    g.add_argument("--ssl-keyfile", default=None, help="... and this private key (PEM)")
    g.add_argument(
        "--docs",
        action="store_true",
        help="serve /docs, /redoc and /openapi.json (behind the token if any)",
    )


def run(args: argparse.Namespace) -> int:
    from isplit.deploy.server import Limits, TailServer, exposure_warnings
    from isplit.units import parse_size

    limits = Limits(
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        drain_timeout_s=args.drain_timeout,
        drain_delay_s=args.drain_delay,
    )
    secret = token(args)
    server = TailServer(
        args.dir,
        args.host,
        args.port,
        limits=limits,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        token=secret,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_request_bytes=None
        if args.max_request_bytes is None
        else parse_size(args.max_request_bytes),
        runtime=args.runtime,
        device=args.device,
        docs=args.docs,
    ).start()
    for warning in exposure_warnings(args.host, secret, server.tls):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    m = server.app.state.manifest
    print(
        f"serving {m.name} (float32) and {m.int8_name} (8-bit), the tail of {m.model['model']} "
        f"after {m.point}, at {server.url}/v2 (Open Inference Protocol; at most "
        f"{m.max_batch_size} images per request); SIGTERM or Ctrl-C stops",
        flush=True,
    )
    server.serve_forever()
    print("stopped", flush=True)
    return 0
