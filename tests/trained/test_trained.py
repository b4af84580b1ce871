"""isplit's numbers on networks trained by ``isplit train`` (not random weights), each against an
independent computation written here (tests/trained/reference.py): a PIL + torch evaluation
loop for the accuracy, forward/backward hooks for CUI, a proxy that counts the bytes a request
really sends. CI runs every command on the bicubic ConvNeXt (train, analyze and validate also
on a folder without split sub-folders), the accuracy (and CUI) of the other two, and the checks
that flag other classes; the slow mark adds validate / export / serve / plan / report for those
two."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch

from helpers import user_error
from trained.reference import (
    BodyCounter,
    gradcam_cui,
    held_out,
    image_files,
    json_lines,
    pil_inputs,
    predict,
    timm_net,
    within,
)
from trained.tier import NETS, PER_CLASS, cli

slow = pytest.mark.slow
KINDS = list(NETS)
#: CI: every command on the bicubic network; the others under the slow mark
COMMAND_KINDS = ["bicubic", pytest.param("bilinear", marks=slow), pytest.param("vit", marks=slow)]
#: the test images: every class's first PER_CLASS["test"] images of Fashion-MNIST's test split
TEST_IMAGES = 10 * PER_CLASS["test"]

_reference: dict[str, dict] = {}


def reference(tier, kind: str) -> dict:
    """The independent evaluation of network ``kind`` on the test images: the network built by
    timm with the weights file's tensors, the inputs by PIL; its predictions and accuracy."""
    if kind not in _reference:
        t = tier.trained(kind)
        files, classes, labels = t.test_images()
        net = timm_net(t.net.arch, t.weights, t.geometry.size, len(classes))
        x = pil_inputs(files, t.geometry)
        pred = predict(net, x)
        _reference[kind] = {
            "net": net,
            "x": x,
            "files": files,
            "classes": classes,
            "labels": labels,
            "predictions": pred,
            "accuracy": float((pred == labels).mean()),
        }
    return _reference[kind]


def _message(what: str, measured: float, ref: float) -> str:
    return f"{what}: {100 * measured:.2f} % vs {100 * ref:.2f} % measured independently"


@pytest.mark.parametrize("kind", KINDS)
def test_trained_network_and_its_preset(tier, kind):
    """The fixture is what the tier claims: timm's preset of the kind (interpolation, mean,
    std) recorded in the weights, the classes of the folder, and clearly above chance."""
    import timm

    t = tier.trained(kind)
    cfg = timm.models.get_pretrained_cfg(t.net.arch).to_dict()
    g = t.geometry
    assert cfg["interpolation"] == t.net.interpolation == g.interpolation
    assert (g.mean, g.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert g.size == 32 and g.resize is not None and g.resize > g.size  # resize, then crop
    ref = reference(tier, kind)
    assert t.metadata["classes"] == ref["classes"]
    assert ref["accuracy"] > 0.6, ref["accuracy"]


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_reports_the_accuracy_of_an_independent_loop(tier, kind):
    """``isplit analyze`` on the folder: the accuracy it prints and records, and the one
    ``isplit train`` recorded in the weights (the same test images), each within 0.5 pp of
    a plain PIL + torch loop; the weights' preprocessing used; no warning."""
    ref = reference(tier, kind)["accuracy"]
    run, stdout, stderr = tier.analysis(kind)
    curves = tier.curves(kind)
    assert curves["dataset"]["images"] == TEST_IMAGES
    assert curves["dataset"]["classes"] == reference(tier, kind)["classes"]
    recorded_here = curves["accuracy"]
    assert within(recorded_here, ref), _message("curves.json accuracy", recorded_here, ref)
    printed = float(re.search(r"model accuracy on the analysed images: ([\d.]+)", stdout)[1])
    assert within(printed, ref), _message("printed accuracy", printed, ref)
    recorded = tier.trained(kind).metadata["accuracy"]
    assert within(recorded, ref), _message("accuracy the weights record", recorded, ref)
    pp = tier.trained(kind).metadata["preprocess"]
    assert curves["settings"]["preprocess"] == pp
    assert "isplit: warning" not in stderr, stderr
    g = tier.trained(kind).geometry  # the preprocessing used, as analyze states it
    said = re.search(r"preprocessing: (.*)", stdout + stderr)[1]
    assert f"resize the shorter side to {g.resize} ({g.interpolation})" in said, said
    assert f"crop {g.size}" in said and f"mean {', '.join(f'{m:g}' for m in g.mean)}" in said


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_records_its_self_checks(tier, kind):
    """A healthy analysis of trained weights records the checks of its accuracy (vs chance, vs
    the weights' record) and of the class names, all passed."""
    curves = tier.curves(kind)
    checks = {c["name"]: c for c in curves.get("checks") or []}
    for name in ("accuracy_vs_chance", "accuracy_vs_recorded", "class_names"):
        assert name in checks and checks[name]["passed"], (name, curves.get("checks"))


@pytest.mark.parametrize("kind", ["bicubic", "bilinear"])
def test_cui_equals_gradcam_by_hooks(tier, kind):
    """CUI per image at 3 N x C x H x W points (first, middle, last that are module outputs)
    equals Grad-CAM computed with hooks on the timm network, on 2 images of each class: both
    fed the same inputs (PIL's), so that the Grad-CAM arithmetic alone is compared (the
    preprocessing is held to PIL's by the accuracy tests). The command line's run agrees with
    them within what the rounding of resized pixels moves, and its curve is its images' mean."""
    from torch.utils.data import TensorDataset

    import isplit

    ref = reference(tier, kind)
    run = tier.analysis(kind)[0]
    curves = tier.curves(kind)
    modules = dict(ref["net"].named_modules())
    nchw = [p for p in curves["points"] if (p.get("layout") or {}).get("axes") == "NCHW"]
    eligible = [p["name"] for p in nchw if p["admissible"] and p["name"] in modules]
    assert len(eligible) >= 3, eligible
    names = [eligible[0], eligible[len(eligible) // 2], eligible[-1]]
    per_image = np.load(run / "per_image.npz")
    assert per_image["cui"].shape[0] == TEST_IMAGES
    np.testing.assert_array_equal(per_image["labels"], ref["labels"])  # the same image order
    idx = np.concatenate([np.flatnonzero(ref["labels"] == c)[:2] for c in range(10)])
    ours = gradcam_cui(ref["net"], ref["x"][idx], ref["labels"][idx], names)
    t = tier.trained(kind)
    same = TensorDataset(ref["x"][idx], torch.as_tensor(ref["labels"][idx]))
    theirs = isplit.analyze(isplit.load_model(t.net.model, str(t.weights)), same, points=names,
                            predictors=["cui"], batch_size=len(idx), progress=False)  # fmt: skip
    columns = list(per_image["points"])
    for k, name in enumerate(names):
        np.testing.assert_allclose(
            theirs.per_image[:, k], ours[name], rtol=1e-4,
            atol=1e-6 * float(np.abs(ours[name]).max()), err_msg=f"{kind} {name}",
        )  # fmt: skip
        cli_run = per_image["cui"][idx, columns.index(name)]
        assert np.median(np.abs(cli_run - ours[name]) / np.abs(ours[name]).max()) < 0.01
        point = next(p for p in curves["points"] if p["name"] == name)
        mean = float(np.mean(per_image["cui"][:, columns.index(name)]))
        assert point["cui"] == pytest.approx(mean, rel=1e-4), name


def test_plain_folder_trains_and_tests_on_disjoint_images(tier, tmp_path):
    """The new user's path: the bicubic network trained by ``isplit train`` on one folder
    without split sub-folders (``<class>/<image>``), then analysed there. Training tested on
    the images the README's rule holds out (the weights record their accuracy: the independent
    loop's on exactly those images, within 0.5 pp); ``analyze`` reads those images by default
    and reports that accuracy too, and so does ``validate``'s unsplit model."""
    t = tier.trained("bicubic", plain=True)
    files, classes, labels = image_files(t.data)
    held = np.array([held_out(f.relative_to(t.data).as_posix()) for f in files])
    assert 0 < held.sum() < len(files)
    net = timm_net(t.net.arch, t.weights, t.geometry.size, len(classes))
    pred = predict(net, pil_inputs([f for f, h in zip(files, held) if h], t.geometry))
    ref = float((pred == labels[held]).mean())
    assert ref > 0.6, ref
    assert t.metadata.get("holdout") == 0.2, t.metadata.get("holdout")
    recorded = t.metadata["accuracy"]
    assert within(recorded, ref), _message("accuracy the weights record", recorded, ref)

    out = tmp_path / "run"
    stdout, stderr = cli(
        "analyze", "--model", t.net.model, "--weights", t.weights, "--data", t.data,
        "--workers", "0", "--quiet", "--out", out,
    )  # fmt: skip
    curves = json.loads((out / "curves.json").read_text())
    assert curves["dataset"]["images"] == held.sum()
    np.testing.assert_array_equal(np.load(out / "per_image.npz")["labels"], labels[held])
    assert within(curves["accuracy"], ref), _message("analyze's accuracy", curves["accuracy"], ref)
    assert "isplit: warning" not in stderr, stderr

    stdout, _ = cli(
        "validate", "--analysis", out, "--model", t.net.model, "--weights", t.weights,
        "--data", t.data, "--points", ",".join(_two_points(curves)), "--epochs", "1",
        "--train-limit", "200", "--bootstrap", "10", "--workers", "0", "--quiet",
        "--out", tmp_path / "validation",
    )  # fmt: skip
    record = json.loads((tmp_path / "validation" / "validation.json").read_text())
    unsplit = record["unsplit_accuracy"]
    assert within(unsplit, ref), _message("validate's unsplit accuracy", unsplit, ref)


def _relabelled(tier, tmp_path, rename) -> tuple:
    """The test images in a folder of their own whose class folders are ``rename``d (old name
    -> new), as symbolic links; the trained bicubic network."""
    t = tier.trained("bicubic")
    folder = tmp_path / "data"
    for cls in (t.data / "test").iterdir():
        (folder / rename(cls.name)).mkdir(parents=True)
        for f in cls.iterdir():
            (folder / rename(cls.name) / f.name).symlink_to(f)
    return t, folder


def _analyze_flagged(t, folder, out) -> tuple[int, str, dict | None]:
    from isplit.cli import main

    err = io.StringIO()
    argv = [
        "analyze", "--model", t.net.model, "--weights", str(t.weights), "--data", str(folder),
        "--split", "all", "--workers", "0", "--quiet", "--out", str(out),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    curves = json.loads((out / "curves.json").read_text()) if code == 0 else None
    return code, err.getvalue(), curves


def test_classes_in_another_order_are_flagged(tier, tmp_path):
    """The weights' classes under the same names but holding each other's images (the data set's
    class order is not the weights'): the accuracy falls far below the weights' record;
    analyze warns and records the failed check, and the report's first screen shows it and flags
    the accuracy."""
    classes = tier.trained("bicubic").metadata["classes"]
    shifted = dict(zip(classes, classes[1:] + classes[:1]))
    t, folder = _relabelled(tier, tmp_path, lambda name: shifted[name])
    code, err, curves = _analyze_flagged(t, folder, tmp_path / "run")
    assert code == 0, err
    assert curves["accuracy"] < 0.3
    failed = {c["name"] for c in curves.get("checks") or [] if not c["passed"]}
    assert "accuracy_vs_recorded" in failed, curves.get("checks")
    assert "isplit: warning" in err, err
    cli("report", tmp_path / "run", "--samples", "0")
    html = (tmp_path / "run" / "report.html").read_text()
    assert '<div class="warn checks">' in html
    cell = re.search(r"Model accuracy</th><td>(.*?)</td>", html)[1]
    assert "not to be trusted" in cell and "accuracy_vs_recorded" in cell, cell


def test_other_class_names_are_flagged(tier, tmp_path):
    """A data set whose class folders have other names than the weights record: an error (one
    line), or a warning and the failed ``class_names`` check recorded."""
    t, folder = _relabelled(tier, tmp_path, lambda name: f"c-{name}")
    code, err, curves = _analyze_flagged(t, folder, tmp_path / "run")
    if code == 2:
        assert user_error(code, err) and "class" in err, err
    else:
        assert code == 0, err
        failed = {c["name"] for c in curves.get("checks") or [] if not c["passed"]}
        assert "class_names" in failed, curves.get("checks")
        assert "isplit: warning" in err, err


def _two_points(curves: dict) -> list[str]:
    admissible = [p["name"] for p in curves["points"] if p["admissible"]]
    best = curves["best"]
    return [admissible[0], best] if best != admissible[0] else admissible[:2]


@pytest.mark.parametrize("kind", COMMAND_KINDS)
def test_validate_measures_the_independent_unsplit_accuracy(tier, kind, tmp_path):
    """``isplit validate --analysis`` at 2 points, 1 epoch: the unsplit accuracy it prints and
    records within 0.5 pp of the independent loop; the reused analysis agrees with it."""
    ref = reference(tier, kind)["accuracy"]
    t = tier.trained(kind)
    run = tier.analysis(kind)[0]
    out = tmp_path / "validation"
    stdout, stderr = cli(
        "validate", "--analysis", run, "--model", t.net.model, "--weights", t.weights,
        "--data", t.data, "--points", ",".join(_two_points(tier.curves(kind))),
        "--epochs", "1", "--train-limit", "200", "--bootstrap", "10", "--workers", "0",
        "--quiet", "--out", out,
    )  # fmt: skip
    record = json.loads((out / "validation.json").read_text())
    assert within(record["unsplit_accuracy"], ref), _message(
        "validate's unsplit accuracy", record["unsplit_accuracy"], ref
    )
    printed = float(re.search(r"unsplit accuracy: ([\d.]+)", stdout)[1])
    assert within(printed, ref), _message("validate's printed unsplit accuracy", printed, ref)
    checks = {c["name"]: c for c in record.get("checks") or []}
    assert checks.get("reused_analysis_accuracy", {}).get("passed"), record.get("checks")


@pytest.mark.parametrize("kind", COMMAND_KINDS)
def test_export_checks_the_independent_accuracy(tier, kind):
    """``isplit export`` at the best split, checked on every test image: the unsplit and split
    accuracies its manifest records within 0.5 pp of the independent loop, the ONNX parts
    agreeing with the network, its self-checks (vs chance, vs the analysis) recorded, passed."""
    ref = reference(tier, kind)["accuracy"]
    folder, stdout = tier.export(kind, tier.curves(kind)["best"])
    manifest = json.loads((folder / "manifest.json").read_text())
    acc = manifest["accuracy"]
    assert acc["check_images"] == TEST_IMAGES
    for key in ("unsplit", "split", "split_int8"):
        assert within(acc[key], ref), _message(f"export's {key} accuracy", acc[key], ref)
    assert manifest["checks"]["agreement"] == 1.0
    assert manifest["checks"]["agreement_int8"] >= 0.99
    assert manifest["checks"]["end_to_end_max_abs_diff"] < 1e-3
    recorded = {c["name"]: c["passed"] for c in manifest["checks"].get("self_checks") or []}
    assert recorded == {"accuracy_vs_chance": True, "reused_analysis_accuracy": True}, recorded


def _served(tier, kind: str) -> dict:
    """``isplit serve`` of the export and ``isplit infer --json`` of every test image, through
    a proxy that counts the request bodies (once per session)."""
    from serving import serve

    def make():
        ref = reference(tier, kind)
        folder, _ = tier.export(kind, tier.curves(kind)["best"])
        with serve(folder) as server, BodyCounter(server.url) as proxy:
            stdout, _ = cli("infer", folder, *ref["files"], "--server", proxy.url, "--json")
        posts = [n for method, path, n in proxy.requests if method == "POST"]
        return {"lines": json_lines(stdout), "posts": posts}

    return tier._once(("served", kind), make)


@pytest.mark.parametrize("kind", COMMAND_KINDS)
def test_serve_and_infer_give_the_independent_predictions(tier, kind):
    """Every test image sent through ``isplit infer`` to ``isplit serve`` (8-bit): the accuracy
    within 0.5 pp of the independent loop, and the same class for nearly every image."""
    ref = reference(tier, kind)
    lines = _served(tier, kind)["lines"]
    assert [line["image"] for line in lines] == [str(f) for f in ref["files"]]
    assert all("error" not in line for line in lines), [x for x in lines if "error" in x][:3]
    got = np.array([line["index"] for line in lines])
    assert [line["class"] for line in lines] == [ref["classes"][i] for i in got]
    accuracy = float((got == ref["labels"]).mean())
    message = _message("infer's accuracy", accuracy, ref["accuracy"])
    assert within(accuracy, ref["accuracy"]), message
    assert (got == ref["predictions"]).mean() >= 0.99


@pytest.mark.parametrize("kind", COMMAND_KINDS)
def test_plan_bytes_are_what_a_request_sends(tier, kind, tmp_path):
    """``isplit plan``'s bytes at the exported point are the HTTP body ``isplit infer`` sent
    for one image (counted on the wire), and what infer reports."""
    served = _served(tier, kind)
    point = tier.curves(kind)["best"]
    run = shutil.copytree(tier.analysis(kind)[0], tmp_path / "run")
    cli("plan", run, "--bandwidth", "10Mbit/s", "--rtt", "20ms", "--repeats", "2", "--out", run)
    plan = json.loads((run / "plan.json").read_text())
    assert not [c for c in plan.get("checks") or [] if not c["passed"]], plan.get("checks")
    row = next(p for p in plan["points"] if p["name"] == point)
    posts = served["posts"]
    assert len(posts) == TEST_IMAGES  # one request per image
    assert set(posts) == {row["bytes"]}, (sorted(set(posts)), row["bytes"])
    assert {line["bytes"] for line in served["lines"]} == {row["bytes"]}


@pytest.mark.parametrize("kind", COMMAND_KINDS)
def test_report_header_states_the_independent_accuracy(tier, kind, tmp_path):
    """The report's first screen states the accuracy the independent loop measures, with no
    failed check and no flag on a healthy run."""
    ref = reference(tier, kind)["accuracy"]
    run = shutil.copytree(tier.analysis(kind)[0], tmp_path / "run")
    cli("report", run, "--samples", "0")
    html = (run / "report.html").read_text()
    cell = re.search(r"Model accuracy</th><td>(.*?)</td>", html)[1]
    shown = float(re.match(r"([\d.]+) %", cell)[1]) / 100
    assert abs(shown - ref) <= 0.005 + 0.0005, _message("the report's accuracy", shown, ref)
    assert '<div class="warn checks">' not in html and "not to be trusted" not in cell, cell
