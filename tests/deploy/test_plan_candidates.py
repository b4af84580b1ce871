"""Not splitting is a candidate like any point: `isplit plan` on the demo recommends all on the
device when that is fastest, and all on the server when only it meets the budget."""

import shutil

import pytest

from isplit.cli import main
from isplit.deploy.plan import Plan


@pytest.fixture(scope="module")
def run(demo_run, tmp_path_factory):
    return shutil.copytree(demo_run, tmp_path_factory.mktemp("candidates") / "run")


def _plan(run, capsys, *options: str) -> tuple[Plan, str]:
    argv = ["plan", str(run), "--bandwidth", "10Mbit/s", "--rtt", "20ms", *options]
    capsys.readouterr()
    assert main(argv) == 0
    return Plan.load(run), capsys.readouterr().out


def test_recommends_all_on_the_device_when_that_is_fastest(run, capsys):
    """The README's command, times measured here: the whole network on this CPU takes a few
    milliseconds, every split at least the 20 ms round trip more."""
    plan, out = _plan(run, capsys, "--max-latency", "30ms", "--repeats", "3")
    rows = {r["name"]: r for r in plan.points}
    device, last = rows["all on the device"], plan.points[-2]
    assert plan.recommended == "all on the device"
    assert f"recommended: all on the device ({plan.reason})" in out
    assert plan.reason.startswith(("not splitting loses nothing", "only all on the device"))
    assert device["bytes"] == 0 and device["link_ms"] == device["rtt_ms"] == 0
    assert device["total_ms"] == min(r["total_ms"] for r in plan.points)
    # Why the last split point is so much slower although its head is the whole network: it
    # still pays the round trip and the transfer, which all on the device does not.
    # (The head and tail times are noisy here; the round trip alone is 20 ms.)
    assert last["head_flops"] > 0.99 * device["head_flops"] and last["rtt_ms"] == 20.0
    assert last["total_ms"] == pytest.approx(
        last["head_ms"] + last["link_ms"] + 20.0 + last["tail_ms"]
    )
    assert device["total_ms"] == pytest.approx(device["head_ms"])
    assert device["pareto"] and "all on the device" in plan.pareto
    line = next(x for x in out.splitlines() if x.startswith("all on the device"))
    assert "lossless" in line and "recommended" in line and "pareto" in line


def test_recommends_all_on_the_server_when_only_it_meets_the_budget(run, capsys):
    plan, out = _plan(run, capsys, "--device-speed", "1GFLOPS", "--server-speed", "50",
                      "--max-latency", "25ms")  # fmt: skip
    server = plan.points[0]
    assert plan.recommended == "all on the server" and server["name"] == "all on the server"
    assert [r["name"] for r in plan.points if r["within_budget"]] == ["all on the server"]
    assert plan.reason.startswith("only all on the server meets the budgets (latency <= 25 ms)")
    assert "no point meets" not in out and f"recommended: all on the server ({plan.reason})" in out
    assert server["head_ms"] == 0 and server["total_ms"] < 25
    assert "times: head from their FLOPs at the given device speed 1 GFLOPS; tail from their " \
           "FLOPs at the given server speed 50 GFLOPS" in out  # fmt: skip
