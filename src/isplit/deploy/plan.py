"""Plan the split against a link and a latency budget.

For every admissible point of an analysis run, the end-to-end latency of one image is

    head time on the device + request bytes / bandwidth + round trip + tail time on the server

where the request bytes are the HTTP body the client sends (the transmitted tensor, 8-bit by
default, in the Open Inference Protocol's binary form: :func:`isplit.deploy.client.request_bytes`).
Head and tail times are measured on this machine (median of repeated runs at batch 1) or derived
from the point's FLOPs and a given speed (``--device-speed 5GFLOPS``). Beside latency and bytes
each point has a score: its CUI, or with ``score="probe"`` the held-out accuracy of the
analysis's linear probe (the ``probe`` predictor: ``isplit analyze --predictors probe``). The
plan lists the Pareto front over (latency, bytes, score) and recommends the point with the
highest score within the budgets (``max_latency``, ``max_bytes``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isplit.analysis import Analysis
from isplit.errors import IsplitError
from isplit.results import RunResult
from isplit.runfolder import RunFolder
from isplit.units import (  # noqa: F401  (re-exported: where they were defined)
    parse_bandwidth,
    parse_duration,
    parse_size,
    parse_speed,
)

PARTS = ("head", "link", "rtt", "tail")
SCORES = ("cui", "probe")

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


@dataclass
class Plan(RunResult):
    """``plan.json``: the fields in the order they are written."""

    FILE = RunFolder.PLAN
    WHAT = "plan"

    run: str  # the analysis run planned over
    model: str
    link: dict  # bandwidth_bytes_per_s, rtt_ms
    device_speed_flops: float | None  # None: measured on this machine
    server_speed_flops: float | None
    times: str  # how head and tail times were found
    quantize: bool  # 8-bit tensors on the link
    score: str  # cui or probe
    budgets: dict  # max_latency_ms, max_bytes
    points: list[dict]  # one row per admissible point: bytes, parts of the latency, score, marks
    pareto: list[str]
    recommended: str | None
    reason: str
    baselines: dict  # all on the device, all on the server

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``plan.json`` and ``plan.png`` into ``out``."""
        from isplit.report.figures import plot_plan

        path = self.write_json(out)
        plot_plan(self.to_json(), RunFolder(out) / RunFolder.PLAN_PNG)
        return path

    def table(self) -> str:
        """The plan as text: one row per point, Pareto points and the recommendation marked."""
        label = "log10 CUI" if self.score == "cui" else "probe acc"
        rows = [
            f"{'point':<26}{'bytes':>9}{'head ms':>9}{'link ms':>9}{'rtt ms':>8}{'tail ms':>9}"
            f"{'total ms':>10}{label:>11}  "
        ]
        for r in self.points:
            s = r["score"]
            shown = (np.log10(s) if s > 0 else float("-inf")) if self.score == "cui" else s
            marks = (
                ("recommended", r["name"] == self.recommended),
                ("pareto", r["pareto"]),
                ("over-budget", not r["within_budget"]),
            )
            rows.append(
                f"{r['name']:<26}{r['bytes']:>9}{r['head_ms']:>9.2f}{r['link_ms']:>9.2f}"
                f"{r['rtt_ms']:>8.1f}{r['tail_ms']:>9.2f}{r['total_ms']:>10.2f}{shown:>11.3f}  "
                + " ".join(m for m, on in marks if on)
            )
        b = self.baselines
        rows.append(
            f"reference: all on the device {b['device_only_ms']:.2f} ms; all on the server "
            f"{b['server_only_ms']:.2f} ms (the 8-bit image, {b['server_only_bytes']} bytes)"
        )
        rec = self.recommended
        rows.append(f"recommended: {rec} ({self.reason})" if rec else self.reason)
        return "\n".join(rows)


def _scores(analysis: Analysis, run: Path, score: str) -> dict[str, float]:
    """Each admissible point's score: its CUI, or the held-out accuracy of the analysis's
    linear probe (the ``probe`` predictor), where the run has one."""
    if score not in SCORES:
        raise IsplitError(f"--score must be one of {', '.join(SCORES)}, not {score!r}")
    if score not in analysis.predictor_names:
        raise IsplitError(
            f"--score {score} needs a run analysed with the {score} predictor; {run} has "
            f"{', '.join(analysis.predictor_names)}: rerun `isplit analyze --predictors {score} "
            f"--out {run}`, or use --score cui"
        )
    values = analysis.curve(score)
    return {
        p.name: float(v) for p, v in zip(analysis.points, values) if p.admissible and np.isfinite(v)
    }


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
    out: str | Path | None = None,
) -> Plan:
    """The plan for analysis run ``run`` (see the module docstring); written to ``out``
    (``plan.json``, ``plan.png``) when given. Speeds in FLOP/s (None: measure on this
    machine), ``max_latency`` in seconds, ``max_bytes`` per request body."""
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
    total_flops = analysis.total_flops or 0
    if (device_speed is not None or server_speed is not None) and not analysis.total_flops:
        raise IsplitError(f"{run} does not record the model's FLOPs; rerun `isplit analyze`")
    measured: dict[str, tuple[float, float]] = {}
    whole_s = 0.0
    if device_speed is None or server_speed is None:
        model = analysis.load_model().model
        names = [p.name for p in points]
        measured, whole_s = measure_parts(model, input_shape, names, repeats, threads)

    rows = _rows(
        points, scores, measured, (device_speed, server_speed), total_flops, link, quantize
    )
    best = _mark(rows, max_latency, max_bytes)
    input_bytes = request_bytes(input_shape, quantize=True)  # all on the server: the 8-bit image
    server_only = latency(0.0, input_bytes, _seconds(server_speed, total_flops, whole_s), link)
    plan = Plan(
        run=str(run),
        model=analysis.model,
        link={"bandwidth_bytes_per_s": link.bandwidth, "rtt_ms": 1e3 * link.rtt},
        device_speed_flops=device_speed,
        server_speed_flops=server_speed,
        times=_times(measured, repeats, threads),
        quantize=quantize,
        score=score,
        budgets={
            "max_latency_ms": None if max_latency is None else 1e3 * max_latency,
            "max_bytes": max_bytes,
        },
        points=rows,
        pareto=[r["name"] for r in rows if r["pareto"]],
        recommended=None if best is None else best["name"],
        reason=_reason(best, rows, max_latency, max_bytes),
        baselines={
            "device_only_ms": 1e3 * _seconds(device_speed, total_flops, whole_s),
            "server_only_ms": 1e3 * server_only["total"],
            "server_only_bytes": input_bytes,
        },
    )
    if out is not None:
        plan.save(out)
    return plan


def _seconds(speed: float | None, flops: float, measured_s: float) -> float:
    """A part's time: as measured, or its FLOPs at the given speed."""
    return measured_s if speed is None else flops / speed


def _rows(
    points: list,
    scores: dict[str, float],
    measured: dict[str, tuple[float, float]],
    speeds: tuple[float | None, float | None],
    total_flops: float,
    link: Link,
    quantize: bool,
) -> list[dict]:
    """One row per point: the request's bytes, the latency and its parts, the score."""
    from isplit.deploy.client import request_bytes

    device_speed, server_speed = speeds
    rows = []
    for p in points:
        m_head, m_tail = measured.get(p.name, (0.0, 0.0))
        head_s = _seconds(device_speed, p.head_flops, m_head)
        tail_s = _seconds(server_speed, total_flops - p.head_flops, m_tail)
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
    return rows


def _mark(rows: list[dict], max_latency: float | None, max_bytes: int | None) -> dict | None:
    """Mark each row as on the Pareto front or not, and within the budgets or not; the row to
    recommend (the highest score within the budgets, the faster of equals), if any."""
    front = pareto([r["total_ms"] for r in rows], [r["bytes"] for r in rows],
                   [r["score"] for r in rows])  # fmt: skip
    for r, f in zip(rows, front):
        r["pareto"] = f
        r["within_budget"] = (max_latency is None or r["total_ms"] <= 1e3 * max_latency) and (
            max_bytes is None or r["bytes"] <= max_bytes
        )
    within = [r for r in rows if r["within_budget"]]
    return max(within, key=lambda r: (r["score"], -r["total_ms"]), default=None)


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
