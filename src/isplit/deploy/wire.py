"""Open Inference Protocol (KServe v2 REST) messages, JSON and with the binary tensor extension.

A request or response body is a JSON header, optionally followed by raw tensor bytes: then the
HTTP header ``Inference-Header-Content-Length`` gives the JSON header's length, and each binary
tensor says its byte count in ``parameters.binary_data_size`` (tensors in the order listed).
The client and the server both use these functions; the server treats every request as untrusted
(:func:`decode_request` checks names, datatypes, shapes, byte counts and values, and raises
:class:`WireError` with the HTTP status to answer). Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from isplit.deploy.manifest import DATATYPES, SCALE, TensorSpec
from isplit.errors import IsplitError

HEADER = "Inference-Header-Content-Length"


class WireError(IsplitError):
    """A malformed or unacceptable message; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _json(data: bytes | memoryview) -> dict:
    try:
        doc = json.loads(bytes(data), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"the JSON header is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise WireError("the JSON header must be an object")
    return doc


def _split(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON header and the binary part of a body."""
    if header_length is None:
        return _json(body), memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise WireError(f"{HEADER} must be a byte count, not {header_length[:40]!r}") from None
    if not 0 < n <= len(body):
        raise WireError(f"{HEADER} is {n}, but the body holds {len(body)} bytes")
    view = memoryview(body)
    return _json(view[:n]), view[n:]


def _tensors_json(tensors, binary: bool) -> tuple[list[dict], list[bytes]]:
    """The JSON entries of ``(spec, array)`` pairs and, with ``binary``, their raw bytes."""
    docs, raws = [], []
    for spec, array in tensors:
        d, raw = _tensor_json(spec, array, binary)
        docs.append(d)
        if raw is not None:
            raws.append(raw)
    return docs, raws


def _tensor_json(spec: TensorSpec, array: np.ndarray, binary: bool) -> tuple[dict, bytes | None]:
    doc: dict = {"name": spec.name, "datatype": spec.datatype, "shape": list(array.shape)}
    if binary:
        raw = np.ascontiguousarray(array, dtype=spec.dtype).tobytes()
        doc["parameters"] = {"binary_data_size": len(raw)}
        return doc, raw
    doc["data"] = np.asarray(array, dtype=spec.dtype).ravel().tolist()
    return doc, None


def _encode(doc: dict, raws: list[bytes]) -> tuple[bytes, int | None]:
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not raws:
        return header, None
    return b"".join([header, *raws]), len(header)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def encode_request(
    tensors: Sequence[tuple[TensorSpec, np.ndarray]],
    *,
    binary: bool = True,
    binary_output: bool = True,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """``(body, json_header_length)`` of an infer request; the length is None for pure JSON."""
    doc: dict = {}
    if request_id is not None:
        doc["id"] = request_id
    doc["parameters"] = {"binary_data_output": bool(binary_output)}
    doc["inputs"], raws = _tensors_json(tensors, binary)
    return _encode(doc, raws)


@dataclass
class Decoded:
    """A checked infer request: one array per model input, in the model's input order."""

    arrays: list[np.ndarray]
    batch: int
    binary_output: bool
    request_id: str | None


def _shape(item: dict, spec: TensorSpec) -> tuple[int, ...]:
    shape = item.get("shape")
    want = "x".join("N" if d < 0 else str(d) for d in spec.shape)
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or len(shape) != len(spec.shape)
        or any(d != w for d, w in zip(shape[1:], spec.shape[1:]))
        or shape[0] < 1
    ):
        raise WireError(f"input {spec.name!r} has shape {shape!r}; this model takes {want}")
    return tuple(shape)


def _from_data(data, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor given as JSON numbers (flat or nested, row-major)."""
    try:
        values = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise WireError(
            f"input {spec.name!r}: 'data' must be a list of numbers (flat or nested)"
        ) from None
    if values.size != math.prod(shape):
        raise WireError(
            f"input {spec.name!r} holds {values.size} values; shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    if spec.datatype == "UINT8" and not (
        np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 255
    ):
        raise WireError(f"input {spec.name!r} is UINT8: its values must be integers 0-255")
    return values.reshape(shape).astype(spec.dtype)


def decode_request(
    body: bytes,
    header_length: str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> Decoded:
    """Parse and check an infer request for a model with ``inputs`` and ``outputs``."""
    doc, binary = _split(body, header_length)
    items = doc.get("inputs")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise WireError("the request needs 'inputs': a list of tensors")
    specs = {s.name: s for s in inputs}
    expected = ", ".join(f"{s.name} ({s.datatype})" for s in inputs)
    names = [i.get("name") for i in items]
    for n in names:
        if n not in specs:
            raise WireError(f"unknown input {n!r}; this model takes {expected}")
    if len(set(names)) != len(names):
        raise WireError("an input is given twice")
    missing = [s.name for s in inputs if s.name not in names]
    if missing:
        raise WireError(f"missing input(s) {', '.join(missing)}; this model takes {expected}")

    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        spec = specs[item["name"]]
        if item.get("datatype") != spec.datatype:
            raise WireError(
                f"input {spec.name!r} has datatype {item.get('datatype')!r}; this model takes "
                f"{spec.datatype}"
            )
        shape = _shape(item, spec)
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise WireError(f"input {spec.name!r}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            want = spec.nbytes(shape[0])
            if not isinstance(size, int) or isinstance(size, bool) or size != want:
                raise WireError(
                    f"input {spec.name!r}: binary_data_size is {size!r}; shape {list(shape)} "
                    f"of {spec.datatype} takes {want} bytes"
                )
            if offset + size > len(binary):
                raise WireError(
                    f"the body is truncated: input {spec.name!r} needs bytes {offset}-"
                    f"{offset + size} after the JSON header, but only {len(binary)} follow"
                )
            raw = binary[offset : offset + size]
            arrays[spec.name] = np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
            offset += size
        elif "data" in item:
            arrays[spec.name] = _from_data(item["data"], spec, shape)
        else:
            raise WireError(f"input {spec.name!r} has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise WireError(
            f"the body holds {len(binary)} bytes after the JSON header; the inputs declare {offset}"
        )
    batches = {a.shape[0] for a in arrays.values()}
    if len(batches) != 1:
        raise WireError(f"the inputs disagree on the batch size ({sorted(batches)})")
    for spec in inputs:
        a = arrays[spec.name]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise WireError(f"input {spec.name!r} holds NaN or infinity")
    if SCALE in arrays and not (arrays[SCALE] > 0).all():
        raise WireError(f"input {SCALE!r} must be positive")
    return Decoded(
        arrays=[arrays[s.name] for s in inputs],
        batch=batches.pop(),
        binary_output=_binary_output(doc, outputs),
        request_id=_request_id(doc),
    )


def _request_id(doc: dict) -> str | None:
    rid = doc.get("id")
    if rid is None:
        return None
    if not isinstance(rid, str) or len(rid) > 256:
        raise WireError("'id' must be a string of at most 256 characters")
    return rid


def _binary_output(doc: dict, outputs: Sequence[TensorSpec]) -> bool:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise WireError("'parameters' must be an object")
    binary = params.get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise WireError("parameters.binary_data_output must be true or false")
    requested = doc.get("outputs")
    if requested is None:
        return binary
    known = {o.name for o in outputs}
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise WireError("'outputs' must be a list of objects")
    for o in requested:
        if o.get("name") not in known:
            raise WireError(
                f"unknown output {o.get('name')!r}; this model gives {', '.join(sorted(known))}"
            )
        p = o.get("parameters") or {}
        if not isinstance(p, dict) or not isinstance(p.get("binary_data", binary), bool):
            raise WireError("outputs[].parameters.binary_data must be true or false")
        binary = p.get("binary_data", binary)
    return binary


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def encode_response(
    model: str,
    outputs: Sequence[tuple[TensorSpec, np.ndarray]],
    *,
    binary: bool,
    parameters: dict,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    doc: dict = {"model_name": model, "model_version": "1"}
    if request_id is not None:
        doc["id"] = request_id
    doc["parameters"] = parameters
    doc["outputs"], raws = _tensors_json(outputs, binary)
    return _encode(doc, raws)


def decode_response(body: bytes, header_length: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """``(json_header, {output name: array})`` of an infer response."""
    doc, binary = _split(body, header_length)
    arrays = {}
    offset = 0
    for out in doc.get("outputs") or []:
        dtype = DATATYPES.get(out.get("datatype"))
        if dtype is None:
            raise WireError(f"output {out.get('name')!r} has an unknown datatype", 502)
        shape = tuple(out.get("shape") or ())
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arrays[out["name"]] = np.frombuffer(
                binary[offset : offset + size], dtype=dtype
            ).reshape(shape)
            offset += size
        else:
            arrays[out["name"]] = np.asarray(out.get("data"), dtype=dtype).reshape(shape)
    return doc, arrays
