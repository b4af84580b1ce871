"""Running the exported parts on numpy arrays: onnxruntime on the ``.onnx`` files, or PyTorch on
the network rebuilt from its recorded weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from isplit.deploy.manifest import Manifest
from isplit.deploy.parts import (
    BOTTLENECK_FILE,
    PARTS,
    first_line,
    part_modules,
    require,
    split_parts,
)
from isplit.errors import IsplitError
from isplit.models import load_recorded, resolve_device

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
    module = module.to(device).eval()

    def run(*arrays: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            # Request tensors are read-only views of the body: copy those (np.require "W").
            args = [torch.from_numpy(np.require(a, requirements="CW")).to(device) for a in arrays]
            return module(*args).float().cpu().numpy()

    return run


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
    dev = resolve_device(device)
    if runtime == "onnxruntime":
        require("onnxruntime")
        manifest.check_files(folder, [PARTS[p][0] for p in parts])
        return {p: onnx_runner(folder / PARTS[p][0], dev.type) for p in parts}
    bottleneck = None
    if manifest.bottleneck is not None:
        manifest.check_files(folder, [BOTTLENECK_FILE])
        bottleneck = folder / BOTTLENECK_FILE
    split = split_parts(load_recorded(manifest.model), manifest.point, bottleneck)
    modules = part_modules(split)
    return {p: _torch_runner(modules[p], dev) for p in parts}
