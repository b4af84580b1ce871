"""`isplit report`: one self-contained HTML page for a run, checked as HTML and in a browser."""

import base64
import html
import io
import json
import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import user_error
from isplit.cli import main
from isplit.report import sample_indices

SECTIONS = ("summary", "curves", "points", "classes", "validation", "gradcam")
HEADINGS = ("Summary", "CUI and CDE curves", "Split points", "Classes", "Validation", "Grad-CAM")
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run(demo_run, tmp_path_factory):
    """The shared analysis of the demo network, copied: report.html is written into it."""
    return shutil.copytree(demo_run, tmp_path_factory.mktemp("report") / "run")


def report(capsys, *argv):
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def embedded_pngs(page: str) -> list[np.ndarray]:
    images = []
    for data in DATA_URI.findall(page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG"
            images.append(np.asarray(im.convert("RGB"), dtype=np.float64))
    return images


def assert_not_blank(pixels: np.ndarray, what: str) -> None:
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, what
    assert pixels.std() > 10, f"{what} looks blank (pixel std {pixels.std():.1f})"


def assert_self_contained(page: str) -> None:
    for attr in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:image/png;base64,", "#")), attr
    text = DATA_URI.sub('src=""', page)  # base64 data may hold any characters
    found = re.search(r"(?i)(?:https?|ftp|file):|//\w|url\(|<script|<link|<iframe|@import", text)
    assert found is None, found


def chromium(*args: str, cwd) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={cwd / 'profile'}",
    ]
    return subprocess.run(
        [exe, *flags, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_report_page_and_browser(run, capsys, tmp_path):
    code, out, err = report(capsys, str(run))
    assert code == 0, err
    path = run / "report.html"
    assert f"wrote {path}" in out
    page = path.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    assert_self_contained(page)
    doc = json.loads((run / "curves.json").read_text())
    assert f"best split: {doc['best']}" in page  # the recommendation sentence
    for c in doc["candidates"]:
        assert f"{c}</code>" in page
    assert page.count('<tr class="inadmissible">') == sum(
        not p["admissible"] for p in doc["points"]
    )
    assert "isplit validate --analysis" in page  # no validation yet: how to get it
    for cls in doc["dataset"]["classes"]:
        assert cls in page
    images = embedded_pngs(page)
    assert len(images) == 3  # curves, class heat map, Grad-CAM (no validation yet)
    for i, pixels in enumerate(images):
        assert_not_blank(pixels, f"embedded PNG {i}")
    # the Grad-CAM figure: one row per class (10), one column per candidate point + the image
    gradcam = images[-1]
    assert gradcam.shape[0] > 1000 and gradcam.shape[1] > 800
    assert not list(run.glob(".report.html.*"))  # the atomic write left no temporary file

    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (`make setup` installs it with apt-get)")
    shot = tmp_path / "shot.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1400,3000", path.as_uri(), cwd=tmp_path)
    assert shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        pixels = np.asarray(im.convert("RGB"))
    assert_not_blank(pixels.astype(np.float64), "the screenshot")
    # figures were drawn, not only text: many distinct colours
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
    shutil.copyfile(shot, run / "report.png")

    res = chromium("--dump-dom", path.as_uri(), cwd=tmp_path)
    dom = res.stdout
    assert "<main>" in dom, res.stderr[-2000:]
    for heading in HEADINGS:
        assert re.search(rf"<h2>{re.escape(heading)}[^<]*</h2>", dom), heading
    assert dom.count("<img ") == len(images)


def test_report_with_validation(run, capsys, tmp_path):
    vrun = tmp_path / "run"
    shutil.copytree(run, vrun)
    code = main(
        [
            "validate",
            "--analysis",
            str(vrun),
            "--points",
            "features.13,features.42",
            "--train-limit",
            "200",
            "--test-limit",
            "100",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--bootstrap",
            "20",
            "--quiet",
        ]
    )
    assert code == 0
    assert (vrun / "validation.png").stat().st_size > 10_000  # isplit validate drew it
    (vrun / "validation.png").unlink()  # the report draws it again when missing
    code, _, err = report(capsys, str(vrun), "--samples", "3")
    assert code == 0, err
    page = (vrun / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    section = page.split('<section id="validation">')[1].split("</section>")[0]
    assert "isplit validate --analysis" not in section
    for name in ("features.13", "features.42"):
        assert f"<code>{name}</code>" in section
    for words in ("Spearman", "Kendall", "prediction MAE", "Regret", "Unsplit model accuracy"):
        assert words in section, words
    assert "data:image/png;base64," in section
    images = embedded_pngs(page)
    assert len(images) == 4  # curves, heat map, validation, Grad-CAM
    for i, pixels in enumerate(images):
        assert_not_blank(pixels, f"embedded PNG {i}")
    assert (vrun / "validation.png").is_file()
    # three sample images: three rows, so a shorter figure than the default ten
    assert images[-1].shape[0] < 900


def test_report_user_errors(run, capsys, tmp_path):
    code, out, err = report(capsys, str(tmp_path / "nowhere"))
    assert out == "" and "not found" in user_error(code, err)

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "report.html").unlink(missing_ok=True)
    (broken / "per_image.npz").unlink()
    assert "per_image.npz" in user_error(*report(capsys, str(broken))[::2])
    assert not (broken / "report.html").exists()

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    (moved / "report.html").unlink(missing_ok=True)
    doc = json.loads((moved / "curves.json").read_text())
    doc["dataset"]["name"] = str(tmp_path / "gone")  # an image folder that no longer exists
    (moved / "curves.json").write_text(json.dumps(doc))
    assert "--data-root" in user_error(*report(capsys, str(moved))[::2])
    assert not (moved / "report.html").exists()
    # without the Grad-CAM figure the report needs neither the model nor the data
    code, _, err = report(capsys, str(moved), "--samples", "0")
    assert code == 0, err
    assert "--samples 0" in (moved / "report.html").read_text(encoding="utf-8")


def test_sample_indices_take_each_class_in_turn():
    targets = np.array([2, 0, 0, 1, 2, 0, 1])
    assert sample_indices(targets, 3) == [1, 3, 0]  # the first image of each class
    assert sample_indices(targets, 5) == [1, 3, 0, 2, 6]  # then the second of each
    assert sample_indices(targets, 100) == [1, 3, 0, 2, 6, 4, 5]


def test_the_suggested_validate_command_runs_for_a_non_default_run(capsys, tmp_path):
    """A random-weight demo-resnet50 on digits: the report's command must validate that run
    (its network, its data), not the demo on Fashion-MNIST."""
    run = tmp_path / "r50"
    argv = ["analyze", "--model", "demo-resnet50", "--weights", "none", "--seed", "3"]
    argv += ["--data", "digits", "--limit", "60", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    code, _, err = report(capsys, str(run), "--samples", "0")
    assert code == 0, err
    section = (run / "report.html").read_text(encoding="utf-8").split('id="validation"')[1]
    command = html.unescape(re.search(r"<code>(isplit validate [^<]*)</code>", section)[1])
    suggested = shlex.split(command)
    assert suggested[:4] == ["isplit", "validate", "--analysis", str(run)]
    assert suggested[4:] == ["--data", "digits"]  # the run's data; its network comes from RUN
    doc = json.loads((run / "curves.json").read_text())
    point = next(p["name"] for p in doc["points"] if p["admissible"])
    small = ["--points", point, "--epochs", "1", "--train-limit", "40", "--test-limit", "30"]
    small += ["--bootstrap", "10", "--batch-size", "20", "--quiet"]
    assert main(suggested[1:] + small) == 0, capsys.readouterr().err
    v = json.loads((run / "validation.json").read_text())
    assert v["model"] == "demo-resnet50" and [p["name"] for p in v["points"]] == [point]
    assert v["settings"]["test_images"] == 30


def test_the_suggested_command_names_the_data_the_run_used(run, tmp_path):
    from isplit.analysis import Analysis
    from isplit.data import FASHION_MNIST_SYSTEM_DIR, load_dataset
    from isplit.models import load_model
    from isplit.report import validate_command

    if not FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    root = tmp_path / "my data"
    shutil.copytree(FASHION_MNIST_SYSTEM_DIR, root)
    ds = load_dataset("fashion-mnist", "test", load_model("demo-vgg16").preprocess, root=str(root))
    assert ds.describe()["root"] == str(root.resolve())  # what analyze records in curves.json

    a = Analysis.load(run)
    a.dataset["root"] = str(root)
    assert shlex.split(validate_command(a, "runs/x")) == [
        *("isplit", "validate", "--analysis", "runs/x", "--data-root", str(root))
    ]
    a.dataset.update(name="/data/tiny-imagenet-200", split="val")
    del a.dataset["root"]
    assert shlex.split(validate_command(a, "runs/x", data_root="/mnt/tiny")) == [
        *("isplit", "validate", "--analysis", "runs/x", "--data", "/mnt/tiny", "--split", "val")
    ]
    a.settings["weights"] = None  # a model handed to isplit.analyze from Python
    assert validate_command(a, "runs/x") is None
