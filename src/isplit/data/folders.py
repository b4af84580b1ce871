"""Image folders (``<folder>/<class>/<image>``, optionally under split folders) and the
Tiny-ImageNet-200 layout; images decoded lazily, by torchvision's decoders (libjpeg-turbo,
libpng, libwebp: about 3x faster than PIL on JPEG, the same pixels) where they read the file,
else by PIL."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

from isplit.data.base import BadImage, LabelledDataset
from isplit.data.preprocess import Preprocess, pil_to_uint8
from isplit.errors import IsplitError

log = logging.getLogger("isplit")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: The formats torchvision decodes (the others, and files it cannot read, go to PIL).
_TORCHVISION_DECODES = (".jpg", ".jpeg", ".png", ".webp")
# torchvision 0.29 points to TorchCodec as the decoders' successor; they are still its, and
# still the fastest here. Said once per call otherwise.
warnings.filterwarnings(
    "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning
)


def decode_uint8(path: str, pp: Preprocess) -> torch.Tensor:
    """An image file -> ``[channels, H, W]`` uint8 pixels in ``pp``'s colour mode, as PIL's
    ``convert("RGB")`` / ``convert("L")`` gives them; raises whatever the decoders raise on a
    file neither can read."""
    if path.lower().endswith(_TORCHVISION_DECODES):
        try:
            x = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except RuntimeError:  # e.g. a CMYK or arithmetic-coded JPEG: PIL may still read it
            x = None
        if x is not None and x.dtype == torch.uint8:  # (16-bit PNGs: PIL's conversion)
            return x if pp.channels == 3 else _pil_luma(x)
    with Image.open(path) as img:
        return pil_to_uint8(img, pp)


def _pil_luma(rgb: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: ITU-R 601-2 luma in 16-bit fixed point, rounded."""
    r, g, b = rgb.int().unbind(-3)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(-3)


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
            return self._item(decode_uint8(path, self.preprocess)), label
        except Exception as e:  # never raise here: workers would mangle the message
            return BadImage(path, f"{type(e).__name__}: {e}"), label


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

#: The share of a folder without split sub-folders that is held out for testing (``--holdout``).
HOLDOUT = 0.2
#: A folder without split sub-folders: the split names that read its held-out images, the rest,
#: or all of them.
HELD_OUT_SPLITS = ("test", "val", "valid", "validation", "holdout")
REST_SPLITS = ("train",)
ALL_SPLIT = "all"


def held_out(relative: str, share: float) -> bool:
    """Whether the image at ``relative`` (its path below the folder, ``/``-separated) is in the
    hold-out of ``share``: the first 8 bytes of the path's sha256 below ``share`` of their range.
    A file keeps its side whatever other files are added or removed, on any machine."""
    digest = hashlib.sha256(relative.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < share * 2.0**64


def parse_split(split: str, holdout: float | None) -> tuple[str, float | None]:
    """``split`` and the hold-out share it asks for: ``test@0.3`` names its own share (as a run
    records a split of another share than the default), else ``holdout``."""
    name, at, share = split.partition("@")
    if not at:
        return split, holdout
    try:
        value = float(share)
    except ValueError:
        raise IsplitError(
            f"--split {split!r}: after @ comes the hold-out share, e.g. test@0.2"
        ) from None
    return name, value


def check_holdout(share: float) -> float:
    if not 0.0 < share < 1.0:
        raise IsplitError(
            f"--holdout must be a share strictly between 0 and 1 (e.g. 0.2), not {share:g}"
        )
    return float(share)


def _held_out_samples(
    root: Path, split: str, share: float, samples: list[tuple[str, int]]
) -> tuple[list[tuple[str, int]], dict]:
    """The ``split`` side of a folder without split sub-folders, and its record."""
    low = split.lower()
    if low == ALL_SPLIT:
        side = "all"
    elif low in HELD_OUT_SPLITS:
        side = "test"
    elif low in REST_SPLITS:
        side = "train"
    else:
        raise IsplitError(
            f"{root} has no split sub-folders, so no split {split!r}: use --split train (the "
            f"images not held out), test (the {share:.0%} held out) or all (every image)"
        )
    record = {"share": share, "side": side, "folder_images": len(samples)}
    if side == "all":
        return samples, {"side": "all", "folder_images": len(samples)}
    out = [
        (path, label)
        for path, label in samples
        if held_out(Path(path).relative_to(root).as_posix(), share) == (side == "test")
    ]
    if not out:
        which = "held-out" if side == "test" else "not held-out"
        raise IsplitError(
            f"{root} has no split sub-folders and none of its {len(samples)} images is "
            f"{which} at --holdout {share:g}; add images, change --holdout, or read them all "
            "with --split all (never to test a model trained on them)"
        )
    return out, record


def folder_dataset(
    path: str, split: str, pp: Preprocess, holdout: float | None = None
) -> LabelledDataset:
    """The ``split`` of the image folder at ``path``: ``<path>/<split>/<class>/<image>``, the
    Tiny-ImageNet layout, or ``<path>/<class>/<image>``. A folder without split sub-folders is
    split by ``holdout`` (a share, e.g. :data:`HOLDOUT`): ``test`` (also ``val``) reads the images
    held out (:func:`held_out`), ``train`` the others, ``all`` every image; ``holdout`` None reads
    every image whatever ``split`` says (for code that only wants the pixels).
    ``split`` may carry its own share: ``test@0.3``."""
    split, holdout = parse_split(split, holdout)
    root = Path(path).expanduser()
    if not root.exists():
        raise IsplitError(f"data folder {root} does not exist; check the path")
    if not root.is_dir():
        raise IsplitError(f"{root} is not a folder; pass a folder with one sub-folder per class")
    record = None
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
        if holdout is None:
            log.info("%s has no %r sub-folder: using its class folders, split ignored", root, split)
        else:
            samples, record = _held_out_samples(root, split, check_holdout(holdout), samples)
            if record["side"] != "all" and holdout != HOLDOUT:
                split = f"{split}@{holdout:g}"  # a run records it; reopened, the same images
    ds = ImageFileDataset(path, split, classes, samples, pp)
    ds.holdout = record
    return ds


def holdout_note(ds: LabelledDataset, other: LabelledDataset | None = None) -> str | None:
    """One line saying how a folder without split sub-folders was divided and which side was
    read (None for any other data set): ``ds`` alone (analyze), or ``ds`` to train on and
    ``other`` to test on. It counts the sides, not a ``--limit`` sample of them."""
    rec = getattr(ds, "holdout", None)
    if not rec:
        return None
    name, total = ds.name, rec["folder_images"]
    if other is not None and getattr(other, "holdout", None):
        test = other.holdout
        if rec["side"] == "train" and test["side"] == "test":
            return (
                f"{name} has no split sub-folders: divided by a hash of each file's path, "
                f"{len(other)} of its {total} images ({test['share']:.0%}, --holdout) held out "
                f"for testing, the other {len(ds)} for training"
            )
    if rec["side"] == "all":
        return (
            f"read all {total} images of {name} (no split sub-folders): a model trained on this "
            "folder saw most of them; --split test reads only the held-out images"
        )
    if rec["side"] == "test":
        return (
            f"read the held-out images of {name}: {len(ds)} of its {total} (no split "
            f"sub-folders: {rec['share']:.0%} by a hash of each file's path, the images "
            "`isplit train` tests on); --split all reads them all"
        )
    return (
        f"read the images of {name} that are not held out: {len(ds)} of its {total} (no split "
        f"sub-folders: {rec['share']:.0%} held out by a hash of each file's path); "
        "--split all reads them all"
    )


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
