"""8-bit transport: isplit's data sets hand the loader uint8 pixels of the model input's size,
normalised on the device. The model inputs, and so the analysis, are today's float32 path's:
to the last bit where no resizing happens (Fashion-MNIST at 28 or padded to 32 px), within the
rounding of resized pixels to 8 bits elsewhere (a JPEG folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from isplit.analysis import analyze
from isplit.data import BadImage, Preprocess, builtin, load_dataset, make_loader
from isplit.data.folders import decode_uint8, folder_dataset
from isplit.data.loaders import uint8_view
from isplit.data.preprocess import Normalise, fit_uint8, to_model_input

FMNIST_PP = Preprocess(size=32, channels=1, mean=(0.286,), std=(0.353,), fit="pad")
HAVE_FMNIST = (builtin.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file()
PP = Preprocess(size=40, channels=3, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


def jpeg_folder(root: Path, per_class: int = 6) -> Path:
    """Smooth random photographs-like images of two classes, 60 x 75 px JPEG (and one PNG)."""
    g = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            x = torch.rand(1, 3, 6, 8, generator=g)
            x = torch.nn.functional.interpolate(x, size=(60, 75), mode="bicubic")[0]
            img = Image.fromarray((x.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy())
            img.save(root / c / (f"{i}.png" if i == 0 else f"{i}.jpg"), quality=90)
    return root


def inputs(ds) -> torch.Tensor:
    loader = make_loader(ds, 64, workers=0)
    return torch.cat([x for x, _ in loader])


def test_decoding_gives_pils_pixels(tmp_path):
    folder = jpeg_folder(tmp_path / "f", per_class=2)
    for path in sorted(folder.rglob("*.*")):
        for pp in (PP, Preprocess(size=40, channels=1, mean=(0.5,), std=(0.2,))):
            with Image.open(path) as img:
                want = torchvision.transforms.v2.functional.pil_to_tensor(
                    img.convert("L" if pp.channels == 1 else "RGB")
                )
            assert torch.equal(decode_uint8(str(path), pp), want), path


def test_folder_inputs_are_the_8bit_paths_and_near_a_float_resize(tmp_path):
    ds = folder_dataset(str(jpeg_folder(tmp_path / "f")), "test", PP)
    u8, norm = uint8_view(ds)
    assert norm is not None
    pixels = inputs(u8)
    assert pixels.dtype == torch.uint8 and pixels.shape[1:] == (3, 40, 40)  # 4x fewer bytes
    # both paths resize the decoded 8-bit pixels in 8 bits: the same input, to the last bit
    assert torch.equal(norm(pixels), inputs(ds))
    # a float resize of the same pixels differs by their rounding to 8 bits, nothing more
    floats = torch.stack([to_model_input(decode_uint8(p, PP).float() / 255, PP) for p in ds.paths])
    diff = (floats - inputs(ds)) * torch.tensor(PP.std).view(-1, 1, 1)  # in [0, 1] units
    assert 0 < diff.abs().max() < 1 / 255


@pytest.mark.skipif(not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize(
    "pp", [FMNIST_PP, Preprocess(size=28, channels=3, mean=(0.3,), std=(0.4,))]
)
def test_fashion_mnist_inputs_are_bit_identical(pp):
    ds = Subset(load_dataset("fashion-mnist", "test", pp), range(50))
    u8, norm = uint8_view(ds)
    assert torch.equal(norm(inputs(u8)), inputs(ds))


def test_analysis_equals_the_float32_path(tmp_path):
    ds = folder_dataset(str(jpeg_folder(tmp_path / "f")), "test", PP)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    new = analyze(model, ds, batch_size=4)
    old = analyze(model, ds, batch_size=4, uint8=False)
    assert new.point_names == old.point_names and new.best == old.best
    # per image: within 2 % of the largest value (small maps move most, relatively)
    np.testing.assert_allclose(
        new.per_image, old.per_image, rtol=0, atol=0.02 * old.per_image.max()
    )
    np.testing.assert_allclose(new.cui, old.cui, rtol=0.015, atol=1e-3 * old.cui.max())
    np.testing.assert_array_equal(new.predictions, old.predictions)


def test_user_data_and_coarse_scales_keep_the_float_path():
    user = TensorDataset(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    assert uint8_view(user) == (user, None)
    digits = load_dataset(
        "digits", "test", Preprocess(size=16, channels=1, mean=(0.5,), std=(0.5,))
    )
    assert uint8_view(digits)[1] is None  # white is 16: resizing in 8 bits would round coarsely


def test_unreadable_file_is_still_a_bad_image_with_pils_reason(tmp_path):
    folder = jpeg_folder(tmp_path / "f", per_class=2)
    good = folder / "a" / "1.jpg"
    (folder / "a" / "9.jpg").write_bytes(good.read_bytes()[:300])  # truncated
    ds, _ = uint8_view(folder_dataset(str(folder), "test", PP))
    bad = [x for x, _ in (ds[i] for i in range(len(ds))) if isinstance(x, BadImage)]
    assert len(bad) == 1 and "truncated" in bad[0].reason.lower()


def test_normalise_keeps_the_memory_format_asked_for_by_to_device():
    x = fit_uint8(torch.randint(0, 256, (2, 1, 30, 30), dtype=torch.uint8), PP)
    out = Normalise(PP)(x)
    assert out.shape == (2, 3, 40, 40) and out.dtype == torch.float32
    want = to_model_input(x.float().div(255), PP)
    assert torch.equal(out, want)
