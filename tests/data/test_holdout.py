"""A folder without split sub-folders: a deterministic, disjoint hold-out by a hash of each file's
path (train, test, all), recorded, said in one line; train and validate never test on training
images; the --limit sample follows --seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isplit.cli import main
from isplit.data import Preprocess, load_dataset
from isplit.data.folders import HOLDOUT, held_out, holdout_note
from isplit.data.load import load_train_test, shared_images
from isplit.errors import IsplitError
from isplit.models import read_metadata

PP = Preprocess(size=8, channels=1, mean=(0.0,), std=(1.0,))


def plain_folder(root: Path, per_class: int = 30, classes=("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


def names(ds) -> set[str]:
    return {Path(p).relative_to(Path(ds.name)).as_posix() for p in ds.paths}


def test_train_and_test_of_a_plain_folder_are_disjoint_and_cover_it(tmp_path):
    folder = plain_folder(tmp_path / "f")
    train = load_dataset(str(folder), "train", PP)
    test = load_dataset(str(folder), "test", PP)
    every = load_dataset(str(folder), "all", PP)
    assert len(every) == 60 and not names(train) & names(test)
    assert names(train) | names(test) == names(every)
    assert 0 < len(test) < len(train)  # about a fifth held out
    assert names(test) == {n for n in names(every) if held_out(n, HOLDOUT)}
    assert load_dataset(str(folder), "val", PP).paths == test.paths
    # recorded: which side, which share, of how many
    assert test.describe()["holdout"] == {"share": 0.2, "side": "test", "folder_images": 60}
    assert train.describe()["split"] == "train" and train.describe()["holdout"]["side"] == "train"
    assert every.describe()["holdout"] == {"side": "all", "folder_images": 60}


def test_the_hold_out_is_the_same_wherever_the_folder_lies(tmp_path):
    a = plain_folder(tmp_path / "here")
    b = Path(shutil.copytree(a, tmp_path / "elsewhere" / "copy"))
    (b / "b" / "extra.png").write_bytes((b / "b" / "000.png").read_bytes())  # one file more
    test_a, test_b = load_dataset(str(a), "test", PP), load_dataset(str(b), "test", PP)
    assert names(test_a) <= names(test_b)  # a file keeps its side when others are added
    assert names(test_b) - names(test_a) <= {"b/extra.png"}


def test_another_share_is_recorded_in_the_split_and_reopens_the_same_images(tmp_path):
    folder = plain_folder(tmp_path / "f")
    test = load_dataset(str(folder), "test", PP, holdout=0.5)
    assert test.split == "test@0.5" and test.describe()["holdout"]["share"] == 0.5
    assert len(test) > len(load_dataset(str(folder), "test", PP))
    assert load_dataset(str(folder), test.split, PP).paths == test.paths  # as report reopens it


@pytest.mark.parametrize(
    ("split", "holdout", "message"),
    [
        ("training", 0.2, "no split sub-folders.*train.*test.*all"),
        ("test", 0.0, "--holdout must be a share strictly between 0 and 1"),
        ("test", 1.0, "--holdout must be"),
        ("test@x", 0.2, "after @ comes the hold-out share"),
    ],
)
def test_bad_splits_and_shares_are_one_line_errors(tmp_path, split, holdout, message):
    folder = plain_folder(tmp_path / "f", per_class=3)
    with pytest.raises(IsplitError, match=message):
        load_dataset(str(folder), split, PP, holdout=holdout)


def test_a_side_without_images_is_an_error(tmp_path):
    folder = plain_folder(tmp_path / "f", per_class=1)
    side = "test" if not any(held_out(f"{c}/000.png", 0.01) for c in "ab") else "train"
    with pytest.raises(IsplitError, match="none of its 2 images.*--split all"):
        load_dataset(str(folder), side, PP, holdout=0.01)


def test_train_and_test_never_share_images(tmp_path):
    folder = plain_folder(tmp_path / "f")
    train, test, note = load_train_test(str(folder), "train", "test", PP)
    assert shared_images(train, test) == 0
    assert note == (
        f"{folder} has no split sub-folders: divided by a hash of each file's path, "
        f"{len(test)} of its 60 images (20%, --holdout) held out for testing, the other "
        f"{len(train)} for training"
    )
    with pytest.raises(IsplitError, match=f"share {len(test)} image"):
        load_train_test(str(folder), "all", "test", PP)
    split = tmp_path / "s"
    plain_folder(split / "train", per_class=2)
    plain_folder(split / "test", per_class=2)
    with pytest.raises(IsplitError, match="share 4 image"):
        load_train_test(str(split), "train", "train", PP)
    train, test, note = load_train_test(str(split), "train", "test", PP)
    assert note is None and shared_images(train, test) == 0
    with pytest.raises(IsplitError, match="share"):
        load_train_test("digits", "test", "test", PP)


def test_notes_say_which_images_were_read(tmp_path):
    folder = plain_folder(tmp_path / "f")
    every = load_dataset(str(folder), "all", PP)
    assert holdout_note(every).startswith(f"read all 60 images of {folder} (no split sub-folders)")
    test = load_dataset(str(folder), "test", PP)
    assert holdout_note(test).startswith(f"read the held-out images of {folder}: {len(test)} of")
    assert holdout_note(load_dataset("digits", "test", PP)) is None


def test_train_on_a_plain_folder_tests_on_the_hold_out_and_records_it(tmp_path, capsys):
    folder = plain_folder(tmp_path / "f", per_class=20)
    out = tmp_path / "w.safetensors"
    argv = ["train", "--model", "demo-vgg16", "--data", str(folder), "--epochs", "1"]
    argv += ["--image-size", "32", "--batch-size", "16", "--workers", "0", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    test = load_dataset(str(folder), "test", PP)
    assert f"{len(test)} of its 40 images (20%, --holdout) held out for testing" in err
    md = read_metadata(str(out))
    assert md["split"] == "train" and md["test_split"] == "test" and md["holdout"] == 0.2
    # another share is another run, and its command line says so
    out2 = tmp_path / "w2.safetensors"
    assert main([*argv, "--out", str(out2), "--holdout", "0.3"]) == 0
    assert "--holdout 0.3" in read_metadata(str(out2))["command"]
    assert "of its 40 images (30%, --holdout) held out" in capsys.readouterr().err
    assert main([*argv, "--out", str(out2)]) == 2  # holdout 0.3 -> 0.2: not that run
    assert "holdout 0.3 -> 0.2" in capsys.readouterr().err
    # a later analysis of these weights reads the images their training held out
    run = tmp_path / "run"
    analyze = ["analyze", "--weights", str(out2), "--data", str(folder), "--quiet"]
    assert main([*analyze, "--predictors", "cui", "--workers", "0", "--out", str(run)]) == 0
    held = load_dataset(str(folder), "test", PP, holdout=0.3)
    doc = json.loads((run / "curves.json").read_text())
    assert doc["dataset"]["split"] == "test@0.3" and doc["dataset"]["images"] == len(held)


def test_analyze_reads_the_hold_out_and_records_it(tmp_path, capsys):
    folder = plain_folder(tmp_path / "f", per_class=20)
    out = tmp_path / "run"
    argv = [
        "analyze",
        "--data",
        str(folder),
        "--image-size",
        "32",
        "--quiet",
        "--workers",
        "0",
        "--match-classes",
        "position",
    ]  # the demo network on two classes of its own
    assert main([*argv, "--out", str(out), "--predictors", "cui"]) == 0
    test = load_dataset(str(folder), "test", PP)
    err = capsys.readouterr().err
    assert f"isplit: read the held-out images of {folder}: {len(test)} of its 40" in err
    doc = json.loads((out / "curves.json").read_text())
    assert doc["dataset"]["images"] == len(test) and doc["dataset"]["split"] == "test"
    assert doc["dataset"]["holdout"] == {"share": 0.2, "side": "test", "folder_images": 40}


def test_the_limit_sample_follows_the_seed(tmp_path):
    """--seed draws the --limit sample (the help says so): two seeds, two samples."""
    runs = []
    for seed in ("0", "1", "1"):
        out = tmp_path / f"run{len(runs)}"
        argv = [
            "analyze",
            "--data",
            "digits",
            "--match-classes",
            "position",
            "--limit",
            "40",
            "--seed",
            seed,
            "--quiet",
        ]
        assert main([*argv, "--predictors", "cui", "--out", str(out)]) == 0
        with np.load(out / "per_image.npz") as npz:
            runs.append(npz["labels"].tolist())
    assert runs[1] == runs[2] and runs[0] != runs[1]


def test_validate_on_a_plain_folder_trains_and_tests_on_either_side(tmp_path, capsys):
    folder = plain_folder(tmp_path / "f", per_class=20)
    out = tmp_path / "run"
    argv = [
        "validate",
        "--data",
        str(folder),
        "--image-size",
        "32",
        "--workers",
        "0",
        "--quiet",
        "--match-classes",
        "position",
    ]
    argv += ["--points", "features.42", "--epochs", "1", "--bootstrap", "10", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    train = load_dataset(str(folder), "train", PP)
    test = load_dataset(str(folder), "test", PP)
    assert f"the other {len(train)} for training" in capsys.readouterr().err
    doc = json.loads((out / "validation.json").read_text())
    assert doc["settings"]["test_images"] == len(test) < 40
    assert main([*argv[:-1], str(tmp_path / "run2"), "--train-split", "all"]) == 2
    assert f"share {len(test)} image(s)" in capsys.readouterr().err
