"""timm models are fed as timm's own eval transform feeds them, at their size and at any
``--image-size``: the resize (``floor(size / crop_pct)``), the crop, the interpolation, the mean
and std of ``timm.data.create_transform`` (an independent reading of the same config)."""

from __future__ import annotations

import pytest

from isplit.models import load_model

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402


def timms_transform(name: str, size: int | None) -> dict:
    model = timm.create_model(name, pretrained=False)
    cfg = resolve_data_config(model=model)
    if size is not None:
        cfg["input_size"] = (3, size, size)
    t = create_transform(**cfg, is_training=False)
    resize = next(s for s in t.transforms if type(s).__name__ == "Resize")
    crop = next(s for s in t.transforms if type(s).__name__ == "CenterCrop")
    norm = next(s for s in t.transforms if type(s).__name__ == "Normalize")
    return {
        "resize": resize.size if isinstance(resize.size, int) else resize.size[0],
        "size": crop.size[0],
        "interpolation": resize.interpolation.value,
        "mean": tuple(float(m) for m in norm.mean),
        "std": tuple(float(s) for s in norm.std),
    }


@pytest.mark.parametrize("size", [None, 32, 48, 96])
@pytest.mark.parametrize("name", ["convnext_atto", "resnet10t", "vit_tiny_patch16_224"])
def test_isplit_feeds_timm_models_as_timm_does(name, size):
    want = timms_transform(name, size)
    pp = load_model(f"timm:{name}", "none", image_size=size).preprocess
    got = {"resize": pp.resize, "size": pp.size, "interpolation": pp.interpolation,
           "mean": pp.mean, "std": pp.std}  # fmt: skip
    assert got["mean"] == pytest.approx(want.pop("mean"))
    assert got["std"] == pytest.approx(want.pop("std"))
    assert {k: got[k] for k in want} == want
