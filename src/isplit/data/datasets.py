"""Data sets and loaders: Fashion-MNIST, sklearn digits, image folders, torchvision data sets.

Every data set yields ``(image, label)`` with the image already shaped for the model:
float32 ``[channels, size, size]``, normalised as a :class:`Preprocess` says. In-memory arrays
(Fashion-MNIST, digits) go through torch ops only; image files and torchvision data sets are
decoded with PIL and then take the same tensor path (:func:`_to_model_input`).

An image file that cannot be decoded is not an exception inside ``__getitem__`` (worker processes
would mangle the message): it comes back as a :class:`BadImage`, and :class:`BatchLoader`
decides in the main process whether to stop with an :class:`IsplitError` or skip it.
"""

from __future__ import annotations

import gzip
import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as _default_collate

from isplit.errors import IsplitError

log = logging.getLogger("isplit")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_FITS = ("resize", "pad")


def cache_dir() -> Path:
    """Where isplit keeps downloaded data: ``$XDG_CACHE_HOME/isplit`` or ``~/.cache/isplit``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "isplit"


# --------------------------------------------------------------------------------------------
# Preprocessing: what the model's input layer expects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs: geometry, channels and normalisation."""

    size: int  # final square side in pixels
    channels: int  # 1 or 3
    mean: tuple[float, ...]  # per channel; length 1 is broadcast
    std: tuple[float, ...]
    resize: int | None = None  # resize shorter side to this, then centre-crop `size`
    fit: str = "resize"  # "resize" to size x size, or "pad": centre zero-pad smaller images

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise IsplitError(
                f"bad image size {self.size} (resize {self.resize}): size must be >= 1 and "
                "resize, if given, >= size"
            )
        if self.channels not in (1, 3):
            raise IsplitError(f"channels must be 1 or 3, not {self.channels}")
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise IsplitError(
                    f"{what} has {len(values)} values for {self.channels} channel(s); "
                    f"give 1 value or {self.channels}"
                )
        if any(s == 0 for s in self.std):
            raise IsplitError("std values must not be 0")
        if self.fit not in _FITS:
            raise IsplitError(f"fit must be one of {', '.join(_FITS)}, not {self.fit!r}")

    def to_json(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, d: dict) -> Preprocess:
        return cls(
            size=int(d["size"]),
            channels=int(d["channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize=None if d.get("resize") is None else int(d["resize"]),
            fit=d.get("fit", "resize"),
        )


def _fit(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Bring ``[..., C, H, W]`` floats to ``size x size`` as ``pp`` says."""
    h, w = x.shape[-2:]
    size = pp.size
    if pp.resize is not None:
        x = TF.resize(x, [pp.resize], antialias=True)  # shorter side
        return TF.center_crop(x, [size, size])
    if h == size and w == size:
        return x
    if pp.fit == "pad" and h <= size and w <= size:
        left, top = (size - w) // 2, (size - h) // 2
        return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top))
    return TF.resize(x, [size, size], antialias=True)


def _to_model_input(x: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Float ``[..., C, H, W]`` in [0, 1] -> normalised ``[..., channels, size, size]``."""
    x = _fit(x, pp)
    if x.shape[-3] == 1 and pp.channels == 3:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    mean = torch.tensor(pp.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pp.std, dtype=x.dtype).view(-1, 1, 1)
    return ((x - mean) / std).contiguous()


def _pil_to_model_input(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    img = img.convert("L" if pp.channels == 1 else "RGB")
    return _to_model_input(TF.pil_to_tensor(img).float().div_(255.0), pp)


@dataclass(frozen=True)
class BadImage:
    """Stands in for an image that could not be decoded."""

    path: str
    reason: str


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


class LabelledDataset(Dataset):
    """A data set of ``(image tensor | BadImage, label)`` with class names and all labels."""

    in_memory = False  # True: items are cheap tensor slices, worker processes do not pay off
    root: str | None = None  # the --data-root it was opened from, when one was given

    def __init__(self, name: str, split: str, classes: Sequence[str], targets: Any) -> None:
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | BadImage, int]:
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [self[i] for i in indices]

    def describe(self) -> dict:
        info = {
            "name": self.name,
            "split": self.split,
            "images": len(self),
            "classes": list(self.classes),
        }
        if self.root is not None:
            info["root"] = self.root
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)})"


class ArrayDataset(LabelledDataset):
    """Images held as one ``[N, H, W]`` uint8 tensor; pixel value ``scale`` means white."""

    in_memory = True

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        images: Any,
        targets: Any,
        preprocess: Preprocess,
        scale: float = 255.0,
    ) -> None:
        super().__init__(name, split, classes, targets)
        self.images = torch.as_tensor(images, dtype=torch.uint8)
        self.preprocess = preprocess
        self.scale = float(scale)

    def _inputs(self, index: Any) -> torch.Tensor:
        x = self.images[index].unsqueeze(-3).float().div_(self.scale)
        return _to_model_input(x, self.preprocess)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._inputs(int(i)), int(self.targets[i])

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A whole batch in one tensor op (the DataLoader calls this when it exists)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        labels = self.targets[index.numpy()].tolist()
        return list(zip(self._inputs(index).unbind(0), labels, strict=True))


class SubsetDataset(LabelledDataset):
    """Some items of a labelled data set (see :func:`limit_dataset`)."""

    def __init__(self, base: LabelledDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        super().__init__(base.name, base.split, base.classes, base.targets[self.indices])
        self.in_memory = base.in_memory
        self.root = base.root

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return self.base.__getitems__([int(self.indices[i]) for i in indices])


# --- Fashion-MNIST and digits ---------------------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or .gz) into an array of its shape."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch can share it
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise IsplitError(f"{path} is not an IDX file of unsigned bytes; replace it")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise IsplitError(f"{path} is truncated ({values.size} values for shape {shape})")
    return values.reshape(shape)


def _fashion_mnist_dirs(root: str | None) -> list[Path]:
    dirs = []
    if root:
        dirs += [Path(root).expanduser(), Path(root).expanduser() / "FashionMNIST" / "raw"]
    cache = cache_dir() / "fashion-mnist"
    return dirs + [FASHION_MNIST_SYSTEM_DIR, cache, cache / "FashionMNIST" / "raw"]


def _find_idx_pair(dirs: list[Path], stems: tuple[str, str]) -> tuple[Path, Path] | None:
    """The first folder holding both files (each plain or .gz)."""
    for d in dirs:
        found = []
        for stem in stems:
            found += [p for p in (d / stem, d / f"{stem}.gz") if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def _download_fashion_mnist() -> None:
    import torchvision

    target = cache_dir() / "fashion-mnist"
    log.info("downloading Fashion-MNIST to %s", target)
    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
    except Exception as e:  # offline: URLError, RuntimeError, ...
        raise IsplitError(
            f"downloading Fashion-MNIST to {target} failed ({e}); without internet install the "
            "Debian package dataset-fashion-mnist or pass --data-root where the IDX files are"
        ) from e


def _fashion_mnist(split: str, pp: Preprocess, root: str | None, download: bool):
    _check_split(split, list(_IDX_FILES), "fashion-mnist")
    dirs = _fashion_mnist_dirs(root)
    files = _find_idx_pair(dirs, _IDX_FILES[split])
    if files is None and download:
        _download_fashion_mnist()
        files = _find_idx_pair(dirs, _IDX_FILES[split])
    if files is None:
        raise IsplitError(
            f"Fashion-MNIST {split} files ({' and '.join(_IDX_FILES[split])}, plain or .gz) not "
            f"found in {', '.join(map(str, dirs))}; install the Debian package "
            "dataset-fashion-mnist, pass --data-root where the files are, or pass --download "
            "(needs internet)"
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IsplitError(f"{files[0]} and {files[1]} do not match; replace them")
    log.debug("Fashion-MNIST %s from %s", split, files[0].parent)
    return ArrayDataset("fashion-mnist", split, FASHION_MNIST_CLASSES, images, labels, pp)


def _digits(split: str, pp: Preprocess):
    _check_split(split, ["train", "test"], "digits")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise IsplitError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    digits = load_digits()
    parts = train_test_split(
        digits.images, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
    images, labels = (parts[0], parts[2]) if split == "train" else (parts[1], parts[3])
    classes = [str(c) for c in range(10)]
    return ArrayDataset("digits", split, classes, images.astype(np.uint8), labels, pp, scale=16)


def _check_split(split: str, splits: list[str], name: str) -> None:
    if split not in splits:
        raise IsplitError(f"{name} has no split {split!r}; use one of: {', '.join(splits)}")


# --------------------------------------------------------------------------------------------
# Image folders and torchvision data sets (PIL decoding, then the same tensor path)
# --------------------------------------------------------------------------------------------


class ImageFileDataset(LabelledDataset):
    """Image files opened lazily with PIL; undecodable files come back as :class:`BadImage`."""

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        samples: list[tuple[str, int]],
        preprocess: Preprocess,
    ) -> None:
        super().__init__(name, split, classes, [label for _, label in samples])
        self.paths = [path for path, _ in samples]
        self.preprocess = preprocess

    def __getitem__(self, i: int) -> tuple[torch.Tensor | BadImage, int]:
        path, label = self.paths[i], int(self.targets[i])
        try:
            with Image.open(path) as img:
                return _pil_to_model_input(img, self.preprocess), label
        except Exception as e:  # never raise here: workers would mangle the message
            return BadImage(path, f"{type(e).__name__}: {e}"), label


class TorchvisionDataset(LabelledDataset):
    """A ``torchvision.datasets`` data set whose items (PIL or arrays) take the PIL path."""

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        base: Dataset,
        targets: Any,
        preprocess: Preprocess,
    ) -> None:
        super().__init__(name, split, classes, targets)
        self.base = base
        self.preprocess = preprocess

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[int(i)]
        if isinstance(img, torch.Tensor):
            img = TF.to_pil_image(img)
        elif not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        return _pil_to_model_input(img, self.preprocess), int(label)


# --- Image folders --------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted (as torchvision's ImageFolder does)."""
    return sorted(p for p in folder.rglob("*") if _is_image(p))


def _has_class_folders(folder: Path) -> bool:
    """Whether ``folder`` holds sub-folders with images in them (checks the first few)."""
    return any(next((p for p in d.rglob("*") if _is_image(p)), None) for d in _subdirs(folder)[:20])


def _class_folder_samples(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = [d.name for d in _subdirs(folder)]
    if not classes:
        raise IsplitError(
            f"no class sub-folders in {folder}: expected one sub-folder per class "
            "(<folder>/<class>/<image>)"
        )
    samples = []
    for label, name in enumerate(classes):
        files = _images_under(folder / name)
        if not files:
            log.warning("class folder %s holds no images", folder / name)
        samples += [(str(f), label) for f in files]
    if not samples:
        raise IsplitError(
            f"no image files ({', '.join(IMG_EXTENSIONS)}) in the class folders of {folder}; "
            "put the images in <folder>/<class>/"
        )
    return classes, samples


_SPLIT_NAMES = ("train", "test", "val", "valid", "validation")


def _folder_dataset(path: str, split: str, pp: Preprocess) -> LabelledDataset:
    root = Path(path).expanduser()
    if not root.exists():
        raise IsplitError(f"data folder {root} does not exist; check the path")
    if not root.is_dir():
        raise IsplitError(f"{root} is not a folder; pass a folder with one sub-folder per class")
    if _is_tiny_imagenet(root):
        classes, samples = _tiny_imagenet(root, split)
    elif (root / split).is_dir() and _has_class_folders(root / split):
        classes, samples = _class_folder_samples(root / split)
    else:
        splits = [d.name for d in _subdirs(root) if d.name.lower() in _SPLIT_NAMES]
        splits = [s for s in splits if _has_class_folders(root / s)]
        if splits:
            raise IsplitError(
                f"{root} has no split {split!r}; use one of: {', '.join(splits)} (--split)"
            )
        classes, samples = _class_folder_samples(root)
        log.info("%s has no %r sub-folder: using its class folders, split ignored", root, split)
    return ImageFileDataset(path, split, classes, samples, pp)


# --- Tiny-ImageNet-200 layout ---------------------------------------------------------------


def _is_tiny_imagenet(root: Path) -> bool:
    if (root / "wnids.txt").is_file():
        return True
    train = root / "train"
    return train.is_dir() and any((d / "images").is_dir() for d in _subdirs(train)[:5])


def _tiny_imagenet(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    else:
        wnids = [d.name for d in _subdirs(root / "train")]
    label = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        samples = [
            (str(f), label[w]) for w in wnids for f in _images_under(root / "train" / w / "images")
        ]
    elif split == "val":
        samples = _tiny_imagenet_val(root, label)
    elif split == "test":
        raise IsplitError("the Tiny-ImageNet test split has no labels; use --split val")
    else:
        raise IsplitError(f"Tiny-ImageNet has no split {split!r}; use train or val")
    if not samples:
        raise IsplitError(f"no image files for the {split} split of Tiny-ImageNet in {root}")
    return _wordnet_names(root / "words.txt", wnids), samples


def _tiny_imagenet_val(root: Path, label: dict[str, int]) -> list[tuple[str, int]]:
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise IsplitError(f"{annotations} is missing: it labels the val images; restore it")
    samples = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in label:
            raise IsplitError(f"{annotations} names class {fields[1]!r}, not in wnids.txt")
        samples.append((str(root / "val" / "images" / fields[0]), label[fields[1]]))
    return samples


def _wordnet_names(words: Path, wnids: list[str]) -> list[str]:
    """First name of each wnid from words.txt; "name (wnid)" where two classes share a name."""
    if not words.is_file():
        return list(wnids)
    first = {}
    for line in words.read_text().splitlines():
        wnid, _, names = line.partition("\t")
        first[wnid.strip()] = names.split(",")[0].strip()
    names = [first.get(w) or w for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids, strict=True)]


# --- torchvision data sets ------------------------------------------------------------------

_TORCHVISION_EXAMPLES = "CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, SVHN, STL10"


def _torchvision_dataset(name: str, split: str, pp: Preprocess, root, download: bool):
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        raise IsplitError(
            f"unknown torchvision data set {name!r}; use e.g. {_TORCHVISION_EXAMPLES} "
            "(names as in torchvision.datasets)"
        )
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"download": download} if "download" in params else {}
    if "train" in params:
        _check_split(split, ["train", "test"], f"torchvision:{name}")
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    folder = str(Path(root).expanduser()) if root else str(cache_dir() / "torchvision")
    try:
        base = cls(folder, **kwargs)
    except ValueError as e:  # torchvision's check of the split argument
        raise IsplitError(f"torchvision:{name}: {e}") from e
    except (RuntimeError, OSError) as e:
        what = "download failed" if download else "files not found"
        raise IsplitError(
            f"torchvision:{name} {split}: {what} in {folder} ({e}); pass --data-root where "
            "the files are, or --download (needs internet)"
        ) from e
    targets = _torchvision_targets(base)
    classes = list(getattr(base, "classes", None) or [])
    if len(classes) <= int(targets.max(initial=0)):
        classes = [str(c) for c in range(int(targets.max(initial=0)) + 1)]
    return TorchvisionDataset(f"torchvision:{name}", split, classes, base, targets, pp)


def _torchvision_targets(base: Dataset) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(base, attr, None)
        if values is not None and len(values) == len(base):
            return np.asarray(values, dtype=np.int64)
    log.info("reading every item of %s once to find its labels", type(base).__name__)
    return np.asarray([int(base[i][1]) for i in range(len(base))], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load_dataset(
    spec: str,
    split: str,
    preprocess: Preprocess,
    root: str | None = None,
    download: bool = False,
) -> LabelledDataset:
    """Open a data set: ``fashion-mnist``, ``digits``, an image folder, or ``torchvision:NAME``.
    ``root`` (where the files are) is recorded in the data set's ``describe()``, so that a run
    folder says where its data came from."""
    if spec in ("fashion-mnist", "digits") or spec.startswith("torchvision:"):
        if spec == "fashion-mnist":
            ds = _fashion_mnist(split, preprocess, root, download)
        elif spec == "digits":
            ds = _digits(split, preprocess)
        else:
            ds = _torchvision_dataset(spec.split(":", 1)[1], split, preprocess, root, download)
        if root is not None and spec != "digits":
            ds.root = str(Path(root).expanduser().resolve())
        return ds
    if os.sep in spec or "/" in spec or Path(spec).expanduser().exists():
        return _folder_dataset(spec, split, preprocess)
    raise IsplitError(
        f"unknown data set {spec!r} (and no folder of that name); use fashion-mnist, digits, "
        "a folder with one sub-folder per class, or torchvision:NAME (e.g. torchvision:CIFAR10)"
    )


def limit_dataset(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A deterministic random subset of ``limit`` items, in their original order."""
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise IsplitError(f"--limit must be at least 1, not {limit}")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(ds), size=limit, replace=False))
    if isinstance(ds, LabelledDataset):
        return SubsetDataset(ds, indices)
    return torch.utils.data.Subset(ds, indices.tolist())


def _collate(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list]:
    """Stack the good items; pass bad ones on as ``(path, reason)`` (runs in workers)."""
    good = [item for item in batch if not isinstance(item[0], BadImage)]
    bad = [(item[0].path, item[0].reason) for item in batch if isinstance(item[0], BadImage)]
    if not good:
        return None, None, bad
    x, y = _default_collate([(item[0], item[1]) for item in good])
    return x, torch.as_tensor(y).long(), bad


class BatchLoader:
    """Batches ``(x [B, C, H, W], y [B])``; bad images stop the run or are skipped."""

    def __init__(self, loader: DataLoader, skip_bad_images: bool = False, wrap: bool = False):
        self.loader = loader
        self.dataset = loader.dataset
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []
        self._wrap = wrap  # a user's DataLoader: pass its batches on as they are

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if self._wrap:
                yield batch
                continue
            x, y, bad = batch
            for path, reason in bad:
                self._bad_image(path, reason)
            if x is not None:
                yield x, y

    def _bad_image(self, path: str, reason: str) -> None:
        if not self.skip_bad_images:
            raise IsplitError(
                f"cannot read image {path}: {reason}; fix or remove the file, "
                "or pass --skip-bad-images"
            )
        log.warning("skipping unreadable image %s: %s", path, reason)
        self.skipped.append(path)


def default_workers(ds: Dataset, device: torch.device | str | None = None) -> int:
    """Feeding a GPU: up to 8 worker processes, whatever the data set (collating and
    normalising in the main process would leave the GPU waiting). On a CPU: 0 for in-memory
    data (and unknown user data sets), else up to 4."""
    if device is not None and torch.device(device).type == "cuda":
        return min(8, os.cpu_count() or 1)
    if not isinstance(ds, LabelledDataset) or ds.in_memory:
        return 0
    return min(4, os.cpu_count() or 1)


def make_loader(
    ds: Dataset | DataLoader,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int | None = None,
    skip_bad_images: bool = False,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> BatchLoader:
    """Batch a data set (or wrap a user's DataLoader) for isplit's loops.

    For a CUDA ``device`` the batches come in pinned memory, prepared ahead by worker processes
    (two batches each), so that :func:`to_device` copies them asynchronously."""
    if isinstance(ds, DataLoader):
        return BatchLoader(ds, wrap=True)
    if batch_size < 1:
        raise IsplitError(f"--batch-size must be at least 1, not {batch_size}")
    workers = default_workers(ds, device) if workers is None else workers
    if workers < 0:
        raise IsplitError(f"--workers must be at least 0, not {workers}")
    cuda = device is not None and torch.device(device).type == "cuda"
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        collate_fn=_collate,
        drop_last=drop_last,
        pin_memory=cuda,
    )
    return BatchLoader(loader, skip_bad_images=skip_bad_images)


def to_device(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]],
    device: torch.device,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
    """``(x, y, extra)`` batches on the host -> ``(x, y, extra)`` with ``x`` and ``y`` on
    ``device`` (``x`` in channels-last memory format when asked and 4-D).

    On CUDA the copies are asynchronous (``non_blocking``; truly so from pinned memory) and run
    on a side stream: while the caller computes on one batch, the next one is already being
    copied. Nothing here waits for the GPU."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if device.type != "cuda":
        for x, y, extra in batches:
            x = x.to(device)
            yield (x.contiguous(memory_format=fmt) if x.dim() == 4 else x), y.to(device), extra
        return
    compute, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)

    def copy(x: torch.Tensor, y: torch.Tensor, extra: Any):
        with torch.cuda.stream(side):
            x = x.to(device, non_blocking=True)
            if x.dim() == 4:
                x = x.contiguous(memory_format=fmt)
            return x, y.to(device, non_blocking=True), extra

    it = iter(batches)
    item = next(it, None)
    ahead = None if item is None else copy(*item)
    while ahead is not None:
        compute.wait_stream(side)  # the compute stream waits for the copy, not the host
        x, y, extra = ahead
        x.record_stream(compute)  # made on the side stream, used on the compute stream
        y.record_stream(compute)
        yield x, y, extra  # the caller queues its work on this batch ...
        item = next(it, None)  # ... and meanwhile the next one is loaded and copied
        ahead = None if item is None else copy(*item)
