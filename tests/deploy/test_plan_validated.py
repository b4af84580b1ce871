"""`isplit plan` on a validated run: every row is one configuration (a validated point is the
split with its trained bottleneck: its code's bytes, its encoder and decoder in the compute), the
points not validated stay with their accuracy not measured, bottlenecks that did not learn are
flagged (a warning, plan.json's checks), and the table stays aligned with wide point names."""

import json
import math

import pytest

from isplit.analysis import Analysis
from isplit.cli import main
from isplit.deploy.client import request_bytes
from isplit.deploy.plan import Link, Plan, make_plan

LINK = Link(1e6, 0.015)
SPEEDS = {"device_speed": 2e9, "server_speed": 5e10}
#: the demo's 32 x 8 x 8 and 64 x 4 x 4 points: with ratio 8, codes of 4 x 8 x 8 and 8 x 4 x 4
VALIDATED = {"features.13": (4, 8, 8), "features.23": (8, 4, 4)}


def _validate(run, points: dict, **doc) -> None:
    """A validation.json as `isplit validate` writes it (ratio 8, no halving)."""
    rows = [{"name": n, **row} for n, row in points.items()]
    doc = {"format": 1, "unsplit_accuracy": 0.9, "settings": {"ratio": 8, "halve": False},
           "points": rows, **doc}  # fmt: skip
    (run / "validation.json").write_text(json.dumps(doc))


def _conv_flops(c_in, c_out, k, h, w):
    """FLOPs of a k x k convolution at batch 1 (2 per multiply-add), as the analysis counts."""
    return 2 * c_in * c_out * k * k * h * w


def test_a_validated_row_is_the_split_with_its_bottleneck(demo_run_copy):
    run = demo_run_copy
    a = Analysis.load(run)
    _validate(run, {n: {"accuracy": 0.85, "accuracy_int8": 0.84, "learned": True}
                    for n in VALIDATED})  # fmt: skip
    for quantize in (True, False):
        plan = make_plan(run, LINK, quantize=quantize, **SPEEDS)
        rows = {r["name"]: r for r in plan.points}
        for name, code in VALIDATED.items():
            row, point = rows[name], a.point(name)
            assert row["bottleneck"] is True and row["shape"] == list(code)
            assert (
                row["bytes"]
                == request_bytes(code, quantize)
                < request_bytes(point.shape[1:], quantize)
            )
            # the encoder's 3 x 3 convolution (C -> C/8) joins the head, the decoder's two (C/8
            # -> C, C -> C) the tail; batch norm and ReLU add a little
            c, h, w = point.shape[1:]
            encoder = _conv_flops(c, c // 8, 3, h, w)
            decoder = _conv_flops(c // 8, c, 3, h, w) + _conv_flops(c, c, 3, h, w)
            assert row["head_flops"] == pytest.approx(point.head_flops + encoder, rel=0.05)
            assert row["head_ms"] == pytest.approx(1e3 * row["head_flops"] / 2e9)
            tail = a.total_flops - point.head_flops + decoder
            assert row["tail_ms"] == pytest.approx(1e3 * tail / 5e10, rel=0.05)
            assert row["score"] == (0.84 if quantize else 0.85)
        # the others: the plain split, accuracy not measured, never on the front or recommended
        for name, row in rows.items():
            if name in VALIDATED or row["kind"] != "split":
                continue
            assert row["score"] is None and row["not_measured"] and not row["pareto"]
            assert "bottleneck" not in row
            assert row["bytes"] == request_bytes(a.point(name).shape[1:], quantize)
    assert "not measured" in plan.table()
    assert all(c["passed"] for c in plan.checks)


def test_a_split_not_measured_is_never_recommended_nor_on_the_front():
    from isplit.deploy.plan import _mark

    def row(name, kind, total_ms, nbytes, score):
        return {"name": name, "kind": kind, "total_ms": total_ms, "bytes": nbytes, "score": score}

    rows = [row("all on the server", "server", 50.0, 1000, 0.9),
            row("a", "split", 10.0, 100, None),  # fastest and smallest, not measured
            row("b", "split", 30.0, 400, 0.8),
            row("all on the device", "device", 60.0, 0, 0.9)]  # fmt: skip
    assert _mark(rows, 0.02, None) is None  # only "a" is within 20 ms
    assert [r["pareto"] for r in rows] == [True, False, True, True]
    assert _mark(rows, 0.04, None)["name"] == "b"


def test_measured_times_include_the_bottleneck(demo_run_copy):
    run = demo_run_copy
    _validate(run, {"features.13": {"accuracy": 0.85, "accuracy_int8": 0.84, "learned": True}})
    plan = make_plan(run, LINK, repeats=2)
    row = next(r for r in plan.points if r["name"] == "features.13")
    assert row["bottleneck"] and row["bytes"] == request_bytes((4, 8, 8), True)
    assert row["head_ms"] > 0 and row["tail_ms"] > 0


def test_bottlenecks_that_did_not_learn_are_flagged(demo_run_copy, capsys):
    run = demo_run_copy
    why = "accuracy 0.120 is within 0.05 of chance (0.100)"
    _validate(
        run,
        {
            "features.13": {"accuracy": 0.12, "accuracy_int8": 0.12, "learned": False,
                            "not_learned_reason": why},
            "features.23": {"accuracy": 0.85, "accuracy_int8": 0.85, "learned": True},
        },
    )  # fmt: skip
    argv = ["plan", str(run), "--bandwidth", "1MB/s", "--rtt", "15ms", "--device-speed", "2",
            "--server-speed", "50"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    warnings = [x for x in err.splitlines() if x.startswith("isplit: warning:")]
    assert len(warnings) == 1
    assert "did not learn at 1 of 2 validated point(s) (features.13)" in warnings[0]
    plan = Plan.load(run)
    (check,) = [c for c in plan.checks if c["name"] == "bottlenecks_learned"]
    assert check["passed"] is False and check["values"]["not_learned"] == {"features.13": why}
    line = next(x for x in out.splitlines() if x.startswith("features.13 "))
    assert "did not learn" in line
    # the report's plan section says the same: not measured, not lossless, and the flag
    from isplit.report.sections import plan as plan_section
    from isplit.runfolder import RunFolder

    html = plan_section(RunFolder(run))[2]
    assert "not measured" in html and "did not learn" in html
    assert "lossless" not in html  # not splitting: the unsplit accuracy here
    # a validation.json from before the `learned` mark: judged here, as validate judges
    _validate(run, {"features.13": {"accuracy": 0.12, "accuracy_int8": 0.12}},
              reliability={"chance_accuracy": 0.1})  # fmt: skip
    plan = make_plan(run, LINK, **SPEEDS)
    (check,) = plan.checks
    assert not check["passed"] and list(check["values"]["not_learned"]) == ["features.13"]


def test_the_table_stays_aligned_with_wide_point_names(demo_run):
    plan = make_plan(demo_run, LINK, **SPEEDS)
    plan.points[1]["name"] = "stages.3.blocks.2.attention.projection.out"  # 42 characters
    lines = plan.table().splitlines()[2:-1]  # the header and the rows
    header = lines[0]
    for col in ("bytes", "total ms"):
        end = header.index(col) + len(col)  # numbers are flush right under their header
        for line in lines[1:]:
            assert line[end - 1] != " " and (len(line) == end or line[end] == " "), (col, line)
    assert math.isfinite(plan.points[1]["total_ms"])
