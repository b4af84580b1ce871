"""An export that survives production: it refuses a bottleneck that did not learn, records the
accuracies against the unsplit network, fails on a full disk with one line and nothing left
behind, and cleans up after an export that was killed (but not after one still running)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import isplit
from helpers import ENV, disk_listing
from isplit.analysis import Analysis
from isplit.cli import main
from isplit.deploy import Manifest
from isplit.deploy.export import export_split
from isplit.deploy.staging import build_folder, remove_leftovers
from isplit.validation import Settings, validate


@pytest.fixture(scope="module")
def unlearned(demo_run, tmp_path_factory):
    """A validation run whose bottleneck at the demo's best point never trained (lr 0): at
    chance, marked as not learned."""
    demo = isplit.load_model("demo-vgg16")
    test = isplit.load_dataset("fashion-mnist", "test", demo.preprocess)
    train = isplit.load_dataset("fashion-mnist", "train", demo.preprocess)
    out = tmp_path_factory.mktemp("unlearned") / "validation"
    a = Analysis.load(demo_run)
    settings = Settings(epochs=1, train_limit=64, test_limit=100, batch_size=32, lr=0.0,
                        n_boot=10)  # fmt: skip
    report = validate(demo.model, a, train, test, out, points=[a.best], settings=settings)
    assert not report.points[0]["learned"]
    return out


def test_export_refuses_a_bottleneck_that_did_not_learn(unlearned, demo_run, tmp_path, cli_error,
                                                         capsys, caplog):  # fmt: skip
    out = tmp_path / "exported"
    args = ["export", "--bottleneck", str(unlearned), "--analysis", str(demo_run), "--out",
            str(out), "--check-images", "32"]  # fmt: skip
    err = cli_error(*args)
    assert "did not learn in its validation" in err and "--allow-unlearned" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []

    assert main([*args, "--allow-unlearned"]) == 0
    printed = capsys.readouterr()
    assert "exporting it anyway (--allow-unlearned)" in caplog.text  # a warning
    assert "the bottleneck did NOT learn" in printed.out
    m = Manifest.load(out)
    a = m.accuracy
    assert a["validation"]["learned"] is False and a["validation"]["accuracy"] < 0.3
    assert a["validation"]["unsplit_accuracy"] > 0.8 and a["check_images"] == 32
    # against the unsplit network, not the split PyTorch one (which the ONNX matches exactly)
    assert a["agreement_with_unsplit"] == m.checks["agreement"] < 0.5
    assert a["unsplit"] > 0.8 and a["split"] < 0.5
    assert m.checks["end_to_end_max_abs_diff"] < 1e-3
    assert f"agree with the unsplit network's on {a['agreement_with_unsplit']:.1%}" in printed.out


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(demo_run, small_disk, cli_error):
    out = small_disk / "exported"
    err = cli_error("export", "--analysis", str(demo_run), "--out", str(out),
                    "--check-images", "8")  # fmt: skip
    assert f"cannot write {out}: No space left on device" in err
    assert disk_listing(small_disk) == []  # no folder, no hidden .exported.XXXXXXXX.tmp


#: An export that stops for good once it has written its programs (then killed with SIGKILL).
#: The network: tests/tiny_nets.py's plain CNN, which exports in a fraction of demo-vgg16's time.
_HANGING_EXPORT = """
import sys, time
sys.path.insert(0, sys.argv[2])
import isplit
from isplit.deploy import export

def hang(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(120)

export._check = hang
export.export_split(isplit.load_model("tiny_nets:plain", "none", image_size=28), "1", sys.argv[1])
"""


def test_the_next_export_removes_what_a_killed_one_left(tmp_path):
    out = tmp_path / "exported"
    tests = str(Path(__file__).resolve().parents[1])
    p = subprocess.Popen([sys.executable, "-c", _HANGING_EXPORT, str(out), tests], env=ENV,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout.readline() == "writing\n"
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    left = list(tmp_path.glob(".exported.*.tmp"))
    assert len(left) == 1 and (left[0] / "head.onnx").is_file() and not out.exists()
    export_split(isplit.load_model("tiny_nets:plain", "none", image_size=28), "1", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_leftovers_of_running_exports_and_foreign_folders_are_kept(tmp_path):
    out = tmp_path / "exported"
    dead = tmp_path / ".exported.abcd1234.tmp"  # a killed export's: programs, a half file
    dead.mkdir()
    (dead / "head.onnx").write_bytes(b"x")
    (dead / ".tail.onnx.k2j4h5.tmp").write_bytes(b"x")
    foreign = tmp_path / ".exported.zzzz9999.tmp"  # the same shape of name, not our files
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with build_folder(out) as running:  # another export, still building
        assert not dead.exists() and foreign.exists()
        assert remove_leftovers(out) == [] and running.is_dir()
    assert not running.exists()  # left without being put in place: removed
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name]
