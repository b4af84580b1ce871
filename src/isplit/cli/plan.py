"""`isplit plan`: end-to-end latency of every split point and of not splitting (all on the
device, all on the server) over a link, the Pareto front and the recommended candidate under a
latency budget."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="end-to-end latency of every split point, and of not splitting, over a link; the "
        "Pareto front and the recommended candidate under a latency budget",
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
        "--score", default="best",
        help="best (default: the validated accuracy where the run was validated, else the "
        "predictor the run selected by, else CUI), validated, cui, or a predictor the run "
        "computed (probe, ...)",
    )  # fmt: skip
    p.add_argument(
        "--export", action="append", default=[], metavar="EXPORT_DIR",
        help="an `isplit export` folder of this network: its point is costed at what the "
        "export sends (a bottleneck's code); repeat for several",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.checks import from_json, warn
    from isplit.deploy.plan import (
        Link,
        make_plan,
        parse_bandwidth,
        parse_duration,
        parse_size,
        parse_speed,
    )
    from isplit.report.outputs import save_plan
    from isplit.runfolder import RunFolder

    link = Link(parse_bandwidth(args.bandwidth), parse_duration(args.rtt))
    out = RunFolder(args.out or args.run)
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
        exports=args.export,
    )
    save_plan(plan, out)
    print(plan.table())
    warn(from_json(plan.checks))
    print(f"wrote {out.plan}, {out / RunFolder.PLAN_PNG}")
    return 0
