"""`isplit validate`'s data options reach every loader of the sweep (--skip-bad-images,
--workers), and options no sweep can run with are one-line errors before any work."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import isplit.validation.cache as cache
from isplit.cli import main


def _split_folder(root: Path) -> Path:
    """train/ and test/ of two classes (8 images each), one unreadable file in each split."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                img = rng.integers(0, 255, (28, 28), dtype=np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
        (root / split / "dog" / "broken.png").write_bytes(b"not an image at all")
    return root


def test_skip_bad_images_and_workers_reach_the_bottleneck_loaders(tmp_path, monkeypatch, capsys):
    data = _split_folder(tmp_path / "imgs")
    seen = []
    real = cache.make_loader

    def recording(ds, batch_size, **kw):
        seen.append(kw)
        return real(ds, batch_size, **kw)

    monkeypatch.setattr(cache, "make_loader", recording)
    out = tmp_path / "run"
    argv = [
        "validate",
        "--data",
        str(data),
        "--skip-bad-images",
        "--workers",
        "0",
        "--quiet",
        "--match-classes",
        "position",
    ]
    argv += ["--points", "features.42", "--epochs", "1", "--bootstrap", "10", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "validation.json").read_text())
    assert [p["name"] for p in doc["points"]] == ["features.42"]
    assert doc["settings"]["test_images"] == 16  # the readable ones, the broken one skipped
    assert doc["settings"]["skip_bad_images"] is True and doc["settings"]["workers"] == 0
    # the head's outputs on train and test, and the unsplit model's on test
    assert len(seen) == 3
    assert all(kw == {"workers": 0, "skip_bad_images": True} for kw in seen)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--lr", "-1"], "--lr must be a number, 0 or more"),
        (["--lr", "nan"], "--lr must be a number, 0 or more"),
        (["--recon", "-1"], "--recon is a loss weight: give 0 or more"),
        (["--distill", "-1"], "--distill is a loss weight: give 0 or more"),
        (["--k", "0"], "--k must be at least 1"),
        (["--bootstrap", "0"], "--bootstrap must be at least 10"),
        (["--workers", "-1"], "--workers must be at least 0"),
    ],
)
def test_options_no_sweep_can_run_with_are_one_line_errors(cli_error, tmp_path, option, message):
    out = tmp_path / "run"
    err = cli_error("validate", "--limit", "8", "--quiet", "--out", str(out), *option)
    assert message in err
    assert not out.exists()  # refused before the analysis
