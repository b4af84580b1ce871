"""``manifest.json``: what an exported split is, and the tensors its served models take.

An export folder (``isplit export``) holds the head and the tail of one network cut at one point.
The manifest says everything the client and the server need besides the programs: the input's
shape and preprocessing, the tensor that crosses the link, the 8-bit scheme, the class names, the
fingerprints of the network it came from, and the checks made when it was exported.

The transmitted tensor has the shape the point gives (N x C x H x W in a CNN, N x H x W x C
inside a ConvNeXt block, N x L x D tokens in a vision transformer, ...; with a bottleneck, its
code: N x C x H x W, or N x C x P x 1 for tokens) and the manifest records its layout
(:class:`~isplit.graph.layout.Layout`: which axes hold channels and positions).

The tail is published under two model names over the Open Inference Protocol:

- ``<name>`` takes the transmitted tensor as float32: input ``activation`` FP32 [N, ...];
- ``<name>-int8`` takes its 8-bit code: ``activation`` UINT8 [N, ...], ``scale`` FP32 [N, 1]
  and ``zero_point`` UINT8 [N, 1], with ``x = (activation - zero_point) * scale``.

Both answer ``logits`` FP32 [N, classes].
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isplit.errors import IsplitError
from isplit.io import atomic_write_json, read_json

if TYPE_CHECKING:  # isplit.data imports torchvision: the server does without (see load)
    from isplit.data import Preprocess

MANIFEST = "manifest.json"
FORMAT = 1
INT8_SUFFIX = "-int8"
#: images per request, unless the export says otherwise (Triton's max_batch_size)
MAX_BATCH_SIZE = 64
INPUT, ACTIVATION, SCALE, ZERO_POINT, LOGITS = (
    "input",
    "activation",
    "scale",
    "zero_point",
    "logits",
)
#: Open Inference Protocol datatype names and their numpy types.
DATATYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
QUANTIZATION = {
    "scheme": "affine uint8, one scale and zero point per image (ONNX DequantizeLinear)",
    "dequantize": "x = (q - zero_point) * scale",
    "range_includes_zero": True,
}
#: Bytes per image that the 8-bit code sends besides the code itself (one byte per value): its
#: ``scale`` (FP32, 4 bytes) and its ``zero_point`` (UINT8, 1 byte), the [N, 1] inputs of the
#: ``-int8`` model (:func:`served_inputs`), as :func:`~isplit.validation.bottleneck.quantize_uint8`
#: makes them. Every byte count of the 8-bit link uses this.
INT8_HEADER_BYTES = 5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a served model: name, OIP datatype and shape (``-1``: the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def nbytes(self, batch: int) -> int:
        return batch * math.prod(self.shape[1:]) * self.dtype.itemsize

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_name(name: str) -> str:
    """A model name the server, Triton and KServe accept (letters, digits, ``_ . -``)."""
    if not _NAME.match(name):
        raise IsplitError(
            f"model name {name!r} is not usable: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_name(model_name: str) -> str:
    """``<model>-tail`` with the characters a served model name cannot hold replaced."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name).strip("_.-") or "model"
    return check_name(f"{base[:90]}-tail")


def served_inputs(shape: tuple[int, ...], quantized: bool) -> list[TensorSpec]:
    """The inputs of the tail model for a transmitted tensor of ``shape`` (per image, any rank):
    float32, or the 8-bit code with its scale and zero point."""
    batched = (-1, *shape)
    if not quantized:
        return [TensorSpec(ACTIVATION, "FP32", batched)]
    return [
        TensorSpec(ACTIVATION, "UINT8", batched),
        TensorSpec(SCALE, "FP32", (-1, 1)),
        TensorSpec(ZERO_POINT, "UINT8", (-1, 1)),
    ]


@dataclass
class Manifest:
    """The contents of ``manifest.json`` (see the module docstring)."""

    name: str
    point: str
    input_shape: tuple[int, ...]  # C, H, W
    preprocess: dict  # Preprocess.to_json()
    transmitted_shape: tuple[int, ...]  # per image, of what crosses the link
    classes: list[str]
    model: dict  # LoadedModel.record() + graph_sha256
    bottleneck: dict | None = None  # the validation run, point, settings, code shape
    files: dict = field(default_factory=dict)  # file name -> sha256
    pytorch: dict = field(default_factory=dict)  # "head"/"tail" -> file, format
    checks: dict = field(default_factory=dict)
    isplit_version: str = ""
    transmitted_layout: dict | None = None  # Layout.to_json() of what crosses the link
    accuracy: dict | None = None  # validated and checked accuracies (isplit.deploy.accuracy)
    #: the most images one request may carry: the tail server's cap and Triton's max_batch_size
    max_batch_size: int = MAX_BATCH_SIZE
    format: int = FORMAT

    # -- the served models -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def int8_name(self) -> str:
        return self.name + INT8_SUFFIX

    @property
    def transmitted_numel(self) -> int:
        return math.prod(self.transmitted_shape)

    def inputs(self, model: str) -> list[TensorSpec]:
        """The input tensors of served model ``model`` (``name`` or ``name-int8``)."""
        if model not in self.served:
            raise KeyError(model)
        return served_inputs(self.transmitted_shape, quantized=model == self.int8_name)

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(LOGITS, "FP32", (-1, self.num_classes))]

    @property
    def served(self) -> list[str]:
        return [self.name, self.int8_name]

    def preprocessing(self) -> Preprocess:
        from isplit.data import Preprocess

        return Preprocess.from_json(self.preprocess)

    # -- files ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        d["input"] = {"shape": list(self.input_shape), "preprocess": self.preprocess}
        d["transmitted"] = {
            "name": ACTIVATION,
            "shape": list(self.transmitted_shape),
            "dtype": "float32",
            "bytes": 4 * self.transmitted_numel,
            "bytes_int8": self.transmitted_numel + INT8_HEADER_BYTES,
            "layout": self.transmitted_layout,
        }
        d["quantization"] = QUANTIZATION
        d["served_models"] = {
            m: {
                "inputs": [t.to_json() for t in self.inputs(m)],
                "outputs": [t.to_json() for t in self.outputs()],
            }
            for m in self.served
        }
        for k in ("input_shape", "preprocess", "transmitted_shape", "transmitted_layout"):
            d.pop(k)
        return {"format": d.pop("format"), **d}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST
        atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, folder: str | Path, preprocess: bool = True) -> Manifest:
        """Read ``folder/manifest.json``; a clear error when it is not an isplit export.
        ``preprocess=False`` leaves the image preprocessing unchecked, and torch unimported
        (the tail server takes tensors, never images)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise IsplitError(f"{folder} is not a folder: pass the --out folder of `isplit export`")
        d = read_json(folder / MANIFEST, what="export")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise IsplitError(
                f"{folder / MANIFEST} is not a manifest this isplit reads (format "
                f"{d.get('format') if isinstance(d, dict) else None!r}, expected {FORMAT}); "
                "export again with this version"
            )
        try:
            m = cls(
                name=check_name(str(d["name"])),
                point=str(d["point"]),
                input_shape=tuple(int(s) for s in d["input"]["shape"]),
                preprocess=dict(d["input"]["preprocess"]),
                transmitted_shape=tuple(int(s) for s in d["transmitted"]["shape"]),
                classes=[str(c) for c in d["classes"]],
                model=dict(d["model"]),
                bottleneck=d.get("bottleneck"),
                files=dict(d.get("files", {})),
                pytorch=dict(d.get("pytorch", {})),
                checks=dict(d.get("checks", {})),
                isplit_version=str(d.get("isplit_version", "")),
                transmitted_layout=d["transmitted"].get("layout"),
                accuracy=d.get("accuracy"),
                max_batch_size=int(d.get("max_batch_size", MAX_BATCH_SIZE)),
            )
            if m.max_batch_size < 1:
                raise ValueError(f"max_batch_size {m.max_batch_size} is not positive")
            if preprocess:
                m.preprocessing()
        except (KeyError, TypeError, ValueError) as e:
            raise IsplitError(
                f"{folder / MANIFEST} is incomplete or damaged ({type(e).__name__}: {e}); "
                "export again"
            ) from None
        return m

    def check_files(self, folder: str | Path, names: list[str]) -> None:
        """The files ``names`` exist and their sha256 is the manifest's (no swapped programs)."""
        for n in names:
            path = Path(folder) / n
            if not path.is_file():
                raise IsplitError(f"{path} is missing: export the folder again")
            want = self.files.get(n)
            if want and sha256_file(path) != want:
                raise IsplitError(
                    f"{path} is not the file this export wrote (its sha256 differs from the "
                    "manifest's); export the folder again"
                )
