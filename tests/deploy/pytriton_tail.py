"""Serve an isplit export's tail with NVIDIA's Triton Inference Server, through PyTriton.

Run by ``test_triton_pytriton.py`` with the Python of PyTriton's own environment (``make setup``
makes it: ``.venv/pytriton``; PyTriton's Python backend stub needs numpy < 2, isplit's does not).
Only numpy, onnxruntime and PyTriton are imported: isplit is not installed there, and this
program reads the export as any other serving stack would, from its files.

``python pytriton_tail.py EXPORT HTTP_PORT GRPC_PORT METRICS_PORT``: binds each served model of
``EXPORT/manifest.json`` (float32 and 8-bit) to a function that runs its exported ONNX tail with
onnxruntime, with the exported tensor names, types, shapes and ``max_batch_size``.
``python pytriton_tail.py --repository FOLDER HTTP_PORT GRPC_PORT METRICS_PORT``: binds nothing,
and starts Triton on the model repository ``FOLDER`` (a copy of an export's ``triton/``).
Prints ``ready`` when serving; SIGINT / SIGTERM stop it.
"""

import json
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np
import onnxruntime as ort

DTYPES = {"FP32": np.float32, "UINT8": np.uint8}


def max_batch_size(folder: Path, model: str) -> int:
    """The export's image cap: the manifest's, else its Triton configuration's."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if "max_batch_size" in manifest:
        return int(manifest["max_batch_size"])
    config = (folder / "triton" / model / "config.pbtxt").read_text()
    return int(re.search(r"^max_batch_size:\s*(\d+)", config, re.M).group(1))


def tail_function(onnx_file: Path, output: str):
    """The bound function: onnxruntime on the exported tail, one call per (dynamic) batch."""
    from pytriton.decorators import batch

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])

    @batch
    def infer(**inputs: np.ndarray) -> dict:
        return {output: session.run([output], inputs)[0]}

    return infer


def main(folder: Path, http: int, grpc: int, metrics: int, repository: bool) -> None:
    # The Python backend stub is linked to libpython: it must find this interpreter's own.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http,
        grpc_address="127.0.0.1",
        grpc_port=grpc,
        metrics_port=metrics,
        model_repository=folder if repository else None,
        exit_on_error=False,  # a repository's ONNX models do not load here (see the test)
        strict_readiness=False,
        exit_timeout_secs=5,
    )
    # A test server on loopback: the model-repository API open, as plain Triton has it.
    with Triton(
        config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])
    ) as triton:
        served = {} if repository else json.loads((folder / "manifest.json").read_text())
        for name, spec in served.get("served_models", {}).items():
            [output] = spec["outputs"]
            onnx_file = folder / "triton" / name / "1" / "model.onnx"
            triton.bind(
                model_name=name,
                infer_func=tail_function(onnx_file, output["name"]),
                inputs=[
                    Tensor(name=t["name"], dtype=DTYPES[t["datatype"]], shape=tuple(t["shape"][1:]))
                    for t in spec["inputs"]
                ],
                outputs=[
                    Tensor(
                        name=output["name"],
                        dtype=DTYPES[output["datatype"]],
                        shape=tuple(output["shape"][1:]),
                    )
                ],
                config=ModelConfig(max_batch_size=max_batch_size(folder, name)),
                strict=True,
            )
        triton.run()
        print("ready", flush=True)
        triton.serve()


if __name__ == "__main__":
    args = sys.argv[1:]
    repository = args[0] == "--repository"
    folder, *ports = args[repository:]
    main(Path(folder), *map(int, ports), repository)
