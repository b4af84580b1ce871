"""The latency plan: unit parsing, the latency model against hand-computed values, the Pareto
front, the recommendation under budgets, the command and the report section."""

import json

import numpy as np
import pytest

from isplit.analysis import Analysis
from isplit.cli import main
from isplit.deploy.plan import (
    Link,
    Plan,
    latency,
    make_plan,
    pareto,
    parse_bandwidth,
    parse_duration,
    parse_size,
    parse_speed,
)
from isplit.errors import IsplitError
from isplit.runfolder import FORMAT


@pytest.mark.parametrize(
    "text,bytes_per_s",
    [
        ("10Mbit/s", 1.25e6),
        ("10 Mbit/s", 1.25e6),
        ("10Mbps", 1.25e6),
        ("10Mb/s", 1.25e6),
        ("1.5MB/s", 1.5e6),
        ("1.5MBps", 1.5e6),
        ("100kB/s", 1e5),
        ("100KB/s", 1e5),
        ("2MiB/s", 2 * 1024**2),
        ("1Gbit/s", 1.25e8),
        ("800bit/s", 100.0),
        ("64B/s", 64.0),
        ("1e3kbit/s", 1.25e5),
    ],
)
def test_bandwidths_parse(text, bytes_per_s):
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize(
    "text", ["10", "10M", "fast", "10mbit/s", "10 Mbit", "-5Mbit/s", "0Mbit/s", "10Mbit/h", ""]
)
def test_bad_bandwidths_are_clear_errors(text):
    with pytest.raises(IsplitError, match="bandwidth"):
        parse_bandwidth(text)


@pytest.mark.parametrize(
    "text,seconds",
    [("20ms", 0.02), ("20 ms", 0.02), ("1.5s", 1.5), ("300us", 3e-4), ("300µs", 3e-4),
     ("0ms", 0.0), ("0.5min", 30.0), ("250ns", 2.5e-7)],
)  # fmt: skip
def test_durations_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["20", "20 sec", "ms", "-3ms", "20msec", "1h", "1e999s"])
def test_bad_durations_are_clear_errors(text):
    with pytest.raises(IsplitError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text,n",
    [("4096", 4096), ("64kB", 64000), ("1.5MB", 1500000), ("2MiB", 2 * 1024**2),
     ("10 bytes", 10), ("1KiB", 1024)],
)  # fmt: skip
def test_sizes_parse(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["0", "lots", "4 kbit", "0.2", "-1kB"])
def test_bad_sizes_are_clear_errors(text):
    with pytest.raises(IsplitError, match="size"):
        parse_size(text)


def test_speeds_parse():
    assert parse_speed("measured") is None and parse_speed("Measured") is None
    assert parse_speed("5") == 5e9  # a bare number is GFLOPS
    assert parse_speed("5GFLOPS") == 5e9 and parse_speed("500 MFLOPS") == 5e8
    assert parse_speed("1.2TFLOP/s") == pytest.approx(1.2e12) and parse_speed("7FLOPS") == 7
    for bad in ("quick", "0", "5 GHz", "-1GFLOPS"):
        with pytest.raises(IsplitError, match="speed"):
            parse_speed(bad)


def test_latency_is_head_plus_transfer_plus_round_trip_plus_tail():
    link = Link(parse_bandwidth("10Mbit/s"), parse_duration("20ms"))
    # 4 ms head, 125 000 bytes at 1.25 MB/s = 100 ms, 20 ms round trip, 6 ms tail.
    got = latency(0.004, 125_000, 0.006, link)
    assert got == pytest.approx(
        {"head": 0.004, "link": 0.1, "rtt": 0.02, "tail": 0.006, "total": 0.13}
    )
    assert latency(0.0, 0, 0.0, Link(1.0, 0.0))["total"] == 0.0


def test_pareto_front_by_hand():
    # (latency, bytes, score): c is dominated by a (slower, bigger, lower score); d only ties a
    # on latency and bytes but has a lower score; b is fastest; e has the best score.
    t = [10.0, 5.0, 12.0, 10.0, 30.0]
    b = [100, 200, 150, 100, 400]
    s = [0.5, 0.1, 0.4, 0.3, 0.9]
    assert pareto(t, b, s) == [True, True, False, False, True]
    assert pareto([1.0, 1.0], [5, 5], [0.2, 0.2]) == [True, True]  # equal points do not dominate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "run"
    assert main(["analyze", "--limit", "64", "--out", str(out), "--quiet"]) == 0
    return out


def _oip_body_bytes(shape, datatype: str, itemsize: int) -> int:
    """The request body the client sends, written out by hand: the JSON header of the binary
    tensor extension, then the tensor bytes (and 4 + 1 for scale and zero point with 8 bits)."""
    n = int(np.prod(shape))
    dims = ",".join(map(str, [1, *shape]))
    tensor = (f'{{"name":"activation","datatype":"{datatype}","shape":[{dims}],'
              f'"parameters":{{"binary_data_size":{n * itemsize}}}}}')  # fmt: skip
    extra = ""
    if datatype == "UINT8":
        extra = (
            ',{"name":"scale","datatype":"FP32","shape":[1,1],'
            '"parameters":{"binary_data_size":4}},'
            '{"name":"zero_point","datatype":"UINT8","shape":[1,1],'
            '"parameters":{"binary_data_size":1}}'
        )
    header = f'{{"parameters":{{"binary_data_output":true}},"inputs":[{tensor}{extra}]}}'
    return len(header) + n * itemsize + (5 if datatype == "UINT8" else 0)


def test_plan_from_flops_matches_the_hand_computed_model(run):
    a = Analysis.load(run)
    link = Link(parse_bandwidth("8Mbit/s"), parse_duration("15ms"))  # 1e6 bytes/s
    for quantize, datatype, itemsize in ((True, "UINT8", 1), (False, "FP32", 4)):
        plan = make_plan(run, link, device_speed=2e9, server_speed=5e10, quantize=quantize)
        adm = [p for p in a.points if p.admissible]
        assert [r["name"] for r in plan.points] == [p.name for p in adm]
        for r, p in zip(plan.points, adm):
            nbytes = _oip_body_bytes(p.shape[1:], datatype, itemsize)
            assert r["bytes"] == nbytes
            assert r["head_ms"] == pytest.approx(1e3 * p.head_flops / 2e9)
            assert r["tail_ms"] == pytest.approx(1e3 * (a.total_flops - p.head_flops) / 5e10)
            assert r["link_ms"] == pytest.approx(1e3 * nbytes / 1e6)
            assert r["rtt_ms"] == pytest.approx(15.0)
            total = r["head_ms"] + r["link_ms"] + 15.0 + r["tail_ms"]
            assert r["total_ms"] == pytest.approx(total)
            assert r["score"] == pytest.approx(a.cui[a.point_names.index(p.name)])
        # Without a budget the recommendation is the best-scoring point: the analysis's best.
        assert plan.recommended == a.best and a.best in plan.pareto
        b = plan.baselines
        assert b["device_only_ms"] == pytest.approx(1e3 * a.total_flops / 2e9)
        assert b["server_only_ms"] == pytest.approx(
            1e3 * b["server_only_bytes"] / 1e6 + 15.0 + 1e3 * a.total_flops / 5e10
        )


def test_the_recommendation_respects_the_budgets(run):
    link = Link(parse_bandwidth("8Mbit/s"), parse_duration("15ms"))
    free = make_plan(run, link, device_speed=2e9, server_speed=5e10)
    rows = free.points
    # A budget between the fastest and the slowest point: the best score among those within.
    limit = float(np.median([r["total_ms"] for r in rows]))
    plan = make_plan(run, link, device_speed=2e9, server_speed=5e10, max_latency=limit / 1e3)
    within = [r for r in rows if r["total_ms"] <= limit]
    assert plan.recommended == max(within, key=lambda r: r["score"])["name"]
    assert [r["within_budget"] for r in plan.points] == [r["total_ms"] <= limit for r in rows]
    small = min(r["bytes"] for r in rows)
    plan = make_plan(run, link, device_speed=2e9, server_speed=5e10, max_bytes=small)
    fits = [r for r in rows if r["bytes"] <= small]
    assert plan.recommended == max(fits, key=lambda r: r["score"])["name"]
    plan = make_plan(run, link, device_speed=2e9, server_speed=5e10, max_latency=1e-6)
    assert plan.recommended is None and plan.reason.startswith("no point meets")
    # Every non-Pareto point is beaten by a Pareto point.
    for r in rows:
        if not r["pareto"]:
            assert any(
                q["pareto"] and q["total_ms"] <= r["total_ms"] and q["bytes"] <= r["bytes"]
                and q["score"] >= r["score"] for q in rows
            )  # fmt: skip


def test_plan_command_measures_writes_and_the_report_shows_it(run, capsys, tmp_path):
    argv = ["plan", str(run), "--bandwidth", "10Mbit/s", "--rtt", "20ms", "--max-latency",
            "40ms", "--repeats", "1"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    plan = Plan.load(run)
    assert plan.to_json() == json.loads((run / "plan.json").read_text())
    assert json.loads((run / "plan.json").read_text())["format"] == FORMAT
    assert (run / "plan.png").stat().st_size > 10_000
    assert "measured on this machine" in plan.times
    assert out.splitlines()[: len(plan.points) + 3] == plan.table().splitlines()
    for r in plan.points:
        assert r["head_ms"] > 0 and r["tail_ms"] > 0 and r["rtt_ms"] == 20.0
        assert (r["name"] in out) and (("pareto" in out) or not r["pareto"])
    if plan.recommended:
        assert f"recommended: {plan.recommended}" in out
    else:
        assert "no point meets the budgets" in out
    from isplit.report import write_report

    html = write_report(run, samples=0).read_text()
    assert "Latency plan" in html and "10 Mbit/s" in html and "20 ms round trip" in html


def test_plan_mistakes_are_one_line_errors(run, cli_error):
    base = ["plan", str(run), "--rtt", "20ms"]
    assert "bandwidth '10 megabits'" in cli_error(*base, "--bandwidth", "10 megabits")
    err = cli_error("plan", str(run), "--bandwidth", "1MB/s", "--rtt", "20")
    assert "duration '20'" in err and "20ms" in err
    err = cli_error(*base, "--bandwidth", "1MB/s", "--score", "probe")
    assert "--score probe needs a run analysed with the probe predictor" in err
    assert "isplit analyze --predictors probe" in err


def test_score_probe_is_the_analysis_probe_predictor(tmp_path):
    """--score probe: the held-out accuracy of the analysis's linear probe (the probe
    predictor, at every admissible point), not validation's logistic probe."""
    run = tmp_path / "run"
    argv = ["analyze", "--limit", "64", "--predictors", "probe", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    a = Analysis.load(run)
    # a validation.json whose logistic probe would rank the points the other way round
    validation = {"points": [{"name": p.name, "probe_accuracy": 1.0 - a.point_names.index(p.name)
                              / 100} for p in a.points if p.admissible]}  # fmt: skip
    (run / "validation.json").write_text(json.dumps(validation))
    link = Link(parse_bandwidth("8Mbit/s"), parse_duration("15ms"))
    plan = make_plan(run, link, device_speed=2e9, server_speed=5e10, score="probe")
    probe = {p.name: v for p, v in zip(a.points, a.curve("probe")) if p.admissible}
    assert [r["name"] for r in plan.points] == list(probe)
    assert [r["score"] for r in plan.points] == pytest.approx(list(probe.values()))
    assert probe[plan.recommended] == max(probe.values())
