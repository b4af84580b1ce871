"""Weights files: reading (``.safetensors``, or ``.pth``/``.pt`` with ``weights_only=True``),
writing with metadata, fitting a state dict to a model, and the weights fingerprint.

Pickled files are read with ``torch.load(weights_only=True)``: a file holding anything but
tensors and plain containers is refused, never executed. The files ``isplit train`` writes carry
metadata in the safetensors header (model, classes, preprocessing, ...), each value JSON-encoded
(:func:`save_weights`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isplit.data import Preprocess
from isplit.errors import IsplitError
from isplit.io import atomic_write_bytes

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")


def weights_fingerprint(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the state dict: every entry's name, dtype, shape and bytes, in key order.

    Two networks with the same fingerprint compute the same function (same architecture
    assumed); a different random initialisation or another weights file changes it.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


def is_weights_path(weights: str) -> bool:
    """Whether a ``--weights`` value names a file (rather than ``none`` or a weights name)."""
    return (
        weights.lower().endswith(WEIGHTS_SUFFIXES)
        or os.sep in weights
        or "/" in weights
        or Path(weights).is_file()
    )


def _check_suffix(path: str | os.PathLike, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise IsplitError(
            f"{what} {os.fspath(path)!r} has an unknown extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(WEIGHTS_SUFFIXES)}"
        )
    return suffix


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str, metadata: dict) -> None:
    """Write the state dict of ``model`` to ``path`` atomically.

    ``.safetensors`` files carry ``metadata`` in their header, each value JSON-encoded (the
    header holds strings only; :func:`read_metadata` decodes). ``.pth``/``.pt`` files are a plain
    ``torch.save`` of the state dict, loadable by any PyTorch code, and carry no metadata.
    """
    suffix = _check_suffix(path, "weights file")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # Own contiguous CPU copies: safetensors refuses tensors sharing memory.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save

        header = {str(k): json.dumps(v) for k, v in metadata.items()}
        atomic_write_bytes(Path(path), save(tensors, metadata=header))
    else:
        atomic_torch_save(path, tensors)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getbuffer())


def read_metadata(path: str) -> dict:
    """The metadata in a ``.safetensors`` header, values JSON-decoded (``{}`` for ``.pth``)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    _check_exists(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # SafetensorError: not a safetensors file, truncated, ...
        raise IsplitError(f"cannot read weights file {path}: {e}; replace the file") from e
    out: dict[str, Any] = {}
    for key, value in header.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:  # written by another tool: a plain string
            out[key] = value
    return out


def metadata_fields(md: dict, path: str) -> tuple[Preprocess | None, list[str] | None, int | None]:
    """The preprocessing, class names and class count a weights file's metadata records."""
    try:
        pp = Preprocess.from_json(md["preprocess"]) if "preprocess" in md else None
        classes = [str(c) for c in md["classes"]] if md.get("classes") is not None else None
        n = int(md["num_classes"]) if md.get("num_classes") is not None else None
    except (KeyError, TypeError, ValueError) as e:
        raise IsplitError(f"weights file {path} has unreadable metadata ({e}); replace it") from e
    if classes is not None and n is None:
        n = len(classes)
    return pp, classes, n


def _check_exists(path: str) -> None:
    if not Path(path).is_file():
        raise IsplitError(f"weights file {path} not found; check the path")


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a weights file into a state dict, refusing anything that is not tensors."""
    suffix = _check_suffix(path, "weights file")
    _check_exists(path)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # SafetensorError
            raise IsplitError(f"cannot read weights file {path}: {e}; replace the file") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise IsplitError(
            f"refusing to load {path}: it holds Python objects other than tensors, and loading "
            "it could run code. Save a state dict instead (torch.save(model.state_dict(), ...)) "
            "or a .safetensors file"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise IsplitError(f"cannot read weights file {path}: {e}; replace the file") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise IsplitError(
            f"{path} is not a state dict (a mapping of names to tensors, or a checkpoint with "
            "'state_dict' or 'model'); save one with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _examples(keys: Sequence[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def apply_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: str, model_name: str
) -> None:
    """Load ``state`` into ``model`` or say precisely why it does not fit (an IsplitError)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"{len(missing)} missing keys"]
        parts[0] += f" (e.g. {_examples(missing)})" if missing else ""
        parts.append(f"{len(unexpected)} unexpected" + (
            f" (e.g. {_examples(unexpected)})" if unexpected else ""))  # fmt: skip
        parts.append(f"{len(mismatched)} shape mismatches" + (
            f" (e.g. {_examples(mismatched)}; file vs model)" if mismatched else ""))  # fmt: skip
        raise IsplitError(
            f"weights file {path} does not fit model {model_name}: {', '.join(parts)}; pass the "
            "--model the file was saved from"
        )
    model.load_state_dict(state, strict=True)
