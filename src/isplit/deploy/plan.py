"""Plan the split against a link and a latency budget.

For every admissible point of an analysis run, the end-to-end latency of one image is

    head time on the device + request bytes / bandwidth + round trip + tail time on the server

where the request bytes are the HTTP body the client sends (the transmitted tensor, 8-bit by
default, in the Open Inference Protocol's binary form: :func:`isplit.deploy.client.request_bytes`).
Head and tail times are measured on this machine (median of repeated runs at batch 1) or derived
from the point's FLOPs and a given speed (``--device-speed 5GFLOPS``). Beside latency and bytes
each point has a score: its CUI, or with ``score="probe"`` on a validated run the linear-probe
accuracy. The plan lists the Pareto front over (latency, bytes, score) and recommends the point
with the highest score within the budgets (``max_latency``, ``max_bytes``).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isplit.analysis import Analysis
from isplit.errors import IsplitError
from isplit.io import read_json

PLAN_JSON, PLAN_PNG = "plan.json", "plan.png"
PARTS = ("head", "link", "rtt", "tail")
SCORES = ("cui", "probe")

# -- units -------------------------------------------------------------------------------------

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_PREFIX.update({"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4})
_BANDWIDTH = re.compile(rf"^{_NUMBER}\s*(?P<prefix>[kKMGT]i?)?(?P<unit>bit|b|B|byte)(?:/s|ps)$")
_DURATION = re.compile(rf"^{_NUMBER}\s*(?P<unit>ns|us|µs|ms|s|min)$")
_DURATIONS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_SIZE = re.compile(rf"^{_NUMBER}\s*(?:(?P<prefix>[kKMGT]i?)?(?P<unit>B|bytes?))?$")
_SPEED = re.compile(rf"^{_NUMBER}\s*(?:(?P<prefix>[kKMGT])?(?P<unit>FLOPS|FLOP/s|flops|flop/s))?$")


def _match(pattern: re.Pattern, text, what: str, examples: str) -> re.Match:
    m = pattern.match(str(text).strip())
    if m is None:
        raise IsplitError(f"{what} {text!r} is not understood; write it like {examples}")
    return m


def parse_bandwidth(text: str) -> float:
    """Bytes per second from ``10Mbit/s``, ``10 Mbps``, ``1.5MB/s``, ``100kB/s``, ``1GiB/s``
    (``b``/``bit``: bits, ``B``: bytes; k, M, G decimal, Ki, Mi, Gi binary)."""
    m = _match(_BANDWIDTH, text, "bandwidth", "10Mbit/s, 10Mbps, 1.5MB/s or 100kB/s")
    value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    value /= 8.0 if m["unit"] in ("bit", "b") else 1.0
    if not value > 0 or not math.isfinite(value):
        raise IsplitError(f"bandwidth {text!r} must be more than 0")
    return value


def parse_duration(text: str) -> float:
    """Seconds from ``20ms``, ``1.5 s``, ``300us``, ``0.5min``."""
    m = _match(_DURATION, text, "duration", "20ms, 1.5s or 300us")
    value = float(m["num"]) * _DURATIONS[m["unit"]]
    if not math.isfinite(value):
        raise IsplitError(f"duration {text!r} is too large")
    return value


def parse_size(text: str | int) -> int:
    """Bytes from ``4096``, ``64kB``, ``1.5MB``, ``2MiB``."""
    m = _match(_SIZE, text, "size", "4096, 64kB, 1.5MB or 2MiB")
    value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    if not math.isfinite(value) or value < 1:
        raise IsplitError(f"size {text!r} must be at least 1 byte")
    return int(round(value))


def parse_speed(text: str) -> float | None:
    """FLOP/s from ``5GFLOPS``, ``500 MFLOPS``, ``1.2TFLOPS`` or a bare number of GFLOPS;
    None for ``measured`` (time the parts on this machine)."""
    if str(text).strip().lower() == "measured":
        return None
    m = _match(_SPEED, text, "speed", "measured, 5GFLOPS, 500MFLOPS or 5 (GFLOPS)")
    if m["unit"] is None:  # a bare number: GFLOPS
        value = float(m["num"]) * 1e9
    else:
        value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    if not value > 0 or not math.isfinite(value):
        raise IsplitError(f"speed {text!r} must be more than 0")
    return value


# -- the latency model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A network link: bandwidth in bytes per second, round-trip time in seconds."""

    bandwidth: float
    rtt: float

    def transfer(self, nbytes: int) -> float:
        return nbytes / self.bandwidth


def latency(head_s: float, nbytes: int, tail_s: float, link: Link) -> dict[str, float]:
    """The end-to-end latency of one image and its parts, in seconds."""
    parts = {"head": head_s, "link": link.transfer(nbytes), "rtt": link.rtt, "tail": tail_s}
    return {**parts, "total": sum(parts.values())}


def pareto(latency_s: Sequence[float], nbytes: Sequence[int], score: Sequence[float]) -> list[bool]:
    """Which points no other point beats: as fast or faster, as few bytes or fewer, as high a
    score or higher, and strictly better in one of them."""
    rows = list(zip(latency_s, nbytes, score))
    front = []
    for i, (t, b, s) in enumerate(rows):
        dominated = any(
            t2 <= t and b2 <= b and s2 >= s and (t2 < t or b2 < b or s2 > s)
            for j, (t2, b2, s2) in enumerate(rows)
            if j != i
        )
        front.append(not dominated)
    return front


def median_times(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function over ``repeats`` runs, in seconds. The functions run
    round-robin after one warm-up each, so that background load hits all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def measure_parts(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    points: Sequence[str],
    repeats: int,
    threads: int | None = None,
) -> tuple[dict[str, tuple[float, float]], float]:
    """``({point: (head_s, tail_s)}, whole_model_s)`` at batch 1 on the CPU: medians, with
    ``threads`` torch threads (default: torch's)."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise IsplitError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    try:
        return _measure(model, input_shape, points, repeats)
    finally:
        torch.set_num_threads(before)


def _measure(model, input_shape, points, repeats):
    from isplit.graph import ModelGraph

    graph = ModelGraph(model, input_shape, granularity="all")
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    fns: list[Callable[[], object]] = [lambda: model(x)]
    with torch.inference_mode():
        for name in points:
            head, tail = graph.split(name)
            z = head(x)
            fns += [lambda h=head: h(x), lambda t=tail, z=z: t(z)]
        times = median_times(fns, repeats)
    parts = {name: (times[1 + 2 * i], times[2 + 2 * i]) for i, name in enumerate(points)}
    return parts, times[0]


# -- the plan ------------------------------------------------------------------------------------


def _scores(analysis: Analysis, run: Path, score: str) -> dict[str, float]:
    if score == "cui":
        return {p.name: float(c) for p, c in zip(analysis.points, analysis.cui) if p.admissible}
    if score == "probe":
        path = run / "validation.json"
        if not path.is_file():
            raise IsplitError(
                f"--score probe needs a validated run: {path} is missing; run `isplit validate "
                f"--analysis {run}` first, or use --score cui"
            )
        v = read_json(path)
        return {p["name"]: float(p["probe_accuracy"]) for p in v.get("points", [])}
    raise IsplitError(f"--score must be one of {', '.join(SCORES)}, not {score!r}")


def make_plan(
    run: str | Path,
    link: Link,
    *,
    device_speed: float | None = None,
    server_speed: float | None = None,
    max_latency: float | None = None,
    max_bytes: int | None = None,
    score: str = "cui",
    quantize: bool = True,
    repeats: int = 20,
    threads: int | None = None,
    analysis: Analysis | None = None,
) -> dict:
    """The plan for analysis run ``run`` (see the module docstring). Speeds in FLOP/s (None:
    measure on this machine), ``max_latency`` in seconds, ``max_bytes`` per request body."""
    from isplit.deploy.client import request_bytes

    run = Path(run)
    analysis = analysis or Analysis.load(run)
    if repeats < 1:
        raise IsplitError(f"--repeats must be at least 1, not {repeats}")
    scores = _scores(analysis, run, score)
    points = [p for p in analysis.points if p.name in scores]
    if not points:
        raise IsplitError(f"{run} has no admissible point with a {score} score to plan over")
    input_shape = tuple(analysis.settings.get("input_shape") or ())
    if not input_shape:
        raise IsplitError(f"{run} does not record its input shape; rerun `isplit analyze`")
    total_flops = analysis.total_flops
    if (device_speed is not None or server_speed is not None) and not total_flops:
        raise IsplitError(f"{run} does not record the model's FLOPs; rerun `isplit analyze`")
    measured: dict[str, tuple[float, float]] = {}
    whole_s = None
    if device_speed is None or server_speed is None:
        model = analysis.load_model().model
        names = [p.name for p in points]
        measured, whole_s = measure_parts(model, input_shape, names, repeats, threads)

    def on(speed: float | None, flops: float, measured_s: float) -> float:
        return measured_s if speed is None else flops / speed

    rows = []
    for p in points:
        m_head, m_tail = measured.get(p.name, (0.0, 0.0))
        head_s = on(device_speed, p.head_flops, m_head)
        tail_s = on(server_speed, (total_flops or 0) - p.head_flops, m_tail)
        nbytes = request_bytes(p.shape[1:], quantize)
        lat = latency(head_s, nbytes, tail_s, link)
        rows.append(
            {
                "name": p.name,
                "shape": list(p.shape[1:]),
                "bytes": nbytes,
                "head_flops": p.head_flops,
                **{f"{k}_ms": 1e3 * v for k, v in lat.items()},
                "score": scores[p.name],
            }
        )
    front = pareto([r["total_ms"] for r in rows], [r["bytes"] for r in rows],
                   [r["score"] for r in rows])  # fmt: skip
    for r, f in zip(rows, front):
        r["pareto"] = f
        r["within_budget"] = (max_latency is None or r["total_ms"] <= 1e3 * max_latency) and (
            max_bytes is None or r["bytes"] <= max_bytes
        )
    within = [r for r in rows if r["within_budget"]]
    best = max(within, key=lambda r: (r["score"], -r["total_ms"]), default=None)
    whole_device = on(device_speed, total_flops or 0, whole_s or 0.0)
    whole_server = on(server_speed, total_flops or 0, whole_s or 0.0)
    input_bytes = request_bytes(input_shape, quantize=True)
    return {
        "run": str(run),
        "model": analysis.model,
        "link": {"bandwidth_bytes_per_s": link.bandwidth, "rtt_ms": 1e3 * link.rtt},
        "device_speed_flops": device_speed,
        "server_speed_flops": server_speed,
        "times": _times(measured, repeats, threads),
        "quantize": quantize,
        "score": score,
        "budgets": {
            "max_latency_ms": None if max_latency is None else 1e3 * max_latency,
            "max_bytes": max_bytes,
        },
        "points": rows,
        "pareto": [r["name"] for r in rows if r["pareto"]],
        "recommended": None if best is None else best["name"],
        "reason": _reason(best, rows, max_latency, max_bytes),
        "baselines": {
            "device_only_ms": 1e3 * whole_device,
            "server_only_ms": 1e3 * latency(0.0, input_bytes, whole_server, link)["total"],
            "server_only_bytes": input_bytes,
        },
    }


def _times(measured: dict, repeats: int, threads: int | None) -> str:
    if not measured:
        return "from FLOPs and the given speeds"
    n = torch.get_num_threads() if threads is None else threads
    return f"measured on this machine (CPU, {n} thread(s), batch 1, median of {repeats})"


def _reason(best: dict | None, rows: list[dict], max_latency, max_bytes) -> str:
    if best is not None:
        budget = []
        if max_latency is not None:
            budget.append(f"latency <= {1e3 * max_latency:g} ms")
        if max_bytes is not None:
            budget.append(f"<= {max_bytes} bytes")
        where = f"within {' and '.join(budget)}" if budget else "over all points (no budget)"
        return f"highest score {where}"
    fastest = min(rows, key=lambda r: r["total_ms"])
    smallest = min(rows, key=lambda r: r["bytes"])
    return (
        f"no point meets the budgets: the fastest is {fastest['name']} at "
        f"{fastest['total_ms']:.1f} ms, the smallest {smallest['name']} with "
        f"{smallest['bytes']} bytes"
    )


def plan_table(plan: dict) -> str:
    """The plan as text: one row per point, Pareto points and the recommendation marked."""
    label = "log10 CUI" if plan["score"] == "cui" else "probe acc"
    rows = [
        f"{'point':<26}{'bytes':>9}{'head ms':>9}{'link ms':>9}{'rtt ms':>8}{'tail ms':>9}"
        f"{'total ms':>10}{label:>11}  "
    ]
    for r in plan["points"]:
        s = r["score"]
        shown = (np.log10(s) if s > 0 else float("-inf")) if plan["score"] == "cui" else s
        mark = " ".join(
            m
            for m, on in (
                ("recommended", r["name"] == plan["recommended"]),
                ("pareto", r["pareto"]),
                ("over-budget", not r["within_budget"]),
            )
            if on
        )
        rows.append(
            f"{r['name']:<26}{r['bytes']:>9}{r['head_ms']:>9.2f}{r['link_ms']:>9.2f}"
            f"{r['rtt_ms']:>8.1f}{r['tail_ms']:>9.2f}{r['total_ms']:>10.2f}{shown:>11.3f}  {mark}"
        )
    b = plan["baselines"]
    rows.append(
        f"reference: all on the device {b['device_only_ms']:.2f} ms; all on the server "
        f"{b['server_only_ms']:.2f} ms (the 8-bit image, {b['server_only_bytes']} bytes)"
    )
    rec = plan["recommended"]
    rows.append(f"recommended: {rec} ({plan['reason']})" if rec else plan["reason"])
    return "\n".join(rows)


def plot_plan(plan: dict, path: str | Path) -> None:
    """``plan.png``: latency stacked by part over the points (Pareto points starred, the
    recommendation in bold, the latency budget dashed) above the score."""
    import matplotlib.pyplot as plt

    from isplit.report.figures import save_figure

    rows = plan["points"]
    x = np.arange(len(rows))
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(max(7, 0.45 * len(rows) + 3), 6.5), sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )  # fmt: skip
    bottom = np.zeros(len(rows))
    for part, color in zip(PARTS, ("#4c72b0", "#dd8452", "#bbbbbb", "#55a868")):
        values = np.array([r[f"{part}_ms"] for r in rows])
        ax.bar(x, values, bottom=bottom, color=color, label=part)
        bottom += values
    front = [i for i, r in enumerate(rows) if r["pareto"]]
    ax.plot(x[front], bottom[front] * 1.04, "k*", ms=9, label="Pareto front", linestyle="none")
    budget = plan["budgets"]["max_latency_ms"]
    if budget is not None:
        ax.axhline(budget, color="r", ls="--", lw=1, label=f"budget {budget:g} ms")
    ax.set_ylabel("latency per image (ms)")
    link = plan["link"]
    ax.set_title(
        f"{plan['model']}: {8 * link['bandwidth_bytes_per_s'] / 1e6:g} Mbit/s, "
        f"RTT {link['rtt_ms']:g} ms, {'8-bit' if plan['quantize'] else 'float32'} tensor"
    )
    ax.legend(fontsize=8, ncol=3)
    scores = np.array([r["score"] for r in rows])
    if plan["score"] == "cui":
        scores = np.log10(np.where(scores > 0, scores, np.nan))
    ax2.plot(x, scores, "o-", color="#8172b3")
    ax2.plot(x[front], scores[front], "k*", ms=9, linestyle="none")
    ax2.set_ylabel("log10 CUI" if plan["score"] == "cui" else "probe accuracy")
    ax2.set_xticks(x, [r["name"] for r in rows], rotation=60, ha="right", fontsize=8)
    for label, r in zip(ax2.get_xticklabels(), rows):
        if r["name"] == plan["recommended"]:
            label.set_fontweight("bold")
            label.set_color("r")
    fig.tight_layout()
    save_figure(fig, path)
