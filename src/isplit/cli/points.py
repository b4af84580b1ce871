"""`isplit points`: the valid split points of a model."""

from __future__ import annotations

import argparse
import json

from isplit.cli.options import (
    add_budget_args,
    add_model_args,
    model_from_args,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("points", help="list the valid split points of a model")
    # no --device (shapes and FLOPs come from a trace on the CPU) and no --mean / --std (they
    # change no shape, byte count or FLOP count)
    add_model_args(p, trace=True, runs=False, normalises=False)
    add_budget_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.analysis import restrict
    from isplit.graph import ModelGraph
    from isplit.graph.points import why_not_admissible
    from isplit.texttable import text_table

    loaded = model_from_args(args)
    pp = loaded.preprocess
    shape = (pp.channels, pp.size, pp.size)
    graph = ModelGraph(loaded.model, shape, args.granularity, leaf_modules=args.leaf_module or ())
    points = graph.points
    restrict(points, max_bytes=args.max_bytes, max_head_flops=args.max_head_flops)
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.name,
                    "input_shape": [pp.channels, pp.size, pp.size],
                    "total_flops": graph.total_flops,
                    "points": [p.to_json() for p in points],
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{loaded.name}: {len(points)} split points for input "
        f"{pp.channels}x{pp.size}x{pp.size} (model: {graph.total_flops / 1e6:.1f} MFLOPs)"
    )
    header = ["point", "op", "layout", "shape", "bytes", "head MFLOPs", "head params", "admissible"]
    rows = [
        [
            p.name,
            p.op,
            p.layout.describe() if p.layout.known else "unknown",
            "x".join(map(str, p.shape)),
            str(p.bytes),
            f"{p.head_flops / 1e6:.2f}",
            str(p.head_params),
            "yes" if p.admissible else f"no ({why_not_admissible(p)})",
        ]
        for p in points
    ]
    print(text_table(header, rows, left=3))
    return 0
