"""Tiny networks of the families whose tensors are not N x C x H x W, for tests that train them
in seconds on Fashion-MNIST (1 x 28 x 28, 10 classes): a ConvNeXt (channels-last N x H x W x C
inside its blocks) and a vision transformer (N x L x D tokens with a class token); and a plain
CNN. Load them as ``tiny_nets:convnext`` / ``tiny_nets:vit`` / ``tiny_nets:plain`` (the tests
folder is on the path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.vision_transformer import VisionTransformer


def convnext() -> nn.Module:
    """Stem 4 x 4 / 4 (7 x 7 positions), two stages of 16 and 32 channels (the second 3 x 3)."""
    config = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    model = ConvNeXt(config, stochastic_depth_prob=0.0, num_classes=10)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(1, 16, stem.kernel_size, stem.stride)
    return model


def vit() -> nn.Module:
    """Patches of 7 x 7 (a 4 x 4 grid and a class token: 17 tokens of 32 channels), two layers."""
    model = VisionTransformer(
        image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )  # fmt: skip
    model.conv_proj = nn.Conv2d(1, 32, kernel_size=7, stride=7)
    return model


def plain() -> nn.Module:
    """Two convolutions and a linear layer (N x C x H x W throughout): for tests in which the
    network does not matter, only that its parts export in seconds (cut at ``"1"``)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


def small_rgb() -> nn.Module:
    """Three convolutions, a max-pool and a linear layer on 3 x 16 x 16 images, 3 classes (in
    eval mode): for analysis tests that need a few points and run in a second."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip


# --------------------------------------------------------------------------------------------
# Trained, analysed and validated once per session (the ``tiny_runs`` fixture)
# --------------------------------------------------------------------------------------------

#: name -> (factory, learning rate, the point validated: channels-last or tokens)
NETS = {
    "convnext": ("tiny_nets:convnext", 0.05, "features.2.0.layer_norm"),
    "vit": ("tiny_nets:vit", 0.05, "encoder.layers.encoder_layer_0.add_1"),
}
TRAIN_IMAGES, EPOCHS = 2000, 4
VALIDATION = ["--ratio", "4", "--epochs", "4", "--lr", "0.01", "--batch-size", "64",
              "--train-limit", "1000", "--test-limit", "500", "--bootstrap", "10"]  # fmt: skip


@dataclass(frozen=True)
class TinyRun:
    """A tiny network trained on Fashion-MNIST (``weights``), its analysis at ``point``
    (``run``) and a validation there (``validation``; for the ViT also one with ``--halve``,
    ``halved``)."""

    model: str
    weights: Path
    point: str
    run: Path
    validation: Path
    halved: Path | None = None


def prepare(name: str, folder: Path) -> TinyRun:
    """Train, analyse and validate tiny network ``name`` (a key of :data:`NETS`) in ``folder``;
    about ten seconds on a CPU core."""
    from isplit.cli import main
    from isplit.models.train import train

    model, lr, point = NETS[name]
    weights = folder / f"{name}.safetensors"
    train(model=model, weights="none", data="fashion-mnist", epochs=EPOCHS, out=str(weights),
          batch_size=64, lr=lr, seed=0, augment="none", device="cpu", limit=TRAIN_IMAGES,
          workers=0, image_size=28, progress=False)  # fmt: skip
    run, validation = folder / f"{name}-run", folder / f"{name}-validation"
    common = ["--quiet", "--device", "cpu"]
    assert main(["analyze", "--model", model, "--weights", str(weights), "--points", point,
                 "--limit", "100", "--out", str(run), *common]) == 0  # fmt: skip
    assert main(["validate", "--analysis", str(run), "--points", point, "--out", str(validation),
                 *VALIDATION, *common]) == 0  # fmt: skip
    halved = None
    if name == "vit":  # the patch tokens halved as their 4 x 4 grid, the class token alone
        halved = folder / f"{name}-validation-halved"
        assert main(["validate", "--analysis", str(run), "--points", point, "--out", str(halved),
                     "--halve", *VALIDATION, *common]) == 0  # fmt: skip
    return TinyRun(model, weights, point, run, validation, halved)
