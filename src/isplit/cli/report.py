"""`isplit report`: one self-contained HTML page for an analysis run folder."""

from __future__ import annotations

import argparse

from isplit.cli.options import (
    add_device_arg,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page (report.html) for an analysis run folder"
    )
    p.add_argument("run", metavar="RUN_DIR", help="the --out folder of an `isplit analyze` run")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="images in the Grad-CAM figure (default: one per class, at most 10; 0: no figure)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="where the run's data set is, if not where the analysis found it "
        "(for an image-folder data set: the folder)",
    )
    add_device_arg(p, "cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.report import write_report

    path = write_report(
        args.run, samples=args.samples, data_root=args.data_root, device=args.device
    )
    print(f"wrote {path}")
    return 0
