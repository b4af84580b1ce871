"""Every command feeds the network the same numbers, for every geometry isplit supports, on
trained weights: each interpolation (the torchvision and timm presets' bilinear, bicubic,
nearest), a resize of the shorter side then a centre crop (timm's crop_pct), a direct resize,
zero padding, images smaller and larger than the model's input. The 8-bit path (analyze's loop)
and the float path (train, validate, export, infer) give the same inputs to the last bit; both
are PIL's pixels within one level, and near a float resize of the same pixels (the same
predictions but where the top two logits nearly tie, CUI within 2 %). (Under bicubic the 8-bit
path once clamped its pixels to [0, 1]: black images, 10 % accuracy; and the float path resized
as floats, so train and export measured another accuracy than analyze.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from isplit.analysis import analyze
from isplit.data import Preprocess, builtin, load_dataset
from isplit.data.folders import decode_uint8, folder_dataset
from isplit.data.loaders import uint8_view
from isplit.data.preprocess import INTERPOLATIONS, to_model_input
from isplit.models import load_model

HAVE_FMNIST = (builtin.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file()
pytestmark = pytest.mark.skipif(
    not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed"
)
IMAGES = 400
#: the demo network's normalisation (it was trained on 28 px images padded to 32)
MEAN, STD = (0.286,), (0.353,)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[int, str]:
    """The first test images of Fashion-MNIST as PNG files, at 28 px (upscaled into the model)
    and at 44 px (downscaled): one folder each."""
    pp = Preprocess(size=28, channels=1, mean=MEAN, std=STD)
    ds = load_dataset("fashion-mnist", "test", pp)
    out = {}
    for side in (28, 44):
        root = tmp_path_factory.mktemp(f"fmnist{side}")
        for i in range(IMAGES):
            x, y = ds[i]
            pixels = (x * STD[0] + MEAN[0]).clamp(0, 1).mul(255).round().byte()[0].numpy()
            img = Image.fromarray(pixels, mode="L")
            if side != 28:
                img = img.resize((side, side), Image.BICUBIC)
            # "0-T-shirt-top": folders sort in the model's class order
            folder = root / f"{y}-{ds.classes[y].replace('/', '-')}"
            folder.mkdir(exist_ok=True)
            img.save(folder / f"{i:04d}.png")
        out[side] = str(root)
    return out


@pytest.fixture(scope="module")
def model():
    return load_model("demo-vgg16").model


GEOMETRIES = {  # name -> Preprocess fields besides interpolation
    "resize": dict(size=32),
    "resize+crop": dict(size=32, resize=36),  # timm's crop_pct 0.875-0.9 kind
    "pad": dict(size=32, fit="pad"),
}


def both_inputs(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Every model input of ``ds`` by the 8-bit path (analyze's loop) and by the float path
    (train, validate, export, infer), which must be the same to the last bit; and the inputs a
    float resize of the same decoded pixels gives (a user's own float tensors)."""
    u8, norm = uint8_view(ds)
    assert norm is not None  # the 8-bit path is the one isplit's loops take
    fast = norm(torch.stack([u8[i][0] for i in range(len(ds))])).clone()
    plain = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.equal(fast, plain)  # two paths, one input
    base, indices = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, range(len(ds)))
    floats = torch.stack([
        to_model_input(decode_uint8(base.paths[i], base.preprocess).float() / 255, base.preprocess)
        for i in indices
    ])  # fmt: skip
    return fast, floats


@pytest.mark.parametrize("side", [28, 44])
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_8bit_path_equals_float_path_and_near_a_float_resize(
    folders, model, side, geometry, interpolation
):
    pp = Preprocess(channels=1, mean=MEAN, std=STD, interpolation=interpolation,
                    **GEOMETRIES[geometry])  # fmt: skip
    ds = folder_dataset(folders[side], "test", pp)
    fast, plain = both_inputs(ds)
    labels = torch.tensor(ds.targets)
    with torch.no_grad():
        fast_logits, plain_logits = model(fast), model(plain)
    accuracy = (plain_logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.6, accuracy  # a trained network, fed right
    # against a float resize, the logits move by the rounding of resized pixels to 8 bits, a
    # little; a prediction may flip only where the top two logits are closer than twice that
    moved = (fast_logits - plain_logits).abs().max().item()
    top2 = plain_logits.topk(2, dim=1).values
    assert moved < 0.1 * (top2[:, 0] - top2[:, 1]).median().item(), moved
    flipped = fast_logits.argmax(1) != plain_logits.argmax(1)
    assert torch.all(top2[flipped, 0] - top2[flipped, 1] <= 2 * moved)
    assert flipped.float().mean() <= 0.02
    fast_accuracy = (fast_logits.argmax(1) == labels).float().mean().item()
    assert abs(fast_accuracy - accuracy) <= 0.01
    # the analysis by each of isplit's paths, on a quarter of the images: the same inputs, so
    # the same predictions and best split, and CUI within float summation order; near the
    # analysis of the float-resized inputs
    sample = Subset(ds, range(0, IMAGES, 4))
    a8 = analyze(model, sample, batch_size=100, progress=False)
    a32 = analyze(model, sample, batch_size=100, progress=False, uint8=False)
    floats = TensorDataset(plain[::4], labels[::4])
    af = analyze(model, floats, batch_size=100, progress=False)
    assert a8.best == a32.best
    np.testing.assert_array_equal(a8.predictions, fast_logits.argmax(1)[::4].numpy())
    np.testing.assert_array_equal(a32.predictions, a8.predictions)
    np.testing.assert_array_equal(af.predictions, plain_logits.argmax(1)[::4].numpy())
    ok = np.isfinite(af.cui)
    np.testing.assert_array_equal(np.isfinite(a8.cui), ok)
    np.testing.assert_allclose(a32.cui[ok], a8.cui[ok], rtol=1e-5)
    np.testing.assert_allclose(a8.cui[ok], af.cui[ok], rtol=0.02, atol=1e-3 * af.cui[ok].max())


PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_8bit_pixels_are_pils_and_near_the_float_ones(folders, interpolation):
    """Pixel by pixel, against PIL (an independent resize, the one timm's and torchvision's
    PIL pipelines use): resize the shorter side to 36, centre-crop 32. The 8-bit path gives PIL's
    pixels within one level; the float path differs from both by a few levels where bicubic's
    negative lobes meet an edge (PIL and the 8-bit resize round between their two passes). A
    clamp of 8-bit pixels to [0, 1] would differ by up to 254 levels."""
    pp = Preprocess(size=32, resize=36, channels=3, mean=(0.5,), std=(0.25,),
                    interpolation=interpolation)  # fmt: skip
    ds = folder_dataset(folders[44], "test", pp)
    picked = range(0, IMAGES, 8)
    fast, plain = both_inputs(Subset(ds, picked))
    pil = []
    for i in picked:
        with Image.open(ds.paths[i]) as img:
            img = img.convert("RGB").resize((36, 36), PIL_FILTERS[interpolation])
        pil.append(torch.from_numpy(np.array(img)).permute(2, 0, 1)[:, 2:34, 2:34].float())
    pil = torch.stack(pil)
    levels = {name: x * 0.25 * 255 + 0.5 * 255 for name, x in (("fast", fast), ("plain", plain))}
    if interpolation == "nearest":  # no arithmetic: the same pixels, to the last bit
        # (torchvision's tensor "nearest" picks other source pixels than PIL's NEAREST)
        assert torch.equal(fast, plain)
        return
    assert (levels["fast"] - pil).abs().max() <= 1.001
    assert (levels["plain"] - pil).abs().max() <= (8 if interpolation == "bicubic" else 1.001)
    assert (levels["plain"] - levels["fast"]).abs().mean() < 0.3
    assert pil.std() > 30  # images, not flat fields
