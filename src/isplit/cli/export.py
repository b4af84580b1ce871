"""`isplit export`: the head and tail at a split point as ONNX and PyTorch programs, a
manifest, and a Triton model repository for the tail."""

from __future__ import annotations

import argparse
import sys

from isplit.cli.options import (
    add_model_args,
    model_from_args,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the head and tail at a split point as ONNX and PyTorch programs, a "
        "manifest, and a Triton model repository for the tail",
    )
    add_model_args(p, runs=False)  # no --device: exported and checked on the CPU
    p.add_argument("--out", required=True, help="the folder to write (replaced if an export)")
    p.add_argument("--point", default=None, help="split point (default: the --analysis best)")
    p.add_argument(
        "--analysis",
        default=None,
        metavar="RUN_DIR",
        help="an analysis run: its network (unless --model/--weights) and its best split",
    )
    p.add_argument(
        "--bottleneck",
        default=None,
        metavar="VALIDATION_RUN",
        help="a validation run folder: put its trained bottleneck at --point into the split",
    )
    p.add_argument(
        "--allow-unlearned",
        action="store_true",
        help="export a --bottleneck that its validation marked as not learned (warns)",
    )
    p.add_argument("--name", default=None, help="the served model name (default: MODEL-tail)")
    p.add_argument(
        "--data", default=None, help="images to check the export on (default: the run's data "
        "set, else fashion-mnist)"
    )  # fmt: skip
    p.add_argument("--split", default="test", help="data split of the check images")
    p.add_argument("--data-root", default=None, help="where the data set files are")
    p.add_argument("--check-images", type=int, default=64, help="images to check on (64)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=64,
        help="the most images one request may carry: the tail server's cap and Triton's "
        "max_batch_size (64)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Map the options to :mod:`isplit.deploy.export_job`'s calls and print the export."""
    from isplit.deploy.export_job import export_analysis, export_run

    analysis = export_analysis(args.analysis, args.bottleneck)
    own_model = analysis is not None and args.model is None and args.weights is None
    m = export_run(
        args.out,
        analysis=analysis,
        model=None if own_model else model_from_args(args),
        point=args.point,
        bottleneck=args.bottleneck,
        allow_unlearned=args.allow_unlearned,
        name=args.name,
        data=args.data,
        split=args.split,
        data_root=args.data_root,
        check_images=args.check_images,
        max_batch=args.max_batch,
        on_note=lambda note: print(f"isplit: note: {note}", file=sys.stderr),
    )
    _print_export(m, args.out)
    return 0


def _print_export(m, out) -> None:
    """Print what the export ``m`` wrote to ``out``: its cut, its checks, accuracy and files."""
    from isplit.checks import from_json, warn
    from isplit.deploy.export_job import accuracy_line
    from isplit.deploy.manifest import INT8_HEADER_BYTES

    c = m.checks
    shape = "x".join(map(str, m.transmitted_shape))
    if m.transmitted_layout:
        from isplit.graph.layout import Layout

        shape += f" ({Layout.from_json(m.transmitted_layout).describe()})"
    what = "8-bit code of the bottleneck" if m.bottleneck else "activation"
    int8_bytes = m.transmitted_numel + INT8_HEADER_BYTES
    print(
        f"exported {m.model['model']} cut after {m.point}: the {what} {shape} crosses the link "
        f"({4 * m.transmitted_numel} bytes float32, {int8_bytes} as 8-bit)"
    )
    diffs = ", ".join(
        f"{part} {c[f'{key}_max_abs_diff']:.2e}"
        for part, key in (("head", "head"), ("tail", "tail"), ("tail int8", "tail_int8"),
                          ("end to end", "end_to_end"))
    )  # fmt: skip
    print(
        f"checked with onnxruntime on {c['inputs']}: max abs diff {diffs} (against the "
        f"{c['reference']}); its predictions agree with the unsplit network's on "
        f"{c['agreement']:.1%}, "
        f"{c['agreement_int8']:.1%} with 8 bits"
    )
    line = accuracy_line(m)
    if line:
        print(line)
    warn(from_json(c.get("self_checks")))
    print(
        f"wrote {out}: head.onnx, tail.onnx, tail_int8.onnx, {m.pytorch['head']['file']}, "
        f"{m.pytorch['tail']['file']}, manifest.json, triton/{m.name}, triton/{m.int8_name}"
    )
    print(f"serve the tail with: isplit serve {out}")
