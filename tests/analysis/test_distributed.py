"""Distributed analysis: 2 processes (gloo, CPU) give the single-process result; a rank killed
mid-run resumes from its own checkpoint; bad --nproc and other runs' checkpoints are clear
errors."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import isplit_process, user_error
from isplit.cli import main
from isplit.distributed import shard, strip_nproc

# 403 images: shares of 201 and 202, neither a multiple of the batch size
IMAGES = 403
ARGS = ["analyze", "--limit", str(IMAGES), "--batch-size", "8", "--quiet", "--workers", "0"]
# one thread per process: on a machine shared with other jobs OpenMP threads spin-waiting on
# each other make small batches many times slower (and the same thread count keeps the
# single- and multi-process numbers alike)


def finished(*argv: str) -> str:
    proc = isplit_process(*argv)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def load(run: Path) -> tuple[dict, dict]:
    with np.load(run / "per_image.npz") as npz:
        return json.loads((run / "curves.json").read_text()), {k: npz[k] for k in npz.files}


def assert_same_result(a: Path, b: Path) -> None:
    (ja, na), (jb, nb) = load(a), load(b)
    assert ja["dataset"]["images"] == jb["dataset"]["images"] == IMAGES
    assert ja["settings"] == jb["settings"] and ja["fingerprint"] == jb["fingerprint"]
    assert ja["best"] == jb["best"] and ja["candidates"] == jb["candidates"]
    np.testing.assert_allclose(
        [p["cui"] for p in ja["points"]], [p["cui"] for p in jb["points"]], rtol=1e-6
    )
    for c in ja["per_class"]:
        np.testing.assert_allclose(ja["per_class"][c], jb["per_class"][c], rtol=1e-6)
    np.testing.assert_array_equal(na["labels"], nb["labels"])
    np.testing.assert_array_equal(na["predictions"], nb["predictions"])
    np.testing.assert_allclose(na["cui"], nb["cui"], rtol=1e-5, atol=1e-12)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    finished(*ARGS, "--out", str(out))
    return out


def test_two_processes_give_the_single_process_result(single, tmp_path):
    out = finished(*ARGS, "--out", str(tmp_path), "--nproc", "2")
    assert out.count("best split:") == 1  # rank 0 alone prints and writes
    assert_same_result(single, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "curves.json",
        "curves.png",
        "per_image.npz",
    ]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _rank(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in env if v.startswith(b"RANK=")), None)


def test_a_killed_rank_resumes_from_its_checkpoint(single, tmp_path):
    run = tmp_path / "run"
    proc = isplit_process(*ARGS, "--out", str(run), "--nproc", "2", "--checkpoint-every", "1")
    files = [run / f"checkpoint-rank{r}-of-2.npz" for r in (0, 1)]
    deadline = time.monotonic() + 300
    while not all(f.exists() for f in files):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoints within 5 minutes"
        time.sleep(0.01)
    rank1 = [pid for pid in _children(proc.pid) if _rank(pid) == 1]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and not (run / "curves.json").exists()
    positions = []
    for f in files:
        assert f.exists()  # each rank keeps its own share's checkpoint
        with np.load(f) as npz:
            positions.append(json.loads(str(npz["meta"]))["position"])
    assert positions[1] < IMAGES // 2 + 1  # rank 1 (its share: 202 images) was killed mid-run

    # the same command resumes each share where its checkpoint stopped
    finished(*ARGS, "--out", str(run), "--nproc", "2")
    assert not any(f.exists() for f in files)
    assert_same_result(single, run)


def test_checkpoints_of_another_process_count_are_refused(tmp_path, cli_error):
    (tmp_path / "checkpoint-rank0-of-3.npz").write_bytes(b"")
    message = cli_error(*ARGS, "--out", str(tmp_path), "--limit", "16")
    assert "on 3 process(es)" in message and "--nproc 3" in message
    assert not (tmp_path / "curves.json").exists()


def test_nproc_beyond_the_machine_is_a_clear_error(tmp_path, cli_error):
    out = tmp_path / "run"
    too_many = str((os.cpu_count() or 1) + 1)
    assert "more processes than this machine has" in cli_error(
        *ARGS, "--out", str(out), "--nproc", too_many
    )
    assert "--nproc must be at least 1" in cli_error(*ARGS, "--out", str(out), "--nproc", "0")
    assert not out.exists()


@pytest.mark.parametrize("n,k", [(301, 2), (10, 3), (7, 7), (1000, 4)])
def test_shards_hold_every_image_once(n, k):
    parts = [shard(n, r, k) for r in range(k)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_more_processes_than_images_is_an_error():
    from isplit import IsplitError

    with pytest.raises(IsplitError, match="cannot be shared among 4 processes"):
        shard(3, 0, 4)


def test_strip_nproc():
    assert strip_nproc(["analyze", "--nproc", "2", "--limit", "5"]) == ["analyze", "--limit", "5"]
    assert strip_nproc(["analyze", "--nproc=2", "--quiet"]) == ["analyze", "--quiet"]


VALIDATE = [
    "validate",
    "--points",
    "features.33,features.42",
    "--epochs",
    "2",
    "--train-limit",
    "400",
    "--test-limit",
    "100",
    "--batch-size",
    "32",
    "--bootstrap",
    "20",
    "--quiet",
]


def test_two_processes_validate_as_one(tmp_path):
    # the analysis both validations read: made in this process (one Python start fewer)
    assert main(["analyze", "--limit", "200", "--quiet", "--out", str(tmp_path / "one")]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    finished(*VALIDATE, "--analysis", str(tmp_path / "one"))
    out = finished(*VALIDATE, "--analysis", str(tmp_path / "two"), "--nproc", "2")
    assert out.count("unsplit accuracy") == 1  # rank 0 alone prints
    one, two = (json.loads((tmp_path / d / "validation.json").read_text()) for d in ("one", "two"))
    for doc in (one, two):
        for p in doc["points"]:
            p.pop("train_seconds")
    assert two == one  # every point trained with the same seeds, whichever process ran it
    assert [p["name"] for p in two["points"]] == ["features.33", "features.42"]
    assert two["points"][1]["accuracy"] > 0.5  # next to the logits two epochs are enough
    for d in ("one", "two"):
        points = tmp_path / d / "validation_points"
        files = {f.name: json.loads(f.read_text()) for f in points.glob("*.json")}
        assert sorted(files) == ["features.33.json", "features.42.json"]
        # each rank also saved the bottleneck it trained, for `isplit export --bottleneck`
        assert sorted(f.name for f in points.glob("*.safetensors")) == [
            "features.33.safetensors",
            "features.42.safetensors",
        ]
    assert (
        files["features.42.json"]["correct"]
        == json.loads((tmp_path / "one" / "validation_points" / "features.42.json").read_text())[
            "correct"
        ]
    )


def test_a_checkpoint_of_another_run_stops_every_process_with_one_line(tmp_path):
    from isplit.analysis.checkpoint import save_checkpoint
    from isplit.analysis.curves import CurveAccumulator

    ckpt = tmp_path / "checkpoint-rank1-of-2.npz"
    save_checkpoint(ckpt, CurveAccumulator(3, 10), None, 4, [], "another run", [1, 32, 32])
    before = ckpt.read_bytes()
    proc = isplit_process(*ARGS, "--limit", "40", "--out", str(tmp_path), "--nproc", "2")
    _, err = proc.communicate(timeout=300)
    assert "checkpoint of a different analysis" in user_error(proc.returncode, err)
    assert ckpt.read_bytes() == before and not (tmp_path / "curves.json").exists()
