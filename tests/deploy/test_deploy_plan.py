"""The latency plan: unit parsing, the latency model against hand-computed values, the Pareto
front, the recommendation under budgets, the command and the report section."""

import json
import re
import shutil

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
def run(demo_run, tmp_path_factory):
    """The shared analysis of the demo network, copied: plan.json is written into it."""
    return shutil.copytree(demo_run, tmp_path_factory.mktemp("plan") / "run")


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
        server, *splits, device = plan.points
        assert (server["name"], device["name"]) == ("all on the server", "all on the device")
        assert [r["name"] for r in splits] == [p.name for p in adm]
        for r, p in zip(splits, adm):
            nbytes = _oip_body_bytes(p.shape[1:], datatype, itemsize)
            assert r["bytes"] == nbytes
            assert r["head_ms"] == pytest.approx(1e3 * p.head_flops / 2e9)
            assert r["tail_ms"] == pytest.approx(1e3 * (a.total_flops - p.head_flops) / 5e10)
            assert r["link_ms"] == pytest.approx(1e3 * nbytes / 1e6)
            assert r["rtt_ms"] == pytest.approx(15.0)
            total = r["head_ms"] + r["link_ms"] + 15.0 + r["tail_ms"]
            assert r["total_ms"] == pytest.approx(total)
            assert r["score"] == pytest.approx(a.cui[a.point_names.index(p.name)])
        # All on the device: the whole network's FLOPs at its speed, nothing sent, no round trip.
        assert device["bytes"] == 0 and device["rtt_ms"] == 0 and device["tail_ms"] == 0
        assert device["total_ms"] == pytest.approx(1e3 * a.total_flops / 2e9)
        # All on the server: the 8-bit image, whatever the tensors are sent as.
        image = _oip_body_bytes(a.settings["input_shape"], "UINT8", 1)
        assert server["bytes"] == image and server["head_ms"] == 0
        assert server["total_ms"] == pytest.approx(
            1e3 * image / 1e6 + 15 + 1e3 * a.total_flops / 5e10
        )
        # Without a budget not splitting wins (it loses nothing): the faster of the two ways.
        assert server["score"] is None and device["score"] is None
        assert plan.recommended == min((server, device), key=lambda r: r["total_ms"])["name"]
        assert "not splitting loses nothing" in plan.reason


def test_the_recommendation_respects_the_budgets(run):
    # A fast link with no round trip and a slow device: all on the server is the fastest.
    link = Link(parse_bandwidth("1GB/s"), 0.0)
    speeds = {"device_speed": 2e9, "server_speed": 5e10}
    free = make_plan(run, link, **speeds)
    server, *splits, device = free.points
    assert free.recommended == "all on the server"
    # A byte budget below the image's keeps all on the device (it sends nothing) ...
    small = min(r["bytes"] for r in splits)
    plan = make_plan(run, link, max_bytes=small, **speeds)
    assert plan.recommended == "all on the device"
    assert (
        "all on the device meets the budgets (<= 845 bytes) where all on the server does not"
        in plan.reason
    )
    # ... and with a latency budget under the device's time, the best-scoring split within both.
    limit = device["total_ms"] * 0.99
    plan = make_plan(run, link, max_bytes=server["bytes"] - 1, max_latency=limit / 1e3, **speeds)
    within = [r for r in splits if r["total_ms"] <= limit and r["bytes"] < server["bytes"]]
    assert len(within) >= 2 and len(within) < len(splits)
    assert plan.recommended == max(within, key=lambda r: r["score"])["name"]
    assert plan.reason.startswith("highest score within latency")
    assert [r["within_budget"] for r in plan.points[1:-1]] == [r in within for r in splits]
    assert not plan.points[0]["within_budget"] and not plan.points[-1]["within_budget"]
    plan = make_plan(run, link, max_latency=1e-6, **speeds)
    assert plan.recommended is None
    assert plan.reason.startswith("no point meets the budgets, not splitting included")
    # Every non-Pareto point is beaten by a Pareto point (not splitting beats any score).
    for r in splits:
        if not r["pareto"]:
            assert any(
                q["pareto"] and q["total_ms"] <= r["total_ms"] and q["bytes"] <= r["bytes"]
                and (q["score"] is None or q["score"] >= r["score"]) for q in free.points
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
    assert re.match(r"head measured on this machine \(CPU[^,]*, 1 torch thread\(s\), batch 1, "
                    r"median of 1\), as if it were the device", plan.times)  # fmt: skip
    assert "tail measured here too: the server assumed as fast as this machine" in plan.times
    assert out.splitlines()[:-1] == plan.table().splitlines()
    assert f"times: {plan.times}" in out and f"score: {plan.score_source}" in out
    for r in plan.points:
        assert r["head_ms"] > 0 or r["name"] == "all on the server"
        assert r["tail_ms"] > 0 or r["name"] == "all on the device"
        assert r["rtt_ms"] == (0.0 if r["name"] == "all on the device" else 20.0)
        assert (r["name"] in out) and (("pareto" in out) or not r["pareto"])
    assert f"recommended: {plan.recommended}" in out
    from isplit.report import write_report

    html = write_report(run, samples=0).read_text()
    assert "Latency plan" in html and "10 Mbit/s" in html and "20 ms round trip" in html
    assert "all on the device" in html and "lossless" in html and plan.times in html


def test_plan_mistakes_are_one_line_errors(run, cli_error):
    base = ["plan", str(run), "--rtt", "20ms"]
    assert "bandwidth '10 megabits'" in cli_error(*base, "--bandwidth", "10 megabits")
    err = cli_error("plan", str(run), "--bandwidth", "1MB/s", "--rtt", "20")
    assert "duration '20'" in err and "20ms" in err
    err = cli_error(*base, "--bandwidth", "1MB/s", "--score", "probe")
    assert "--score probe needs a run analysed with the probe predictor" in err
    assert "isplit analyze --predictors probe" in err
