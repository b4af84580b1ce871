"""Plan the split against a link and a latency budget.

The candidates are every admissible point of an analysis run and the two ways of not splitting:
all on the device (nothing sent) and all on the server (the 8-bit image sent). For each, the
end-to-end latency of one image is

    head time on the device + request bytes / bandwidth + round trip + tail time on the server

where the request bytes are the HTTP body the client sends (the transmitted tensor, 8-bit by
default, in the Open Inference Protocol's binary form: :func:`isplit.deploy.client.request_bytes`;
at a point given as an export, what the export sends: its bottleneck's code). All on the device
sends nothing and waits for no round trip: a split point whose head is nearly the whole network
is still a round trip and a transfer slower. Head and tail times are measured on this machine
(median of repeated runs at batch 1) or derived from the part's FLOPs and a given speed
(``--device-speed 5GFLOPS``). Each candidate has a score (:mod:`isplit.deploy.scores`: the
validated accuracy, the run's selection predictor or CUI); not splitting loses nothing and ranks
first. A row's bytes, times and score describe one configuration: scored by validated accuracy, a
validated point is the split with its trained bottleneck (the code sent, the encoder in the head,
the decoder in the tail), and a point not validated is the plain split with no score (its
accuracy not measured: on no Pareto front, never recommended). The plan lists the Pareto
front over (latency, bytes, score) and recommends the candidate with the highest score within
the budgets (``max_latency``, ``max_bytes``), the faster of equals: not splitting whenever one
of the two ways meets the budgets.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from isplit.analysis import Analysis
from isplit.checks import to_json
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
SERVER, DEVICE = "all on the server", "all on the device"

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
    *,
    bottlenecks: dict[str, nn.Module] | None = None,
    leaf_modules: Sequence[str] = (),
) -> tuple[dict[str, tuple[float, float]], float]:
    """``({point: (head_s, tail_s)}, whole_model_s)`` at batch 1 on the CPU: medians, with
    ``threads`` torch threads (default: torch's). A point with one of ``bottlenecks`` (an
    encoder and a decoder) is timed with it: its encoder ends the head, its decoder starts the
    tail. ``leaf_modules``: those the analysis traced as one node (its points are cuts of that
    graph)."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise IsplitError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    try:
        return _measure(model, input_shape, points, repeats, bottlenecks or {}, leaf_modules)
    finally:
        torch.set_num_threads(before)


def _measure(model, input_shape, points, repeats, bottlenecks, leaf_modules):
    from isplit.graph import ModelGraph

    graph = ModelGraph(model, input_shape, "all", leaf_modules)
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    fns: list[Callable[[], object]] = [lambda: model(x)]
    with torch.inference_mode():
        for name in points:
            head, tail = graph.split(name)
            if name in bottlenecks:
                b = bottlenecks[name]
                head, tail = nn.Sequential(head, b.encoder), nn.Sequential(b.decoder, tail)
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
    times: str  # where head and tail times come from
    quantize: bool  # 8-bit tensors on the link
    score: str  # validated, cui or a predictor's name
    score_label: str  # the score's column label
    score_source: str  # where the scores come from, in words
    budgets: dict  # max_latency_ms, max_bytes
    exports: list[str]  # the export folders whose points send what they export
    points: list[dict]  # one row per candidate: bytes, parts of the latency, score, marks
    pareto: list[str]
    recommended: str | None
    reason: str
    checks: list[dict] = field(default_factory=list)  # isplit.checks.Check records

    def table(self) -> str:
        """The plan as text: where scores and times come from, one row per candidate (Pareto
        points, the over-budget and the recommendation marked), the recommendation."""
        from isplit.texttable import text_table

        header = ["point", "bytes", "head ms", "link ms", "rtt ms", "tail ms", "total ms",
                  self.score_label, ""]  # fmt: skip
        cells = []
        for r in self.points:
            if r["score"] is not None:
                shown = f"{r['score']:.4g}"
            else:
                shown = "not measured" if r.get("not_measured") else "lossless"
            marks = (
                ("recommended", r["name"] == self.recommended),
                ("pareto", r["pareto"]),
                ("over-budget", not r["within_budget"]),
                ("bottleneck", r.get("bottleneck") and not r.get("exported")),
                ("exported" + (" bottleneck" if r.get("bottleneck") else ""), r.get("exported")),
                ("did not learn", r.get("learned") is False),
            )
            cells.append(
                [r["name"], str(r["bytes"]), f"{r['head_ms']:.2f}", f"{r['link_ms']:.2f}",
                 f"{r['rtt_ms']:.1f}", f"{r['tail_ms']:.2f}", f"{r['total_ms']:.2f}", shown,
                 " ".join(m for m, on in marks if on)]
            )  # fmt: skip
        rec = self.recommended
        return "\n".join(
            [
                f"score: {self.score_source}",
                f"times: {self.times}",
                text_table(header, cells),
                f"recommended: {rec} ({self.reason})" if rec else self.reason,
            ]
        )


def make_plan(
    run: str | Path,
    link: Link,
    *,
    device_speed: float | None = None,
    server_speed: float | None = None,
    max_latency: float | None = None,
    max_bytes: int | None = None,
    score: str = "best",
    quantize: bool = True,
    repeats: int = 20,
    threads: int | None = None,
    exports: Sequence[str | Path] = (),
    analysis: Analysis | None = None,
    out: str | Path | None = None,
) -> Plan:
    """The plan for analysis run ``run`` (see the module docstring); written to ``out``
    (``plan.json``; ``isplit plan`` draws ``plan.png`` beside it) when given. Speeds in FLOP/s
    (None: measure on this machine), ``max_latency`` in seconds, ``max_bytes`` per request body;
    ``score``: ``best``, ``validated``, ``cui`` or a predictor of the run; ``exports``: export
    folders of the run's network, whose points are costed at what they send."""
    from isplit.deploy.scores import exported_points, plan_scores

    run = Path(run)
    analysis = analysis or Analysis.load(run)
    if repeats < 1:
        raise IsplitError(f"--repeats must be at least 1, not {repeats}")
    scores = plan_scores(analysis, run, score, quantize)
    kept = set(scores.values) | set(scores.unscored)
    points = [p for p in analysis.points if p.name in kept]
    if not points:
        raise IsplitError(
            f"{run} has no admissible point with a {scores.source} score to plan over: "
            "use another --score"
        )
    input_shape = tuple(analysis.settings.get("input_shape") or ())
    if not input_shape:
        raise IsplitError(f"{run} does not record its input shape; rerun `isplit analyze`")
    if (device_speed is not None or server_speed is not None) and not analysis.total_flops:
        raise IsplitError(f"{run} does not record the model's FLOPs; rerun `isplit analyze`")
    exported = exported_points(exports, analysis, scores)
    bottlenecks = _bottlenecks(points, scores)
    measured: dict[str, tuple[float, float]] = {}
    whole_s = 0.0
    if device_speed is None or server_speed is None:
        model = analysis.load_model().model
        names = [p.name for p in points]
        measured, whole_s = measure_parts(model, input_shape, names, repeats, threads,
                                          bottlenecks=bottlenecks,
                                          leaf_modules=analysis.leaf_modules)  # fmt: skip
    cost = _Costs(link, (device_speed, server_speed), analysis.total_flops or 0, whole_s, quantize)
    rows = _rows(cost, input_shape, points, scores, measured, exported, bottlenecks)
    best = _mark(rows, max_latency, max_bytes)
    plan = Plan(
        run=str(run),
        model=analysis.model,
        link={"bandwidth_bytes_per_s": link.bandwidth, "rtt_ms": 1e3 * link.rtt},
        device_speed_flops=device_speed,
        server_speed_flops=server_speed,
        times=_times(device_speed, server_speed, repeats, threads),
        quantize=quantize,
        score=scores.source,
        score_label=scores.label,
        score_source=scores.description,
        budgets={
            "max_latency_ms": None if max_latency is None else 1e3 * max_latency,
            "max_bytes": max_bytes,
        },
        exports=[e.folder for e in exported.values()],
        points=rows,
        pareto=[r["name"] for r in rows if r["pareto"]],
        recommended=None if best is None else best["name"],
        reason=_reason(best, rows, max_latency, max_bytes),
        checks=to_json(scores.checks),
    )
    if out is not None:
        plan.save(out)
    return plan


def _rows(cost, input_shape, points, scores, measured, exported, bottlenecks) -> list[dict]:
    """The costed rows: server only, a split at each of ``points``, then device only."""
    learned = next((c for c in scores.checks if c.name == "bottlenecks_learned"), None)
    unlearned = set(learned.values["not_learned"]) if learned is not None else set()
    rows = [cost.server_only(input_shape, scores.unsplit)]
    for p in points:
        row = cost.split(p, scores.values.get(p.name), measured, exported.get(p.name),
                         bottlenecks.get(p.name))  # fmt: skip
        if p.name in scores.unscored:
            row["not_measured"] = True
        if p.name in bottlenecks:
            row["learned"] = p.name not in unlearned
        rows.append(row)
    rows.append(cost.device_only(scores.unsplit))
    return rows


def _bottlenecks(points, scores) -> dict[str, nn.Module]:
    """The bottleneck of each validated point, as validation trained it (its ratio and halving;
    the weights do not change its cost): a validated row is the split with it."""
    from isplit.validation.bottleneck import Bottleneck

    if scores.bottleneck is None:
        return {}
    ratio, halve = scores.bottleneck["ratio"], scores.bottleneck["halve"]
    return {
        p.name: Bottleneck(tuple(p.shape), ratio, halve, p.layout).eval()
        for p in points
        if p.name in scores.values
    }


def bottleneck_flops(bottleneck: nn.Module, shape: Sequence[int]) -> tuple[int, int]:
    """FLOPs of a bottleneck's encoder and decoder at batch 1, on a tensor of ``shape`` (the
    point's, with or without the batch of 1), counted as the analysis counts the network's."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = tuple(shape)
    x = torch.zeros(shape if len(shape) and shape[0] == 1 else (1, *shape))
    out = []
    with torch.inference_mode():
        for part in (bottleneck.encoder, bottleneck.decoder):
            counter = FlopCounterMode(display=False)
            with counter:
                x = part(x)
            out.append(int(counter.get_total_flops()))
    return out[0], out[1]


@dataclass(frozen=True)
class _Costs:
    """Each candidate's row: bytes sent, latency and its parts, score."""

    link: Link
    speeds: tuple[float | None, float | None]  # device, server; None: measured
    total_flops: float
    whole_s: float  # the whole network, measured
    quantize: bool

    def _seconds(self, where: int, flops: float, measured_s: float) -> float:
        """A part's time: as measured, or its FLOPs at the given speed."""
        speed = self.speeds[where]
        return measured_s if speed is None else flops / speed

    def _row(self, name, kind, shape, nbytes, head_flops, head_s, tail_s, score, link=None):
        lat = latency(head_s, nbytes, tail_s, link or self.link)
        return {
            "name": name,
            "kind": kind,
            "shape": list(shape),
            "bytes": nbytes,
            "head_flops": head_flops,
            **{f"{k}_ms": 1e3 * v for k, v in lat.items()},
            "score": score,
        }

    def split(self, p, score: float | None, measured: dict, exported=None, bottleneck=None) -> dict:
        """A split point's row: the plain split, or with ``bottleneck`` (its encoder in the
        head, its decoder in the tail, its code sent); ``exported``: what its export sends."""
        from isplit.deploy.client import request_bytes

        m_head, m_tail = measured.get(p.name, (0.0, 0.0))
        head_flops, tail_flops = p.head_flops, self.total_flops - p.head_flops
        shape = tuple(p.shape[1:])
        if bottleneck is not None:
            encoder, decoder = bottleneck_flops(bottleneck, p.shape)
            head_flops, tail_flops = head_flops + encoder, tail_flops + decoder
            shape = tuple(bottleneck.code_shape)
        if exported is not None:
            shape = exported.shape
        head_s = self._seconds(0, head_flops, m_head)
        tail_s = self._seconds(1, tail_flops, m_tail)
        row = self._row(p.name, "split", shape, request_bytes(shape, self.quantize),
                        head_flops, head_s, tail_s, score)  # fmt: skip
        if bottleneck is not None:
            row["bottleneck"] = True
        if exported is not None:
            row.update(exported=exported.folder, bottleneck=exported.bottleneck)
        return row

    def server_only(self, input_shape, score: float | None) -> dict:
        """All on the server: the 8-bit image sent (whatever ``quantize``: it is the image)."""
        from isplit.deploy.client import request_bytes

        nbytes = request_bytes(input_shape, quantize=True)
        tail_s = self._seconds(1, self.total_flops, self.whole_s)
        return self._row(SERVER, "server", input_shape, nbytes, 0, 0.0, tail_s, score)

    def device_only(self, score: float | None) -> dict:
        """All on the device: nothing sent, no round trip."""
        head_s = self._seconds(0, self.total_flops, self.whole_s)
        local = Link(self.link.bandwidth, 0.0)
        return self._row(DEVICE, "device", (), 0, self.total_flops, head_s, 0.0, score, local)


def _mark(rows: list[dict], max_latency: float | None, max_bytes: int | None) -> dict | None:
    """Mark each row as on the Pareto front or not, and within the budgets or not; the row to
    recommend (not splitting, else the highest score, within the budgets; the faster of
    equals), if any."""
    rank = [math.inf if r["kind"] != "split" else r["score"] for r in rows]
    ranked = [i for i, s in enumerate(rank) if s is not None]  # a split not measured: no rank
    front = pareto(*([[r[k] for i, r in enumerate(rows) if i in ranked]
                      for k in ("total_ms", "bytes")]), [rank[i] for i in ranked])  # fmt: skip
    on_front = {i for i, f in zip(ranked, front) if f}
    for i, r in enumerate(rows):
        r["pareto"] = i in on_front
        r["within_budget"] = (max_latency is None or r["total_ms"] <= 1e3 * max_latency) and (
            max_bytes is None or r["bytes"] <= max_bytes
        )
    within = [(rank[i], rows[i]) for i in ranked if rows[i]["within_budget"]]
    return max(within, key=lambda sr: (sr[0], -sr[1]["total_ms"]), default=(None, None))[1]


def _times(device_speed, server_speed, repeats: int, threads: int | None) -> str:
    """Where head and tail times come from, in words."""
    n = torch.get_num_threads() if threads is None else threads
    here = f"measured on this machine ({_cpu()}, {n} torch thread(s), batch 1, median of {repeats})"
    head = (
        f"{here}, as if it were the device (give --device-speed for a real device)"
        if device_speed is None
        else f"from their FLOPs at the given device speed {device_speed / 1e9:g} GFLOPS"
    )
    tail = (
        f"{here if device_speed is not None else 'measured here too'}: the server assumed as "
        "fast as this machine (give --server-speed)"
        if server_speed is None
        else f"from their FLOPs at the given server speed {server_speed / 1e9:g} GFLOPS"
    )
    return f"head {head}; tail {tail}"


def _cpu() -> str:
    """This machine's processor, as the system names it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [x for x in lines if x.startswith("model name")]
    except OSError:
        names = []
    name = names[0].split(":", 1)[1].strip() if names else platform.processor()
    return f"CPU {name}" if name else "CPU"


def _reason(best: dict | None, rows: list[dict], max_latency, max_bytes) -> str:
    """Why the recommendation, or why none."""
    server, device = rows[0], rows[-1]
    budget = [f"latency <= {1e3 * max_latency:g} ms"] if max_latency is not None else []
    budget += [f"<= {max_bytes} bytes"] if max_bytes is not None else []
    within = f"within {' and '.join(budget)}" if budget else "with no budget"
    ways = (f"all on the device {device['total_ms']:.1f} ms, all on the server "
            f"{server['total_ms']:.1f} ms with {server['bytes']} bytes")  # fmt: skip
    if best is None:
        fastest = min(rows, key=lambda r: r["total_ms"])
        smallest = min(rows[1:-1], key=lambda r: r["bytes"])
        return (
            f"no point meets the budgets, not splitting included ({ways}): the fastest is "
            f"{fastest['name']} at {fastest['total_ms']:.1f} ms, the smallest split "
            f"{smallest['name']} with {smallest['bytes']} bytes"
        )
    if best["kind"] == "split":
        return f"highest score {within}; not splitting does not meet the budgets ({ways})"
    other = device if best is server else server
    if not other["within_budget"]:
        if not any(r["within_budget"] for r in rows if r is not best):
            return f"only {best['name']} meets the budgets ({' and '.join(budget)}): {ways}"
        return (
            f"not splitting loses nothing; {best['name']} meets the budgets "
            f"({' and '.join(budget)}) where {other['name']} does not ({ways})"
        )
    return f"not splitting loses nothing; {best['name']} is the faster of the two {within} ({ways})"
