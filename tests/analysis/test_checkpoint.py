"""Checkpoints: a real `isplit analyze` killed with SIGKILL and rerun gives the same result as an
uninterrupted run; a checkpoint of another run is refused."""

import json
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from helpers import StopAt, isplit_process
from isplit import IsplitError
from isplit.analysis import analyze
from tiny_nets import small_rgb

IMAGES = "480"
# one thread per process: on a machine shared with other jobs, OpenMP threads spin-waiting on
# each other make a small-batch run many times slower
ARGS = ["analyze", "--limit", IMAGES, "--batch-size", "8", "--quiet", "--workers", "0"]


def kill_after_first_checkpoint(out) -> dict:
    """Start the analysis, SIGKILL it once its checkpoint exists; the checkpoint's metadata."""
    ckpt = out / "checkpoint.npz"
    proc = isplit_process(*ARGS, "--out", str(out), "--checkpoint-every", "1")
    deadline = time.monotonic() + 120
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.01)
    time.sleep(0.3)  # a few more batches
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with np.load(ckpt) as npz:
        meta = json.loads(str(npz["meta"]))
    assert 0 < meta["position"] < int(IMAGES), meta  # killed mid-run
    assert not (out / "curves.json").exists()
    return meta


def test_sigkilled_analysis_reruns_to_the_uninterrupted_result(tmp_path, cli_error):
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(killed)

    # a checkpoint of other settings is refused, and left as it was
    assert "checkpoint of a different analysis" in cli_error(
        *ARGS, "--out", str(killed), "--target", "predicted"
    )
    assert (killed / "checkpoint.npz").exists()

    rerun = isplit_process(*ARGS, "--out", str(killed))
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "resuming the analysis" in err
    assert not (killed / "checkpoint.npz").exists()
    assert not list(killed.glob(".*.tmp"))

    whole = tmp_path / "whole"
    _, err = isplit_process(*ARGS, "--out", str(whole)).communicate(timeout=300)
    assert (whole / "curves.json").exists(), err
    a, b = (json.loads((d / "curves.json").read_text()) for d in (killed, whole))
    assert a["dataset"]["images"] == b["dataset"]["images"] == int(IMAGES)
    assert a["fingerprint"] == b["fingerprint"] and a["best"] == b["best"]
    np.testing.assert_allclose(
        [p["cui"] for p in a["points"]], [p["cui"] for p in b["points"]], rtol=1e-6
    )
    with np.load(killed / "per_image.npz") as x, np.load(whole / "per_image.npz") as y:
        np.testing.assert_array_equal(x["labels"], y["labels"])
        np.testing.assert_array_equal(x["predictions"], y["predictions"])
        np.testing.assert_allclose(x["cui"], y["cui"], rtol=1e-5, atol=1e-12)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return small_rgb()


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 3, 16, 16, generator=g), torch.arange(24) % 3)
    return net(), data


def interrupted_checkpoint(model, data, path, **kw):
    with pytest.raises(KeyboardInterrupt):
        analyze(model, StopAt(data, 16), batch_size=8, checkpoint=path, checkpoint_every=1, **kw)
    assert path.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"reduction": "sum"},
        {"limit": 20},
        {"max_bytes": 10_000},
        {"points": ["1", "3"]},
        {"classes": ["a", "b", "c"]},
    ],
)
def test_checkpoint_of_another_run_is_refused(small, tmp_path, change):
    model, data = small
    ckpt = tmp_path / "checkpoint.npz"
    interrupted_checkpoint(model, data, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(IsplitError, match="checkpoint of a different analysis"):
        analyze(model, data, batch_size=8, checkpoint=ckpt, **change)
    assert ckpt.read_bytes() == before


def test_checkpoint_of_other_weights_is_refused(small, tmp_path):
    model, data = small
    ckpt = tmp_path / "checkpoint.npz"
    interrupted_checkpoint(model, data, ckpt)
    other = net(seed=1)
    with pytest.raises(IsplitError, match="other model or weights"):
        analyze(other, data, batch_size=8, checkpoint=ckpt)


def test_a_checkpoint_holding_every_image_finishes_the_run(small, tmp_path, monkeypatch):
    import isplit.analysis.checkpoint as a

    model, data = small
    whole = analyze(model, data, batch_size=8)
    ckpt = tmp_path / "checkpoint.npz"
    save = a.save_checkpoint

    def killed_after_the_last_save(path, acc, preds, position, *args):
        save(path, acc, preds, position, *args)
        if position == len(data):
            raise KeyboardInterrupt

    monkeypatch.setattr(a, "save_checkpoint", killed_after_the_last_save)
    with pytest.raises(KeyboardInterrupt):
        analyze(model, data, batch_size=8, checkpoint=ckpt, checkpoint_every=1)
    monkeypatch.setattr(a, "save_checkpoint", save)
    resumed = analyze(model, StopAt(data, 0), batch_size=8, checkpoint=ckpt)
    np.testing.assert_array_equal(resumed.per_image, whole.per_image)
    assert resumed.best == whole.best and not ckpt.exists()


def test_unreadable_checkpoint_is_a_clear_error(small, tmp_path):
    model, data = small
    ckpt = tmp_path / "checkpoint.npz"
    ckpt.write_bytes(b"not a zip file")
    with pytest.raises(IsplitError, match="cannot read the checkpoint"):
        analyze(model, data, batch_size=8, checkpoint=ckpt)


def test_checkpoint_every_must_be_positive(small, tmp_path):
    model, data = small
    with pytest.raises(IsplitError, match="--checkpoint-every must be at least 1"):
        analyze(model, data, checkpoint=tmp_path / "c.npz", checkpoint_every=0)


def test_channels_last_gives_the_same_curves_and_leaves_the_model_as_it_was(small):
    model, data = small
    weight = model[0].weight
    plain = analyze(model, data, batch_size=8)
    fast = analyze(model, data, batch_size=8, channels_last=True)
    np.testing.assert_allclose(fast.per_image, plain.per_image, rtol=1e-4, atol=1e-9)
    assert fast.best == plain.best
    assert model[0].weight is weight and weight.is_contiguous()
    assert weight.device.type == "cpu" and weight.requires_grad  # as the user had it
