"""Training: it learns, writes weights with metadata, resumes exactly, refuses bad requests."""

from __future__ import annotations

import shlex
import sys
import textwrap

import numpy as np
import pytest
import torch

from isplit.cli import build_parser
from isplit.data import ArrayDataset, load_dataset
from isplit.errors import IsplitError
from isplit.models import load_model, read_metadata
from isplit.models import train as train_mod
from isplit.models.loop import augment_batch
from isplit.models.train import train

# A small, quick run: 640 digits images (8x8, zero-padded to 32x32), 20 steps per epoch.
RUN = dict(
    model="demo-vgg16",
    weights="none",
    data="digits",
    split="train",
    data_root=None,
    download=False,
    batch_size=32,
    lr=0.05,
    seed=0,
    augment="none",
    device="cpu",
    limit=640,
    workers=0,
    skip_bad_images=False,
    image_size=32,
    mean=None,
    std=None,
    progress=False,
    test_split="test",
)


class Interrupt(KeyboardInterrupt):
    pass


def test_train_learns_and_writes_weights_with_metadata(tmp_path):
    full = str(tmp_path / "full.safetensors")
    result = train(**RUN, epochs=2, out=full)
    losses = [h["train_loss"] for h in result.history]
    assert losses[1] < losses[0]
    assert result.test_accuracy > 0.3  # chance is 0.1
    assert not (tmp_path / "full.safetensors.ckpt").exists()  # removed once out is written
    assert "test accuracy" in result.summary() and full in result.summary()

    md = read_metadata(full)
    assert md["model"] == "demo-vgg16" and md["dataset"] == "digits"
    assert md["classes"] == [str(i) for i in range(10)] and md["num_classes"] == 10
    assert md["accuracy"] == result.test_accuracy and md["epochs"] == 2 and md["seed"] == 0
    assert md["preprocess"]["size"] == 32 and md["preprocess"]["fit"] == "pad"
    # The recorded command parses back to the same run.
    argv = shlex.split(md["command"])
    assert argv[:2] == ["isplit", "train"]
    args = build_parser().parse_args(argv[1:])
    assert (args.model, args.data, args.epochs, args.limit, args.lr, args.out) == (
        "demo-vgg16", "digits", 2, 640, 0.05, full)  # fmt: skip
    lm = load_model(None, full)
    assert lm.classes == md["classes"] and lm.preprocess.size == 32
    # what the accuracy was measured on: the analyses' checks compare with it, beyond sampling
    test_images = min(640, len(load_dataset("digits", "test", lm.preprocess)))
    assert md["test_images"] == test_images
    assert lm.trained == {"accuracy": result.test_accuracy, "test_images": test_images,
                          "dataset": "digits", "test_split": "test"}  # fmt: skip


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    run = {**RUN, "augment": "shift+flip", "limit": 160}  # the augmentation RNG is resumed too
    full = str(tmp_path / "full.safetensors")
    train(**run, epochs=2, out=full)
    # Interrupted after the first epoch's checkpoint, then the same command again.
    out = str(tmp_path / "resumed.safetensors")
    save = train_mod._save_checkpoint

    def save_then_interrupt(path, state):
        save(path, state)
        raise Interrupt

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_interrupt)
    with pytest.raises(Interrupt):
        train(**run, epochs=2, out=out)
    monkeypatch.setattr(train_mod, "_save_checkpoint", save)
    assert (tmp_path / "resumed.safetensors.ckpt" / "last.pt").exists()

    with pytest.raises(IsplitError, match="other arguments.*seed"):
        train(**{**run, "seed": 1}, epochs=2, out=out)
    resumed = train(**run, epochs=2, out=out)
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    a, b = load_model(None, full).model.state_dict(), load_model(None, out).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = train(**run, epochs=2, out=out)  # finished: says so, trains nothing
    assert again.already_done and "already trained" in again.summary()
    with pytest.raises(IsplitError, match="already exists.*epochs"):
        train(**run, epochs=3, out=out)


def test_class_count_of_the_data_set_replaces_the_head(tmp_path):
    out = tmp_path / "r.pth"
    run = {**RUN, "model": "resnet18", "limit": 32, "image_size": 32, "test_split": "none"}
    result = train(**run, epochs=1, out=str(out))
    assert result.test_accuracy is None and "no test split" in result.summary()
    lm = load_model("resnet18", str(out))
    assert lm.num_classes == 10 and lm.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(IsplitError, match="cannot tell"):  # .pth: no metadata to compare
        train(**run, epochs=1, out=str(out))


def test_factory_model_with_wrong_class_count_is_refused(tmp_path, monkeypatch):
    (tmp_path / "isplit_train_factory.py").write_text(
        textwrap.dedent("""
        from torch import nn
        def make():
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(2, 3))
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(IsplitError, match="3 outputs but digits has 10 classes"):
            train(
                **{**RUN, "model": "isplit_train_factory:make"},
                epochs=1,
                out=str(tmp_path / "f.pt"),
            )
    finally:
        sys.modules.pop("isplit_train_factory", None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "at least 1"),
        ({"out": "w.onnx"}, "unknown extension"),
        ({"augment": "rotate"}, "augment"),
        ({"lr": -1.0}, "positive"),
        ({"optimizer": "lion"}, "optimizer"),
    ],
)
def test_bad_requests(tmp_path, change, message):
    kwargs = {**RUN, "epochs": 1, "out": str(tmp_path / "w.safetensors"), **change}
    with pytest.raises(IsplitError, match=message):
        train(**kwargs)


def test_adamw_trains_the_modern_demo_network_and_is_part_of_the_run(tmp_path):
    """AdamW (the ConvNeXt / ViT recipe) learns, is recorded in the reproducing command, and a
    checkpoint made with one optimizer is not resumed with the other."""
    run = {**RUN, "model": "demo-convnext", "limit": 320, "optimizer": "adamw", "lr": None}
    out = str(tmp_path / "c.safetensors")
    result = train(**run, epochs=2, out=out)
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    argv = shlex.split(read_metadata(out)["command"])
    args = build_parser().parse_args(argv[1:])
    assert (args.optimizer, args.lr) == ("adamw", 1e-3 * 32 / 128)
    with pytest.raises(IsplitError, match="already exists.*optimizer"):
        train(**{**run, "optimizer": "sgd"}, epochs=2, out=out)


def test_empty_training_set_is_refused(tmp_path, monkeypatch):
    def empty(spec, split, preprocess, **kw):
        images = np.zeros((0, 8, 8), np.uint8)
        return ArrayDataset("empty", split, ["a", "b"], images, [], preprocess)

    monkeypatch.setattr("isplit.data.load.load_dataset", empty)
    with pytest.raises(IsplitError, match="holds no images"):
        train(**RUN, epochs=1, out=str(tmp_path / "w.safetensors"))


def test_augment_shifts_by_at_most_two_pixels_and_flips():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, "none", g), x)
    y = augment_batch(x, "shift", g)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), torch.ones(64))
    pos = y[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.sub(4).abs().max() == 2 and cols.sub(4).abs().max() == 2  # all shifts occur
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10
    # Flips: an image marked on its left edge ends up on the right edge in about half of them.
    z = torch.zeros(200, 1, 5, 16)
    z[..., 0:3] = 1.0
    flipped = augment_batch(z, "shift+flip", torch.Generator().manual_seed(0))[..., -1].amax((1, 2))
    assert 50 < int(flipped.sum()) < 150
    same = augment_batch(z, "shift+flip", torch.Generator().manual_seed(0))
    assert torch.equal(same, augment_batch(z, "shift+flip", torch.Generator().manual_seed(0)))
