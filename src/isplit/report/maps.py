"""Grad-CAM maps of a few sample images at the candidate points (the report's teaser figure, as
in the I-SPLIT paper): the run's model and data are rebuilt, Grad-CAM runs once over the
images, and each map is upsampled to the input size and scaled to [0, 1]."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from isplit.analysis import Analysis
from isplit.data import LabelledDataset, Preprocess
from isplit.errors import IsplitError

MAX_DEFAULT_SAMPLES = 10  # one image per class by default, at most this many
MAX_MAP_POINTS = 10  # columns of the Grad-CAM figure (the highest-CUI candidates beyond this)


@dataclass
class SampleMaps:
    """Grad-CAM maps of a few images, upsampled to the input size and scaled to [0, 1]."""

    images: np.ndarray  # [N, H, W] grayscale or [N, H, W, 3] RGB, in [0, 1]
    labels: list[str]  # class name of each image
    predictions: list[str]  # predicted class name of each image
    points: list[str]  # the columns, in network order
    shapes: list[tuple[int, ...]]  # tensor shape at each point (batch 1)
    maps: np.ndarray  # [N, K, H, W] in [0, 1]
    empty: np.ndarray  # [N, K] True where the map is 0 everywhere
    cui: np.ndarray  # [N, K] the images' CUI at the points


def map_points(analysis: Analysis, limit: int = MAX_MAP_POINTS) -> list[str]:
    """The points the Grad-CAM figure shows: the candidates and the best split, in network
    order; beyond ``limit`` the best split and the highest-CUI candidates."""
    names = analysis.point_names
    chosen = set(analysis.candidates) | ({analysis.best} if analysis.best else set())
    idx = sorted(names.index(c) for c in chosen)
    if len(idx) > limit:
        keep = sorted(idx, key=lambda i: (names[i] != analysis.best, -analysis.cui[i]))[:limit]
        idx = sorted(keep)
    return [names[i] for i in idx]


def sample_indices(targets: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` images, class by class in turn: the first image of each class, then the
    second of each, and so on (deterministic)."""
    classes = np.unique(targets)
    per_class = [np.flatnonzero(targets == c) for c in classes]
    out: list[int] = []
    rank = 0
    while len(out) < n and any(rank < len(ix) for ix in per_class):
        out.extend(int(ix[rank]) for ix in per_class if rank < len(ix))
        rank += 1
    return out[:n]


def open_run_data(
    analysis: Analysis, preprocess: Preprocess, data_root: str | None
) -> LabelledDataset:
    """The run's data set, where the analysis found it or under ``data_root``."""
    from isplit.data import load_dataset
    from isplit.data.load import is_builtin

    name, split = analysis.dataset.get("name"), analysis.dataset.get("split")
    builtin = is_builtin(name)
    if builtin and data_root is None:
        data_root = analysis.dataset.get("root")  # where the analysis found it
    spec, root = (name, data_root) if builtin or data_root is None else (data_root, None)
    try:
        return load_dataset(spec, split, preprocess, root=root)
    except IsplitError as e:
        raise IsplitError(
            f"the Grad-CAM figure needs the run's data set {name} ({split}), which was not "
            f"found ({e}); pass --data-root DIR where it is, or --samples 0 to leave the "
            "figure out"
        ) from None


def gradcam_samples(
    analysis: Analysis,
    samples: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> SampleMaps | None:
    """Rebuild the run's model and data and compute the Grad-CAM maps of ``samples`` images
    (default: the first image of each class, at most 10) at ``map_points``. None when the run
    has no candidate points."""
    from isplit.models import resolve_device

    points = map_points(analysis)
    if not points:
        return None
    loaded = analysis.load_model()
    preprocess = loaded.preprocess
    data = open_run_data(analysis, preprocess, data_root)
    n = min(len(data.classes), MAX_DEFAULT_SAMPLES) if samples is None else samples
    xs, ys = _readable_samples(data, n)
    dev = resolve_device(device)
    x = torch.stack(xs).to(dev)
    result = _gradcam(analysis, loaded.model, points, x, torch.tensor(ys, device=dev))
    maps, empty = zip(*(_overlay(m, tuple(x.shape[-2:])) for m in result.maps))
    mean = torch.tensor(preprocess.mean).view(-1, 1, 1)
    std = torch.tensor(preprocess.std).view(-1, 1, 1)
    images = (x.cpu() * std + mean).clamp(0, 1)
    images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    names = list(data.classes)
    preds = result.logits.argmax(1).cpu().tolist()
    shapes = {p.name: p.shape for p in analysis.points}
    return SampleMaps(
        images=images.numpy(),
        labels=[names[y] for y in ys],
        predictions=[names[p] if p < len(names) else str(p) for p in preds],
        points=points,
        shapes=[tuple(shapes[p]) for p in points],
        maps=torch.stack(maps, 1).numpy(),
        empty=torch.stack(empty, 1).numpy(),
        cui=result.cui.detach().cpu().numpy(),
    )


def _readable_samples(data, n: int) -> tuple[list[torch.Tensor], list[int]]:
    """``n`` images, class by class in turn, passing over unreadable files."""
    from isplit.data import BadImage

    xs, ys = [], []
    for i in sample_indices(data.targets, len(data.targets)):
        if len(xs) == n:
            break
        x, y = data[i]
        if not isinstance(x, BadImage):  # unreadable files: take the next image
            xs.append(x)
            ys.append(int(y))
    if not xs:
        raise IsplitError(f"the data set {data.name} ({data.split}) has no readable images")
    return xs, ys


def _gradcam(analysis: Analysis, model, points: list[str], x: torch.Tensor, labels):
    """Grad-CAM at ``points`` with the run's settings, keeping the maps."""
    from isplit.graph import ModelGraph
    from isplit.importance.registry import recorded_cam

    settings = analysis.settings
    input_shape = settings.get("input_shape") or list(x.shape[1:])
    granularity = settings.get("granularity", "layer")
    graph = ModelGraph(model.to(x.device), input_shape, granularity, analysis.leaf_modules)
    cam_class, note = recorded_cam(settings.get("cam"))  # the class the analysis used
    if note:
        warnings.warn(f"isplit report: {note}", stacklevel=2)
    cam = cam_class(graph, points, settings.get("reduction", "mean")).to(x.device)
    return cam(x, labels, target=settings.get("target", "label"), keep_maps=True)


def _overlay(m: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One point's maps ``[N, ...]`` upsampled to ``size`` and scaled to [0, 1] per image;
    and which of them are 0 everywhere."""
    m = m.detach().float().cpu()
    if m.dim() == 1:  # a flat point: one value per image
        m = m[:, None, None]
    elif m.dim() == 2:  # a 1-d point: a row
        m = m[:, None, :]
    elif m.dim() > 3:  # a 3-d point: average the extra dimensions away
        m = m.flatten(3).mean(3)
    m = m[:, None]  # [N, 1, h, w]
    up = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
    up = up[:, 0]
    lo = up.amin((1, 2), keepdim=True)
    span = up.amax((1, 2), keepdim=True) - lo
    scaled = torch.where(span > 0, (up - lo) / span.clamp_min(1e-30), 0.0)
    return scaled, m.flatten(1).amax(1) <= 0
