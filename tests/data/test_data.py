"""Data sets and loaders: Fashion-MNIST, digits, image folders, torchvision, bad images."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from isplit.data import (
    BadImage,
    Preprocess,
    builtin,
    folders,
    limit_dataset,
    load_dataset,
    loaders,
    make_loader,
    preprocess,
)
from isplit.errors import IsplitError

FMNIST_PP = Preprocess(size=32, channels=1, mean=(0.286,), std=(0.353,), fit="pad")
PLAIN_PP = Preprocess(size=8, channels=1, mean=(0.0,), std=(1.0,))  # values stay in [0, 1]
HAVE_FMNIST = (builtin.FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file()


# --- helpers --------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, packed: bool = True) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with (gzip.open if packed else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_png(path: Path, value: int, size: tuple[int, int] = (10, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)
    return path


def make_class_folder(root: Path, counts: dict[str, int]) -> dict[str, int]:
    """One grey level per class (the class index * 100), so labels can be read off pixels."""
    for k, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            write_png(root / name / f"img{i}.png", value=100 * k)
    return {name: 100 * k for k, name in enumerate(sorted(counts))}


def all_items(ds) -> list[tuple[torch.Tensor, int]]:
    return [ds[i] for i in range(len(ds))]


# --- Preprocess -----------------------------------------------------------------------------


def test_preprocess_json_round_trip_and_checks():
    pp = Preprocess(
        size=224, channels=3, mean=(0.485, 0.456, 0.406), std=(0.2, 0.2, 0.2), resize=256
    )
    assert Preprocess.from_json(pp.to_json()) == pp
    with pytest.raises(IsplitError, match="channels"):
        Preprocess(size=8, channels=2, mean=(0.0,), std=(1.0,))
    with pytest.raises(IsplitError, match="mean has 2 values"):
        Preprocess(size=8, channels=3, mean=(0.0, 0.0), std=(1.0,))
    with pytest.raises(IsplitError, match="fit"):
        Preprocess(size=8, channels=1, mean=(0.0,), std=(1.0,), fit="crop")


def test_resize_then_centre_crop():
    x = torch.rand(1, 20, 40)
    pp = Preprocess(size=8, channels=1, mean=(0.0,), std=(1.0,), resize=10)
    assert preprocess.to_model_input(x, pp).shape == (1, 8, 8)


# --- Fashion-MNIST and digits ---------------------------------------------------------------


@pytest.mark.skipif(not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_test_split_is_padded_to_32():
    ds = load_dataset("fashion-mnist", "test", FMNIST_PP)
    assert len(ds) == 10000 and len(ds.classes) == 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert np.bincount(ds.targets).tolist() == [1000] * 10
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == int(ds.targets[0])
    pad = (0.0 - 0.286) / 0.353
    border = torch.cat([x[0, :2].flatten(), x[0, -2:].flatten(), x[0, :, :2].flatten()])
    assert torch.allclose(border, torch.tensor(pad))
    assert x[0, 2:30, 2:30].max() > 1.0  # the garment itself is there
    assert ds.describe() == {
        "name": "fashion-mnist",
        "split": "test",
        "images": 10000,
        "classes": ds.classes,
    }


@pytest.mark.skipif(not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_three_channels_resized_to_64():
    pp = Preprocess(size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, _ = load_dataset("fashion-mnist", "test", pp)[1]
    assert x.shape == (3, 64, 64)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


@pytest.fixture
def no_system_fmnist(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_fashion_mnist_from_root_idx_files(tmp_path, no_system_fmnist):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([4, 0, 9]))
    ds = load_dataset("fashion-mnist", "test", FMNIST_PP, root=str(tmp_path / "root"))
    assert ds.targets.tolist() == [4, 0, 9]
    x, y = ds[2]
    expected = (torch.tensor(images[2], dtype=torch.float32) / 255 - 0.286) / 0.353
    assert y == 9 and torch.allclose(x[0, 2:30, 2:30], expected)


def test_fashion_mnist_missing_says_what_to_do(tmp_path, no_system_fmnist):
    with pytest.raises(IsplitError, match="dataset-fashion-mnist.*--data-root.*--download"):
        load_dataset("fashion-mnist", "test", FMNIST_PP, root=str(tmp_path))
    with pytest.raises(IsplitError, match="no split 'val'"):
        load_dataset("fashion-mnist", "val", FMNIST_PP)


def test_digits_split_and_batched_items_match_single_items():
    train = load_dataset("digits", "train", PLAIN_PP)
    test = load_dataset("digits", "test", PLAIN_PP)
    assert len(train) + len(test) == 1797 and train.classes == [str(i) for i in range(10)]
    assert abs(len(test) / 1797 - 0.25) < 0.01
    per_class = np.bincount(np.concatenate([train.targets, test.targets]))
    assert np.abs(np.bincount(test.targets) - per_class / 4).max() <= 1  # stratified
    single = torch.stack([train[i][0] for i in (3, 7)])
    batched = torch.stack([x for x, _ in train.__getitems__([3, 7])])
    assert torch.equal(single, batched) and 0 <= single.min() and single.max() <= 1


# --- image folders --------------------------------------------------------------------------


def test_image_folder_classes_and_labels(tmp_path):
    levels = make_class_folder(tmp_path, {"cat": 3, "dog": 2})
    ds = load_dataset(str(tmp_path), "all", PLAIN_PP)
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [0, 0, 0, 1, 1]
    for x, y in all_items(ds):
        assert x.shape == (1, 8, 8)
        assert torch.allclose(x, torch.tensor(levels[ds.classes[y]] / 255))
    x, _ = load_dataset(str(tmp_path), "all", Preprocess(16, 3, (0.5,), (0.5,)))[4]
    assert x.shape == (3, 16, 16)


def test_split_folders_pick_the_split(tmp_path):
    make_class_folder(tmp_path / "train", {"NORMAL": 3, "PNEUMONIA": 2})
    make_class_folder(tmp_path / "test", {"NORMAL": 1, "PNEUMONIA": 1})
    ds = load_dataset(str(tmp_path), "test", PLAIN_PP)
    assert ds.classes == ["NORMAL", "PNEUMONIA"] and len(ds) == 2
    assert len(load_dataset(str(tmp_path), "train", PLAIN_PP)) == 5
    with pytest.raises(IsplitError, match="no split 'val'.*test, train"):
        load_dataset(str(tmp_path), "val", PLAIN_PP)


def test_tiny_imagenet_layout(tmp_path):
    wnids = ["n02", "n01"]
    (tmp_path / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (tmp_path / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, cat\n")
    for k, w in enumerate(sorted(wnids)):
        for i in range(2):
            write_png(tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG", 100 * k)
        (tmp_path / "train" / w / f"{w}_boxes.txt").write_text("")
    write_png(tmp_path / "val" / "images" / "val_0.JPEG", 100)
    write_png(tmp_path / "val" / "images" / "val_1.JPEG", 0)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t5\t5\nval_1.JPEG\tn01\t1\t1\t5\t5\n"
    )
    train = load_dataset(str(tmp_path), "train", PLAIN_PP)
    assert train.classes == ["goldfish", "tabby"] and train.targets.tolist() == [0, 0, 1, 1]
    val = load_dataset(str(tmp_path), "val", PLAIN_PP)
    assert val.targets.tolist() == [1, 0]
    assert [float(x.mean()) for x, _ in all_items(val)] == pytest.approx([100 / 255, 0.0])
    with pytest.raises(IsplitError, match="use --split val"):
        load_dataset(str(tmp_path), "test", PLAIN_PP)


def test_wordnet_names_disambiguate_duplicates(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("n1\tcrane, bird\nn2\tcrane, machine\nn3\tdog\n")
    names = folders._wordnet_names(words, ["n1", "n2", "n3", "n4"])
    assert names == ["crane (n1)", "crane (n2)", "dog", "n4"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("empty", "no class sub-folders"),
        ("no-images", "no image files"),
    ],
)
def test_bad_folders_raise(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no-images":
        (root / "cat").mkdir()
        (root / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(IsplitError, match=message):
        load_dataset(str(root), "train", PLAIN_PP)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_raises_or_is_skipped(tmp_path, workers, caplog):
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    ds = load_dataset(str(tmp_path), "all", PLAIN_PP)
    assert isinstance(ds[2][0], BadImage) and ds[2][0].path == str(bad)

    with pytest.raises(IsplitError, match=f"cannot read image {bad}.*--skip-bad-images"):
        list(make_loader(ds, 8, workers=workers))

    loader = make_loader(ds, 8, workers=workers, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="isplit"):
        batches = list(loader)
    assert loader.skipped == [str(bad)] and str(bad) in caplog.text
    assert len(batches) == 1 and batches[0][0].shape == (4, 1, 8, 8)
    assert batches[0][1].tolist() == [0, 0, 1, 1]
    assert batches[0][1].dtype == torch.long

    one_each = make_loader(ds, 1, workers=workers, skip_bad_images=True)
    assert len(one_each) == 5 and len(list(one_each)) == 4  # the all-bad batch is dropped


# --- limit_dataset and make_loader ----------------------------------------------------------


def test_limit_dataset_is_deterministic_and_spans_classes(tmp_path):
    make_class_folder(tmp_path, {"a": 10, "b": 10})
    ds = load_dataset(str(tmp_path), "all", PLAIN_PP)
    small = limit_dataset(ds, 6, seed=0)
    again = limit_dataset(ds, 6, seed=0)
    assert len(small) == 6 and small.targets.tolist() == again.targets.tolist()
    assert set(small.targets.tolist()) == {0, 1}
    assert list(small.indices) == sorted(small.indices)
    assert small.classes == ds.classes and small.name == ds.name and small.split == ds.split
    assert small.describe()["images"] == 6
    assert [y for _, y in all_items(small)] == small.targets.tolist()
    assert limit_dataset(ds, None) is ds and limit_dataset(ds, 20) is ds
    with pytest.raises(IsplitError):
        limit_dataset(ds, 0)


def test_make_loader_plain_tensor_dataset_and_seeded_shuffle():
    ds = TensorDataset(torch.randn(10, 1, 4, 4), torch.arange(10))
    loader = make_loader(ds, 4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert batches[0][0].shape == (4, 1, 4, 4) and batches[0][1].dtype == torch.long

    def order(seed):
        return torch.cat([y for _, y in make_loader(ds, 4, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1) and sorted(order(1)) == list(range(10)) and order(1) != order(2)
    assert len(make_loader(ds, 4, drop_last=True)) == 2


def test_make_loader_wraps_a_user_dataloader():
    ds = TensorDataset(torch.randn(6, 2), torch.arange(6))
    loader = make_loader(DataLoader(ds, batch_size=4), 99)
    batches = list(loader)
    assert len(loader) == 2 and len(batches) == 2 and loader.skipped == []
    assert torch.equal(batches[1][1], torch.tensor([4, 5]))


def test_default_workers():
    assert loaders.default_workers(load_dataset("digits", "test", PLAIN_PP)) == 0
    assert loaders.default_workers(TensorDataset(torch.zeros(2))) == 0


# --- torchvision and unknown specs ----------------------------------------------------------


def test_torchvision_dataset_takes_the_pil_path(tmp_path):
    raw = tmp_path / "MNIST" / "raw"  # torchvision wants all four files, unpacked
    raw.mkdir(parents=True)
    images = np.zeros((2, 28, 28), np.uint8)
    images[1] = 255
    for prefix in ("t10k", "train"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, packed=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array([3, 7]), packed=False)
    ds = load_dataset("torchvision:MNIST", "test", PLAIN_PP, root=str(tmp_path))
    assert ds.name == "torchvision:MNIST" and ds.targets.tolist() == [3, 7]
    assert ds.classes[3].startswith("3")
    (x0, y0), (x1, y1) = all_items(ds)
    assert x0.shape == (1, 8, 8) and float(x0.max()) == 0.0 and float(x1.min()) == 1.0
    assert (y0, y1) == (3, 7)


def test_torchvision_errors(tmp_path):
    with pytest.raises(IsplitError, match="unknown torchvision data set"):
        load_dataset("torchvision:NoSuchSet", "train", PLAIN_PP)
    with pytest.raises(IsplitError, match="--data-root.*--download"):
        load_dataset("torchvision:MNIST", "train", PLAIN_PP, root=str(tmp_path))


def test_unknown_spec():
    with pytest.raises(IsplitError, match="fashion-mnist, digits"):
        load_dataset("imagenet-9000", "train", PLAIN_PP)
