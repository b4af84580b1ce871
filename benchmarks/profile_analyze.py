"""Where does ``isplit.analyze`` spend its time? A profile of its steady state, for the next
step on the GPU gap of ``benchmarks/scale.py`` (README, "Speed").

    python benchmarks/profile_analyze.py --device cuda --model resnet50 --precision bf16 \
        --out profile/                        # about 1 minute on an H200

Runs ``analyze`` on the same synthetic ``Dataset`` as ``scale.py --gpu`` once to warm up, then
once under ``torch.profiler`` (CPU, and CUDA where the device is a GPU), and prints one JSON
object: ``analyze``'s own timing (images/s, the share of its loop spent waiting for the loader),
and the top operators by self CPU time and by self device time. ``--out`` also receives
``trace.json`` (open in https://ui.perfetto.dev or chrome://tracing) and the two tables as text.

To try it on a CPU: ``--device cpu --model resnet18 --size 32 --images 64 --batch-size 16``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scale.py, throughput.py beside this

from isplit.analysis import analyze  # noqa: E402
from scale import SyntheticImages  # noqa: E402
from throughput import build_model  # noqa: E402


def _top(prof, key: str, n: int) -> list[dict]:
    """The ``n`` operators with the most self time by ``key`` (``cpu`` or ``device``)."""
    events = prof.key_averages()
    attr = "self_cpu_time_total" if key == "cpu" else "self_device_time_total"
    rows = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:n]
    return [
        {"op": e.key, "calls": e.count, f"self_{key}_ms": round(getattr(e, attr, 0) / 1000, 2)}
        for e in rows
        if getattr(e, attr, 0) > 0
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="resnet50", help="torchvision name (random weights)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="default: analyze's")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="folder for trace.json and the tables")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    model = build_model(args.model)
    data = SyntheticImages(args.images, (3, args.size, args.size))
    kw = {
        "batch_size": args.batch_size,
        "device": device,
        "precision": args.precision,
        "workers": args.workers,
        "progress": False,
        "predictors": "cui",  # the CUI pass alone (pca-probe, the default, costs more)
    }
    warm = SyntheticImages(2 * args.batch_size, (3, args.size, args.size))
    analyze(model, warm, **kw)  # CUDA context, cuDNN's choices, the workers' first start
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        result = analyze(model, data, **kw)
    doc = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "model": args.model,
        "precision": args.precision,
        "size": args.size,
        "batch_size": args.batch_size,
        "timing": result.timing,  # under the profiler: slower than without it
        "top_self_cpu": _top(prof, "cpu", args.top),
    }
    if device.type == "cuda":
        doc["top_self_device"] = _top(prof, "device", args.top)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(out / "trace.json"))
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=args.top)
        (out / "ops.txt").write_text(table)
    print(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
