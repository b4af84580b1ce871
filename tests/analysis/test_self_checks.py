"""The self-checks of an analysis on a trained network: accuracy against chance and against the
accuracy its weights record, the weights' classes against the data set's. Each fires where it
should (random weights, a wrong normalisation, another class order), warns on one line, is
recorded in curves.json, and stays quiet on the trained network fed right."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from isplit import checks
from isplit.cli.main import main
from isplit.data import Preprocess, builtin, load_dataset

HAVE_FMNIST = (builtin.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist not installed")


@pytest.mark.parametrize(("p", "n"), [(0.5, 10), (0.93, 300), (0.0, 40), (1.0, 25)])
def test_interval_is_scipys_wilson_interval(p, n):
    want = binomtest(round(p * n), n).proportion_ci(confidence_level=0.99, method="wilson")
    np.testing.assert_allclose(checks.interval(p, n), (want.low, want.high), atol=2e-4)


def test_recorded_accuracy_check_follows_sampling():
    assert checks.accuracy_vs_recorded(0.92, 300, 0.938, 10_000).passed  # within sampling
    assert not checks.accuracy_vs_recorded(0.80, 300, 0.938, 10_000).passed
    assert not checks.accuracy_vs_recorded(0.1, 500, 0.772, 500).passed  # the case
    assert checks.accuracy_vs_recorded(0.5, 4, 0.9, None).passed  # 4 images decide nothing
    assert checks.accuracy_vs_recorded(0.9, 100, None) is None


def test_chance_check():
    assert not checks.accuracy_vs_chance(0.1, 500, 10).passed  # all "Sandal"
    assert not checks.accuracy_vs_chance(0.13, 100, 10).passed  # not clearly above
    assert checks.accuracy_vs_chance(0.3, 500, 10).passed


def analyse(tmp_path, *extra: str) -> tuple[int, dict, str]:
    out = tmp_path / "run"
    code = main(["analyze", "--limit", "300", "--predictors", "cui", "--quiet", "--out",
                 str(out), *extra])  # fmt: skip
    doc = json.loads((out / "curves.json").read_text()) if (out / "curves.json").exists() else {}
    return code, doc, ""


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


@needs_fmnist
def test_trained_network_fed_right_passes_every_check(tmp_path, capsys):
    code, doc, _ = analyse(tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and "warning" not in err
    found = by_name(doc)
    assert all(c["passed"] for c in doc["checks"]), doc["checks"]
    recorded = found["accuracy_vs_recorded"]["values"]
    assert recorded["recorded"] == pytest.approx(0.938, abs=0.01)  # the packaged weights' record
    # the accuracy the check compares is the one an independent count gives
    labels = np.load(tmp_path / "run" / "per_image.npz")["labels"]
    predictions = np.load(tmp_path / "run" / "per_image.npz")["predictions"]
    assert recorded["accuracy"] == pytest.approx(np.mean(labels == predictions))
    assert "preprocessing: pad to 32 x 32" in err and "mean 0.286, std 0.353" in err
    # and which importance the curve holds, as curves.json records it
    assert doc["settings"]["reduction"] == "mean" and "cam" not in doc["settings"]
    assert "importance: gradcam of the true label's logit, channels averaged" in err


@needs_fmnist
def test_random_weights_are_flagged_as_chance(tmp_path, capsys):
    code, doc, _ = analyse(tmp_path, "--weights", "none")
    err = capsys.readouterr()
    assert code == 0
    assert not by_name(doc)["accuracy_vs_chance"]["passed"]
    assert "(see the warnings below)" in err.out
    warning = [line for line in err.err.splitlines() if "is not above chance" in line]
    assert len(warning) == 1 and warning[0].startswith("isplit: warning: ")


@needs_fmnist
def test_wrong_normalisation_is_flagged_against_the_recorded_accuracy(tmp_path, capsys):
    code, doc, _ = analyse(tmp_path, "--mean", "0.8")
    err = capsys.readouterr().err
    check = by_name(doc)["accuracy_vs_recorded"]
    assert code == 0 and not check["passed"]
    assert check["values"]["accuracy"] < 0.5 < check["values"]["recorded"]
    assert "its weights file records" in err


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    """Three Fashion-MNIST classes as an image folder: its classes sort as Bag, Sneaker,
    Trouser, not in the demo network's order (Trouser 1, Sneaker 7, Bag 8)."""
    root = tmp_path_factory.mktemp("three")
    pp = Preprocess(size=28, channels=1, mean=(0.0,), std=(1.0,))
    ds = load_dataset("fashion-mnist", "test", pp)
    wanted = {1: "Trouser", 7: "Sneaker", 8: "Bag"}
    for i in range(600):
        x, y = ds[i]
        if y in wanted:
            (root / wanted[y]).mkdir(exist_ok=True)
            pixels = x[0].mul(255).round().byte().numpy()
            Image.fromarray(pixels, mode="L").save(root / wanted[y] / f"{i}.png")
    return root


@needs_fmnist
def test_other_class_order_is_an_error_unless_matched(tmp_path, sorted_folder, cli_error, capsys):
    line = cli_error("analyze", "--data", str(sorted_folder), "--split", "all",
                     "--out", str(tmp_path / "x"))  # fmt: skip
    assert "other classes" in line and "--match-classes" in line
    assert not (tmp_path / "x" / "curves.json").exists()

    code, doc, _ = analyse(tmp_path, "--data", str(sorted_folder), "--split", "all",
                           "--match-classes", "name")  # fmt: skip
    assert code == 0 and all(c["passed"] for c in doc["checks"] if c["name"] != "predictor_usable")
    assert doc["accuracy"] > 0.9  # label k is the model's output k: three easy classes
    labels = np.load(tmp_path / "run" / "per_image.npz")["labels"]
    assert set(labels.tolist()) == {1, 7, 8}  # the model's own indices

    code, doc, _ = analyse(tmp_path, "--data", str(sorted_folder), "--split", "all",
                           "--match-classes", "position")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and not by_name(doc)["class_names"]["passed"]
    assert doc["accuracy"] < 0.2  # what position matching gives: the warning is right
    assert "trained on other classes" in err


@needs_fmnist
def test_validate_refuses_other_classes_before_any_work(tmp_path, sorted_folder, cli_error):
    line = cli_error("validate", "--data", str(sorted_folder), "--points", "features.6",
                     "--epochs", "1", "--out", str(tmp_path / "v"))  # fmt: skip
    assert "other classes" in line and "--match-classes" in line
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())
