"""An NVIDIA Triton model repository serving the exported tail (``config.pbtxt`` +
``1/model.onnx``), which KServe's Triton runtime serves unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from isplit.deploy.manifest import MAX_BATCH_SIZE, Manifest
from isplit.deploy.names import PARTS, TAIL, TAIL_INT8

TRITON_MAX_BATCH = MAX_BATCH_SIZE

_TRITON_TYPES = {"FP32": "TYPE_FP32", "UINT8": "TYPE_UINT8"}


def triton_config(manifest: Manifest, model: str, max_batch: int | None = None) -> str:
    """``config.pbtxt`` of served model ``model`` (ONNX Runtime backend, dynamic batching);
    ``max_batch_size`` is the manifest's (the cap ``isplit serve`` applies too)."""
    max_batch = manifest.max_batch_size if max_batch is None else max_batch

    def tensors(specs) -> str:
        return ",\n".join(
            f'  {{ name: "{t.name}" data_type: {_TRITON_TYPES[t.datatype]} '
            f"dims: [ {', '.join(str(d) for d in t.shape[1:])} ] }}"
            for t in specs
        )

    return (
        f'name: "{model}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch}\n"
        f"input [\n{tensors(manifest.inputs(model))}\n]\n"
        f"output [\n{tensors(manifest.outputs())}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
    )


def write_triton(manifest: Manifest, folder: Path, max_batch: int | None = None) -> None:
    for model, part in ((manifest.name, TAIL), (manifest.int8_name, TAIL_INT8)):
        target = folder / "triton" / model / "1"
        target.mkdir(parents=True)
        try:
            os.link(folder / PARTS[part][0], target / "model.onnx")
        except OSError:  # no hard links on this file system
            shutil.copyfile(folder / PARTS[part][0], target / "model.onnx")
        (folder / "triton" / model / "config.pbtxt").write_text(
            triton_config(manifest, model, max_batch)
        )
