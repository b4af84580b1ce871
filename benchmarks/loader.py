"""The loader alone on an image folder of JPEG files: images/s of model inputs with 8-bit
transport (workers decode and resize, hand over uint8; normalised after the copy) against the
float32 path (workers also normalise, hand over float32), with the same workers and batches;
bytes per image crossing from the workers.

    python benchmarks/loader.py [--images 2000] [--size 224] [--workers 2] [--device cpu]

Makes the folder itself (``--folder`` to keep or reuse it): ``--images`` smooth random pictures
of 10 classes at ``--source-side`` x 1.25 px, JPEG quality 90, so that decoding and resizing
cost what they cost on photographs. Each path is run ``--repeats`` times, alternating, after a
warm-up pass (the page cache holds the files); prints one JSON object with the median rates.
``make_jpeg_folder`` and ``loader_rate`` are also what ``scale.py --gpu`` uses for its
image-folder case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from isplit.data import Preprocess
from isplit.data.folders import folder_dataset
from isplit.data.loaders import make_loader, to_device, uint8_view

CLASSES = 10


def make_jpeg_folder(root: Path, images: int, side: int = 256, seed: int = 0) -> Path:
    """``images`` JPEG files in ``CLASSES`` class folders (kept when already there)."""
    done = root / ".complete"
    if done.exists() and done.read_text() == f"{images} {side} {seed}":
        return root
    g = torch.Generator().manual_seed(seed)
    for i in range(images):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        x = torch.rand(1, 3, 8, 10, generator=g)
        x = torch.nn.functional.interpolate(x, size=(side, side * 5 // 4), mode="bicubic")[0]
        x = x + 0.08 * torch.randn(x.shape, generator=g)  # texture: JPEG has work to do
        pixels = (x.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    done.write_text(f"{images} {side} {seed}")
    return root


def imagenet_preprocess(size: int) -> Preprocess:
    return Preprocess(
        size=size,
        channels=3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        resize=size * 8 // 7,
    )


def loader_rate(
    folder: Path, size: int, batch_size: int, workers: int, device: str, uint8: bool
) -> dict:
    """Images/s of model inputs on ``device`` from the folder, and bytes per image moved."""
    ds = folder_dataset(str(folder), "train", imagenet_preprocess(size))
    prepare = None
    if uint8:
        ds, prepare = uint8_view(ds)
    dev = torch.device(device)
    loader = make_loader(ds, batch_size, workers=workers, device=dev)
    start, seen, moved = time.perf_counter(), 0, 0
    batches = ((x, y, None) for x, y in loader)
    for x, _, _ in to_device(batches, dev, prepare=prepare):
        seen += len(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    x0, _ = ds[0]
    moved = x0.element_size() * x0.numel()
    return {"images_per_s": round(seen / seconds, 1), "bytes_per_image": moved, "images": seen}


def compare(args: argparse.Namespace, folder: Path) -> dict:
    rates: dict[str, list[float]] = {"float32": [], "uint8": []}
    out: dict[str, dict] = {}
    kw = dict(size=args.size, batch_size=args.batch_size, workers=args.workers, device=args.device)
    loader_rate(folder, uint8=True, **kw)  # warm-up: files in the page cache, imports done
    for _ in range(args.repeats):
        for path in rates:
            r = loader_rate(folder, uint8=path == "uint8", **kw)
            rates[path].append(r["images_per_s"])
            out[path] = r
    for path, values in rates.items():
        out[path]["images_per_s"] = statistics.median(values)
        out[path]["runs"] = values
    return {
        "images": args.images,
        "size": args.size,
        "source": f"{args.source_side * 5 // 4}x{args.source_side} JPEG q90",
        "workers": args.workers,
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": torch.get_num_threads(),
        **out,
        "uint8_speedup": round(out["uint8"]["images_per_s"] / out["float32"]["images_per_s"], 2),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224, help="model input side (resize 8/7, crop)")
    p.add_argument("--source-side", type=int, default=256, help="the JPEGs' shorter side")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--folder", default=None, help="make (or reuse) the JPEG folder here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_jpeg_folder(Path(args.folder or tmp), args.images, args.source_side)
        report = compare(args, folder)
    json.dump(report, sys.stdout, indent=2)
    print()
    return report


if __name__ == "__main__":
    main()
