"""README numbers that the tool decides: the demo networks' parameter counts, and which
candidates of the README's plan example meet its latency budget."""

import re
from pathlib import Path

import isplit
from isplit.deploy.plan import Link, make_plan

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _demo_rows() -> dict[str, int]:
    rows = re.findall(r"^\| `(demo-[a-z0-9]+)` \|[^|]*\| ([\d ]+) \|", README, flags=re.M)
    return {name: int(count.replace(" ", "")) for name, count in rows}


def test_the_demo_table_gives_each_network_s_parameter_count():
    rows = _demo_rows()
    assert set(rows) == {"demo-vgg16", "demo-resnet50", "demo-mobilenet", "demo-convnext",
                         "demo-vit"}  # fmt: skip
    for name, count in rows.items():
        model = isplit.load_model(name).model
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_the_plan_example_names_every_candidate_within_the_budget(demo_run):
    """`isplit plan runs/demo --bandwidth 10Mbit/s --rtt 20ms --max-latency 30ms --device-speed
    1GFLOPS --server-speed 50`: latencies from FLOPs, so the same here as in the README."""
    plan = make_plan(demo_run, Link(10e6 / 8, 0.020), device_speed=1e9, server_speed=50e9,
                     max_latency=0.030)  # fmt: skip
    within = {r["name"]: r["total_ms"] for r in plan.points if r["within_budget"]}
    flat = " ".join(README.split())
    sentence = re.search(r"--server-speed 50`, (.*?) meet 30 ms", flat)
    assert sentence, "the README's plan example with given speeds"
    text = sentence.group(1)
    named = {"all on the server"} if "all on the server" in text else set()
    named |= set(re.findall(r"`([^`]+)`", text))
    assert named == set(within)
    for name, total in within.items():
        assert f"({total:.1f} ms)" in text, name
    assert plan.recommended == "all on the server"
    device = plan.points[-1]["total_ms"]
    assert f"meet 30 ms, all on the device does not ({device:.1f} ms)" in flat
