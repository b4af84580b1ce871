"""The sweep: resuming, sharing out, the points chosen, errors, and the command end to end."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from isplit import IsplitError
from isplit.analysis import analyze
from isplit.cli import main
from isplit.models import load_model, read_metadata
from isplit.validation import Settings, ValidationReport, bottleneck_file, validate


@pytest.fixture(scope="module")
def small():
    loaded = load_model("demo-vgg16")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 32, 32, generator=g)  # 37 held out: enough for pca-probe to rank
    with torch.no_grad():
        y = loaded.model(x).argmax(1)
    data = TensorDataset(x, y)
    analysis = analyze(loaded.model, data, model_name="demo-vgg16", batch_size=100)
    return loaded, data, analysis


def test_sweep_resumes_without_redoing_finished_points(small, tmp_path, monkeypatch):
    import isplit.validation.sweep as v

    loaded, data, analysis = small
    settings = Settings(epochs=1, train_limit=120, test_limit=40, n_boot=20, batch_size=40)
    points = ["features.6", "features.23"]
    real = v._validate_point
    calls = []

    def failing(sweep, name, images):
        calls.append(name)
        if name == "features.23":
            raise KeyboardInterrupt
        return real(sweep, name, images)

    monkeypatch.setattr(v, "_validate_point", failing)
    with pytest.raises(KeyboardInterrupt):
        validate(loaded.model, analysis, data, data, tmp_path, points=points, settings=settings)
    assert (tmp_path / "validation_points" / "features.6.json").exists()
    monkeypatch.setattr(
        v,
        "_validate_point",
        lambda sweep, name, images: (calls.append(name), real(sweep, name, images))[1],
    )
    report = validate(
        loaded.model, analysis, data, data, tmp_path, points=points, settings=settings
    )
    assert calls == ["features.6", "features.23", "features.23"]
    assert [p["name"] for p in report.points] == points
    assert (tmp_path / "validation.json").is_file()
    assert not (tmp_path / "validation.png").exists()  # the data only: isplit validate draws it


def test_the_report_measures_both_picks(small, tmp_path):
    """validation.json's picks: the analysis's two picks with the accuracies measured at their
    points and the difference; the table's last line says so; without the block (a file from
    before it) the report still loads, with no such line."""
    loaded, data, analysis = small
    picks = analysis.picks
    assert set(picks) == {"isplit", "evidence"}  # analyze's default predictors
    points = [n for n in analysis.point_names if n in {p.point for p in picks.values()}]
    settings = Settings(epochs=1, train_limit=120, test_limit=40, n_boot=10, batch_size=40)
    report = validate(
        loaded.model, analysis, data, data, tmp_path, points=points, settings=settings
    )
    acc = report.accuracies()
    doc = json.loads((tmp_path / "validation.json").read_text())
    assert doc["picks"] == report.picks
    for role, p in picks.items():
        assert doc["picks"][role] == {
            "predictor": p.predictor,
            "point": p.point,
            "accuracy": acc[p.point],
        }
    isplit, evidence = (acc[picks[r].point] for r in ("isplit", "evidence"))
    assert doc["picks"]["agree"] == (len(points) == 1)
    assert doc["picks"]["evidence_minus_isplit"] == pytest.approx(evidence - isplit)
    last = report.table().splitlines()[-1]
    assert last.endswith(" (unreliable)") != report.reliable  # as every statistic's line
    last = last.removesuffix(" (unreliable)")
    if len(points) == 1:
        assert last == f"I-SPLIT's pick and the evidence-backed pick agree: {points[0]}: " + (
            f"accuracy {isplit:.4f}"
        )
    else:
        assert last == (
            f"I-SPLIT's pick {picks['isplit'].point}: accuracy {isplit:.4f}; evidence-backed "
            f"pick {picks['evidence'].point}: accuracy {evidence:.4f} "
            f"({100 * (evidence - isplit):+.2f} pp)"
        )
    del doc["picks"]  # validation.json as written before the picks
    (tmp_path / "validation.json").write_text(json.dumps(doc))
    old = ValidationReport.load(tmp_path)
    assert old.picks == {} and old.accuracies() == acc
    assert old.table() == report.table().rsplit("\n", 1)[0]  # all but the picks' line


def test_validation_errors(small, tmp_path):
    loaded, data, analysis = small
    empty = TensorDataset(torch.zeros(0, 1, 32, 32), torch.zeros(0).long())
    with pytest.raises(IsplitError, match="empty"):
        validate(loaded.model, analysis, empty, data, tmp_path, points=["features.6"])
    other = load_model("demo-resnet50")
    with pytest.raises(IsplitError, match="made for demo-vgg16"):
        validate(other.model, analysis, data, data, tmp_path, model_name="demo-resnet50")
    with pytest.raises(IsplitError, match="not in the analysis"):
        validate(loaded.model, analysis, data, data, tmp_path, points=["features.3"])
    few = TensorDataset(*data[:40])
    r50 = analyze(other.model, few, model_name="demo-resnet50")
    with pytest.raises(IsplitError, match="not a valid cut"):
        validate(other.model, r50, few, few, tmp_path, points=["layer1.0.conv2"])


def test_points_narrower_than_the_ratio(small, tmp_path, caplog):
    loaded, data, analysis = small
    settings = Settings(ratio=32, epochs=1, train_limit=40, test_limit=40, n_boot=10)
    narrow = [p.name for p in analysis.points if p.admissible and p.shape[-3] < 32]
    assert narrow  # demo-vgg16's 16-channel points
    # named by the user: an error before any training, nothing written
    with pytest.raises(IsplitError, match=rf"{narrow[0]} \(16 channels\).*--ratio 16 or less"):
        validate(
            loaded.model,
            analysis,
            data,
            data,
            tmp_path,
            points=[narrow[0], "features.42"],
            settings=settings,
        )
    assert not (tmp_path / "validation_points").exists()
    # chosen by isplit (all admissible points): left out with a warning, listed in the report
    report = validate(loaded.model, analysis, data, data, tmp_path, points="all", settings=settings)
    done = [p["name"] for p in report.points]
    assert done == [p.name for p in analysis.points if p.admissible and p.name not in narrow]
    assert [s["name"] for s in report.skipped_points] == narrow
    assert "leaves no channel" in caplog.text


def test_validate_cli_end_to_end_and_errors(cli_error, tmp_path):
    out = tmp_path / "run"
    args = [
        "validate",
        "--limit",
        "200",
        "--train-limit",
        "400",
        "--test-limit",
        "200",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--bootstrap",
        "50",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args + ["--points", "features.2,features.13,features.23,features.42"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert [p["name"] for p in doc["points"]] == [
        "features.2",
        "features.13",
        "features.23",
        "features.42",
    ]
    for p in doc["points"]:
        assert {
            "name",
            "cui",
            "bytes",
            "encoded_bytes",
            "encoded_bytes_int8",
            "accuracy",
            "accuracy_drop",
            "train_seconds",
        } <= p.keys()
        assert 0 <= p["accuracy"] <= 1 and 0 <= p["accuracy_int8"] <= 1
    assert doc["points"][-1]["accuracy"] > 0.5  # next to the logits two epochs are enough
    for k in ("cui", "bytes", "depth", "logistic-probe"):
        assert {"spearman", "kendall", "spearman_ci", "kendall_ci"} <= doc["correlation"][k].keys()
        assert k in doc["prediction"]["mae"]
    assert len(doc["regret"]) == 3 and 0 < doc["unsplit_accuracy"] <= 1
    # --batch-size reaches the bottlenecks' training (and the analysis), not only the analysis
    assert doc["settings"]["batch_size"] == 32
    assert json.loads((out / "curves.json").read_text())["settings"]["batch_size"] == 32
    header = read_metadata(str(bottleneck_file(out, "features.42")))
    assert header["settings"]["batch_size"] == 32

    def error(*extra):
        return cli_error(*args, "--analysis", str(out), *extra)

    assert "larger than" in error(
        "--points", "features.42", "--ratio", "512", "--out", str(tmp_path / "r")
    )
    assert "unknown split point" in error("--points", "features.99")
    assert "--train-limit must be at least 1" in error("--train-limit", "0")
    assert "made for demo-vgg16" in error("--model", "demo-resnet50")
    assert "--bottleneck-seed must be 0 or more" in error("--bottleneck-seed", "-1")
    other_seed = error("--points", "features.42", "--bottleneck-seed", "1")
    assert "made with other validation settings" in other_seed  # a finished point, not reused


def test_bottleneck_seeds_vary_the_bottleneck_only_and_are_part_of_what_resumes(small, tmp_path):
    import hashlib

    from isplit.validation.bottleneck import load_bottleneck
    from isplit.validation.settings import TRAINING_KEYS

    loaded, data, analysis = small
    base = dict(epochs=1, train_limit=120, test_limit=40, n_boot=20, batch_size=40)
    zero, one = Settings(**base), Settings(**base, bottleneck_seed=1)
    # seed 0 is the sweep as before bottleneck seeds: the same fingerprint, the same seeding
    old = json.dumps({k: getattr(zero, k) for k in TRAINING_KEYS})
    assert zero.fingerprint() == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert zero.training_seed == zero.seed == 0
    assert one.fingerprint() != zero.fingerprint() and one.training_seed != 0
    assert Settings(**base, bottleneck_seed=2).training_seed not in (0, one.training_seed)
    with pytest.raises(IsplitError, match="--bottleneck-seed must be 0 or more"):
        Settings(bottleneck_seed=-1).check()

    points = ["features.6"]
    reports = {}
    for k, settings in ((0, zero), (1, one)):
        out = tmp_path / str(k)
        reports[k] = validate(loaded.model, analysis, data, data, out, points=points,
                              settings=settings)  # fmt: skip
    with pytest.raises(IsplitError, match="made with other validation settings"):
        validate(loaded.model, analysis, data, data, tmp_path / "0", points=points, settings=one)
    (a,), (b,) = reports[0].points, reports[1].points
    assert (
        reports[1].settings["bottleneck_seed"] == 1 and reports[0].settings["bottleneck_seed"] == 0
    )
    # paired: the same test images (and so the same probe), another bottleneck
    assert reports[0].settings["test_images"] == reports[1].settings["test_images"] == 40
    assert a["probe_accuracy"] == b["probe_accuracy"]
    weights = [
        load_bottleneck(bottleneck_file(tmp_path / str(k), points[0]))[0].encoder.conv.weight
        for k in (0, 1)
    ]
    assert not torch.equal(*weights)
