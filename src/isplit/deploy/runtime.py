"""Running the exported parts on numpy arrays: onnxruntime on the ``.onnx`` files, or PyTorch on
the network rebuilt from its recorded weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isplit.deploy.manifest import Manifest
from isplit.deploy.names import BOTTLENECK_FILE, PARTS, first_line, require
from isplit.errors import IsplitError

if TYPE_CHECKING:  # torch is imported only for the torch runtime (see isplit.deploy.names)
    import torch
    from torch import nn

Runner = Callable[..., np.ndarray]
RUNTIMES = ("onnxruntime", "torch")


def onnx_runner(path: Path, device: str) -> Runner:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise IsplitError(
                "this onnxruntime has no CUDA support: install onnxruntime-gpu, or use "
                "--runtime torch (or --device cpu)"
            )
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # InvalidProtobuf, NoSuchFile, ...
        raise IsplitError(
            f"cannot load {path} ({first_line(e)}); export the folder again"
        ) from None
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> np.ndarray:
        return session.run(None, dict(zip(names, arrays)))[0]

    return run


def _torch_runner(module: nn.Module, device: torch.device) -> Runner:
    import torch

    module = module.to(device).eval()

    def run(*arrays: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            # Request tensors are read-only views of the body: copy those (np.require "W").
            args = [torch.from_numpy(np.require(a, requirements="CW")).to(device) for a in arrays]
            return module(*args).float().cpu().numpy()

    return run


def device_type(device: str) -> str:
    """``cpu`` or ``cuda``: where ``device`` (``cpu``, ``cuda[:N]``, ``auto``) runs, asking
    torch only when it is not obvious."""
    if device == "cpu" or device.startswith("cuda"):
        return device.split(":")[0]
    from isplit.models import resolve_device

    return resolve_device(device).type


def load_programs(
    folder: str | Path,
    manifest: Manifest,
    parts: list[str],
    runtime: str = "onnxruntime",
    device: str = "cpu",
) -> dict[str, Runner]:
    """Runners for ``parts`` (``head``, ``tail``, ``tail_int8``) of an export: functions from
    numpy arrays (in the part's input order) to the part's output.

    ``onnxruntime`` runs the checked ``.onnx`` files; ``torch`` rebuilds the network from the
    weights the manifest records (their fingerprint must match) and cuts it again, for GPUs
    without onnxruntime-gpu. Neither loads pickled data."""
    folder = Path(folder)
    if runtime not in RUNTIMES:
        raise IsplitError(f"unknown runtime {runtime!r}; use {' or '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        require("onnxruntime")
        manifest.check_files(folder, [PARTS[p][0] for p in parts])
        return {p: onnx_runner(folder / PARTS[p][0], device_type(device)) for p in parts}
    from isplit.deploy.parts import part_modules, split_parts
    from isplit.models import load_recorded, resolve_device

    dev = resolve_device(device)
    bottleneck = None
    if manifest.bottleneck is not None:
        manifest.check_files(folder, [BOTTLENECK_FILE])
        bottleneck = folder / BOTTLENECK_FILE
    leaves = manifest.model.get("leaf_modules", ())  # the graph the point is a cut of
    split = split_parts(load_recorded(manifest.model), manifest.point, bottleneck, leaves)
    modules = part_modules(split)
    return {p: _torch_runner(modules[p], dev) for p in parts}
