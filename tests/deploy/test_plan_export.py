"""`isplit plan --export`: an exported point is costed at what its export sends, a bottleneck's
code rather than the plain tensor (587 bytes instead of 2,381 at the demo's features.13)."""

import json
import shutil

import pytest

from isplit.analysis import Analysis
from isplit.cli import main
from isplit.deploy.manifest import Manifest
from isplit.deploy.plan import Link, Plan, make_plan

LINK = Link(1e6, 0.015)
SPEEDS = {"device_speed": 2e9, "server_speed": 5e10}
POINT = "features.13"  # 32 x 8 x 8; the demo's bottleneck code there is 4 x 8 x 8


@pytest.fixture(scope="module")
def run(demo_run, tmp_path_factory):
    return shutil.copytree(demo_run, tmp_path_factory.mktemp("plan-export") / "run")


def _manifest(a: Analysis, folder, point=POINT, shape=(4, 8, 8), model=None) -> str:
    """The manifest.json that `isplit export --bottleneck` writes at ``point`` (no programs:
    plan reads only the manifest)."""
    record = {"model": model or a.model, "weights_sha256": a.settings["weights_sha256"]}
    Manifest(name="demo-vgg16-tail", point=point, input_shape=tuple(a.settings["input_shape"]),
             preprocess=a.settings["preprocess"], transmitted_shape=shape,
             classes=[str(i) for i in range(10)], model=record,
             bottleneck={"point": point, "code_shape": list(shape)}).save(folder)  # fmt: skip
    return str(folder)


def test_an_exported_bottleneck_is_costed_at_its_code(run, tmp_path):
    a = Analysis.load(run)
    exported = _manifest(a, tmp_path)
    plain = {r["name"]: r for r in make_plan(run, LINK, **SPEEDS).points}
    for quantize, nbytes, was in ((True, 587, 2381), (False, 1174, None)):
        plan = make_plan(run, LINK, exports=[exported], quantize=quantize, **SPEEDS)
        rows = {r["name"]: r for r in plan.points}
        assert plan.exports == [exported]
        row = rows[POINT]
        assert (row["bytes"], row["shape"], row["exported"]) == (nbytes, [4, 8, 8], exported)
        assert row["bottleneck"] is True and "exported bottleneck" in plan.table()
        assert row["link_ms"] == pytest.approx(1e3 * nbytes / 1e6)
        others = [r for n, r in rows.items() if n != POINT]
        assert all("exported" not in r for r in others)
        if quantize:
            assert plain[POINT]["bytes"] == was
            assert {n: r["bytes"] for n, r in rows.items() if n != POINT} == {
                n: r["bytes"] for n, r in plain.items() if n != POINT
            }


def test_exports_of_something_else_are_one_line_errors(run, tmp_path, cli_error):
    a = Analysis.load(run)
    base = ["plan", str(run), "--bandwidth", "1MB/s", "--rtt", "15ms", "--export"]
    assert "not a folder" in cli_error(*base, str(tmp_path / "missing"))
    other = _manifest(a, tmp_path / "other", model="resnet18")
    assert "not of this run's network 'demo-vgg16'" in cli_error(*base, other)
    pooled = _manifest(a, tmp_path / "pooled", point="avgpool", shape=(128, 1, 1))
    assert "is at 'avgpool', not an admissible point of this run" in cli_error(*base, pooled)
    # Scored by validated accuracy, an export at a point not validated has no score.
    exported = _manifest(a, tmp_path / "exported")
    validated = shutil.copytree(run, tmp_path / "validated")
    doc = {"format": 1, "unsplit_accuracy": 0.93,
           "points": [{"name": "features.6", "accuracy": 0.9, "accuracy_int8": 0.9}]}  # fmt: skip
    (validated / "validation.json").write_text(json.dumps(doc))
    base[1] = str(validated)
    err = cli_error(*base, exported)
    assert f"is at {POINT}, which has no validated score" in err
    assert f"isplit validate --points {POINT}" in err


@pytest.mark.slow
def test_plan_over_a_real_validated_and_exported_bottleneck(run, tmp_path, capsys):
    """validate -> export --bottleneck -> plan --export, for real: the validated accuracy is
    the score and the export's code the bytes."""
    import isplit
    from isplit.validation import Settings, validate

    folder = shutil.copytree(run, tmp_path / "run")
    demo = isplit.load_model("demo-vgg16")
    train = isplit.load_dataset("fashion-mnist", "train", demo.preprocess)
    test = isplit.load_dataset("fashion-mnist", "test", demo.preprocess)
    settings = Settings(epochs=2, train_limit=600, test_limit=200, batch_size=32, lr=0.01,
                        n_boot=10)  # fmt: skip
    report = validate(demo.model, Analysis.load(folder), train, test, folder, points=[POINT],
                      settings=settings)  # fmt: skip
    out = tmp_path / "export"
    argv = ["export", "--analysis", str(folder), "--bottleneck", str(folder), "--point", POINT,
            "--out", str(out), "--check-images", "8"]  # fmt: skip
    assert main(argv) == 0
    argv = ["plan", str(folder), "--bandwidth", "10Mbit/s", "--rtt", "20ms", "--export",
            str(out), "--device-speed", "1", "--server-speed", "50"]  # fmt: skip
    assert main(argv) == 0
    plan = Plan.load(folder)
    server, *splits, device = plan.points
    (row,) = [r for r in splits if r["score"] is not None]  # the only validated point
    assert row["name"] == POINT and row["bytes"] == 587 and row["bottleneck"]
    assert all(r.get("not_measured") for r in splits if r is not row)
    assert plan.score == "validated"
    assert row["score"] == report.points[0]["accuracy_int8"]
    assert server["score"] == device["score"] == report.unsplit_accuracy
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(POINT + " "))
    assert line.split()[1] == "587"
