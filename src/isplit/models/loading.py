"""Load a model to analyse: a demo network, a torchvision classifier, or ``package.module:factory``.

Every model comes back as a :class:`LoadedModel`: the network in eval mode on the CPU with frozen
parameters, plus what isplit needs to feed it (its :class:`~isplit.data.Preprocess`) and to name
its outputs (class names, when the weights say).

Weights files are ``.safetensors`` or ``.pth``/``.pt`` state dicts. Pickled files are read with
``torch.load(weights_only=True)``: a file holding anything but tensors and plain containers is
refused, never executed. The files ``isplit train`` writes carry metadata in the safetensors
header (model, classes, preprocessing, ...), each value JSON-encoded (:func:`save_weights`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import io
import json
import logging
import os
import pickle
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from isplit.data import Preprocess
from isplit.errors import IsplitError
from isplit.io import atomic_write_bytes
from isplit.models.demo import DEMO_MODELS, DEMO_PREPROCESS, packaged_weights_path

log = logging.getLogger("isplit")

DEFAULT_MODEL = "demo-vgg16"
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Preprocessing of a model without any better information: torchvision's ImageNet preset.
IMAGENET_PREPROCESS = Preprocess(
    size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256
)


@dataclass
class LoadedModel:
    """A model ready for analysis, and what isplit knows about its inputs and outputs."""

    model: nn.Module  # eval mode, on CPU, parameters requires_grad=False
    name: str  # as asked: "demo-vgg16", "resnet50", "pkg.mod:factory"
    weights: str  # "IMAGENET1K_V1", a path, "packaged", or "none" (random init, seeded)
    preprocess: Preprocess  # default input preprocessing for this model
    classes: list[str] | None  # class names when the weights say so, else None
    num_classes: int
    source: str = "factory"  # "demo", "torchvision" or "factory": how the model was built
    seed: int = 0  # seed of the random initialisation (the whole model with weights "none")

    @property
    def random(self) -> bool:
        """True when the weights are a (seeded) random initialisation."""
        return self.weights == "none"

    def fingerprint(self) -> str:
        """sha256 of the model's weights (:func:`weights_fingerprint`)."""
        return weights_fingerprint(self.model)

    def record(self) -> dict:
        """What rebuilds exactly this network: see :func:`load_recorded`."""
        return {
            "model": self.name,
            "weights": self.weights,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "weights_sha256": self.fingerprint(),
            "preprocess": self.preprocess.to_json(),
        }

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights": self.weights,
            "seed": self.seed,
            "source": self.source,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "preprocess": self.preprocess.to_json(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


#: The models :func:`load_model` built, so that ``analyze(loaded.model, ...)`` knows their name.
_LOADED: weakref.WeakKeyDictionary[nn.Module, LoadedModel] = weakref.WeakKeyDictionary()


def loaded_info(model: nn.Module) -> LoadedModel | None:
    """The :class:`LoadedModel` that ``model`` came from, when :func:`load_model` built it."""
    try:
        return _LOADED.get(model)
    except TypeError:  # an unhashable module
        return None


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


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def torchvision_model_names() -> list[str]:
    """The torchvision classification models (not detection, segmentation, video, ...)."""
    return torchvision.models.list_models(module=torchvision.models)


def list_model_names() -> list[str]:
    """Every model name :func:`load_model` accepts besides ``package.module:factory``."""
    return list(DEMO_MODELS) + torchvision_model_names()


def _unknown_model(name: str) -> IsplitError:
    close = difflib.get_close_matches(name.lower(), list_model_names(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return IsplitError(
        f"unknown model {name!r}; {hint}`isplit models` lists the names, or pass "
        "package.module:factory for your own model"
    )


# --------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------


def _is_weights_path(weights: str) -> bool:
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


# --------------------------------------------------------------------------------------------
# Model structure helpers
# --------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: cuda when available, else cpu; ``cuda`` (``cuda:N``) only when there is one."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise IsplitError("--device cuda asked, but PyTorch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise IsplitError(f"unknown device {name!r}; use cpu, cuda or auto") from None


def input_channels(model: nn.Module) -> int:
    """``in_channels`` of the first Conv2d in module order (3 when there is none)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def final_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier layer: the last ``nn.Linear`` in module order.

    Models without one (SqueezeNet) end in a 1x1 ``nn.Conv2d``: then the last Conv2d.
    """
    found = None
    for cls in (nn.Linear, nn.Conv2d):
        for name, m in model.named_modules():
            if isinstance(m, cls):
                found = (name, m)
        if found is not None:
            return found
    return None


def _out_size(layer: nn.Module) -> int:
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)


def replace_final_layer(model: nn.Module, num_classes: int) -> str:
    """Swap the classifier layer (:func:`final_layer`) for a new one with ``num_classes`` outputs.

    Returns the layer's name. The new layer is freshly initialised, on the old one's device.
    """
    found = final_layer(model)
    if found is None:
        raise IsplitError("the model has no Linear or Conv2d layer to resize to the data set")
    name, old = found
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(
            old.in_channels,
            num_classes,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=old.bias is not None,
        )
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return name


def count_classes(model: nn.Module, preprocess: Preprocess) -> int:
    """Number of outputs: from the classifier layer, or by running one input through."""
    found = final_layer(model)
    if found is not None:
        return _out_size(found[1])
    x = torch.zeros(1, preprocess.channels, preprocess.size, preprocess.size)
    with torch.no_grad():
        return int(model(x).shape[-1])


def _file_num_classes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count the file's classifier has, when it differs from ``model``'s."""
    found = final_layer(model)
    if found is None:
        return None
    key = f"{found[0]}.weight" if found[0] else "weight"
    if key in state and state[key].ndim >= 2 and state[key].shape[0] != _out_size(found[1]):
        return int(state[key].shape[0])
    return None


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def _preset_preprocess(weights: torchvision.models.WeightsEnum) -> Preprocess:
    """The preprocessing of a torchvision weights enum, from its ``transforms()`` preset."""
    t = weights.transforms()
    size = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    return Preprocess(
        size=size,
        channels=3,
        mean=tuple(t.mean),
        std=tuple(t.std),
        resize=resize if resize >= size else None,
    )


def _for_channels(pp: Preprocess, channels: int) -> Preprocess:
    """``pp`` for a model taking ``channels`` input channels (grey: the mean of the RGB stats)."""
    if pp.channels == channels:
        return pp
    if channels not in (1, 3):
        raise IsplitError(
            f"the model takes {channels} input channels; isplit feeds images with 1 or 3"
        )

    def fit(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) == 1:
            return values
        return (sum(values) / len(values),) if channels == 1 else values

    return dataclasses.replace(pp, channels=channels, mean=fit(pp.mean), std=fit(pp.std))


def _override(
    pp: Preprocess,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    preset: bool = False,
) -> Preprocess:
    """Apply ``--image-size``, ``--mean``, ``--std``.

    With ``preset`` (the preprocessing is the weights' own, e.g. torchvision's resize 256 ->
    crop 224) a resize step keeps its ratio to the size; otherwise images are resized straight
    to the requested size, with no crop."""
    changes: dict[str, Any] = {}
    if image_size is not None:
        if image_size < 1:
            raise IsplitError(f"--image-size must be at least 1, not {image_size}")
        changes["size"] = int(image_size)
        if pp.resize is not None and preset:
            changes["resize"] = max(int(image_size), round(pp.resize * image_size / pp.size))
        elif pp.resize is not None:
            changes["resize"] = None
    if mean is not None:
        changes["mean"] = tuple(float(m) for m in mean)
    if std is not None:
        changes["std"] = tuple(float(s) for s in std)
    return dataclasses.replace(pp, **changes) if changes else pp


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(name)
    key = weights.split(".")[-1].upper()  # "ResNet50_Weights.IMAGENET1K_V1" works too
    valid = [w.name for w in enum]
    if key == "DEFAULT":
        return enum.DEFAULT
    if key not in valid:
        raise IsplitError(
            f"{name} has no weights {weights!r}; use one of: {', '.join(valid + ['DEFAULT'])}, "
            "'none' (random init), or a .safetensors/.pth file"
        )
    return enum[key]


def _checkpoint_path(weights: torchvision.models.WeightsEnum) -> Path:
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _pretrained_torchvision(name: str, weights: torchvision.models.WeightsEnum) -> nn.Module:
    """``get_model`` with pretrained weights, turning a failed download into an IsplitError."""
    target = _checkpoint_path(weights)
    cached = target.is_file()
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # URLError is an OSError; a bad download hash or a truncated cache file a RuntimeError.
        if cached:
            raise IsplitError(
                f"cannot read the cached {weights} weights of {name} at {target} ({e}); delete "
                "the file to download it again, or pass a local weights file with --weights PATH"
            ) from e
        if isinstance(e, RuntimeError) and "hash" not in str(e):
            raise
        raise IsplitError(
            f"cannot get the {weights} weights of {name} ({e}); download {weights.url} and put "
            f"it at {target}, or pass a local weights file with --weights PATH"
        ) from e


def _build_torchvision(name: str, num_classes: int | None) -> nn.Module:
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's warning about the default
    return torchvision.models.get_model(name, weights=None, **kwargs)


def _build_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise IsplitError(f"model {spec!r}: write package.module:factory")
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` would: the
        sys.path.insert(0, os.getcwd())  # console script does not look in the current folder
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise IsplitError(
            f"model {spec!r}: cannot import {module_name} ({e}); install it or run from the "
            "folder that holds it"
        ) from e
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise IsplitError(f"model {spec!r}: {module_name} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise IsplitError(f"model {spec!r}: {attr} is neither callable nor an nn.Module")
    model = factory()
    if not isinstance(model, nn.Module):
        raise IsplitError(
            f"model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _from_metadata(md: dict, path: str) -> tuple[Preprocess | None, list[str] | None, int | None]:
    try:
        pp = Preprocess.from_json(md["preprocess"]) if "preprocess" in md else None
        classes = [str(c) for c in md["classes"]] if md.get("classes") is not None else None
        n = int(md["num_classes"]) if md.get("num_classes") is not None else None
    except (KeyError, TypeError, ValueError) as e:
        raise IsplitError(f"weights file {path} has unreadable metadata ({e}); replace it") from e
    if classes is not None and n is None:
        n = len(classes)
    return pp, classes, n


def load_model(
    name: str | None,
    weights: str | None = None,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Build and load a model by name.

    ``name``: a demo network (``demo-vgg16``, the default, ``demo-resnet50``), a torchvision
    classification model (``resnet50``), or ``package.module:factory`` (a callable returning an
    ``nn.Module``, or the module object itself).

    ``weights``: ``None`` means the packaged weights for demo networks and random init for the
    others; ``"none"`` random init; a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``);
    or a ``.safetensors``/``.pth``/``.pt`` file. A file written by ``isplit train`` also supplies
    the preprocessing, class names and class count; when ``name`` is None it supplies the model.

    ``num_classes`` sizes the classifier of a model built from scratch (torchvision, demo);
    ``image_size``, ``mean``, ``std`` override the preprocessing. ``seed`` seeds the random
    initialisation (the global random state is left as it was), so that ``weights="none"``
    always gives the same network, and layers a weights file does not cover are reproducible.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loaded = _load_model(name, weights, num_classes, image_size, mean, std)
    loaded.seed = int(seed)
    _LOADED[loaded.model] = loaded
    return loaded


def load_recorded(record: Mapping[str, Any], *, check: bool = True) -> LoadedModel:
    """Rebuild the network a run recorded (:meth:`LoadedModel.record`): same name, weights,
    seed, class count and preprocessing. With ``check``, a network whose weights fingerprint
    differs from the recorded one (a weights file changed since) is an error."""
    name = record.get("model")
    if not name:
        raise IsplitError("the run does not record its model; rerun `isplit analyze`")
    pp = record.get("preprocess")
    kwargs: dict[str, Any] = {}
    if pp:
        saved = Preprocess.from_json(pp)
        kwargs = {"image_size": saved.size, "mean": saved.mean, "std": saved.std}
    weights = record.get("weights")
    n = record.get("num_classes")
    loaded = load_model(
        str(name),
        "none" if weights is None else str(weights),
        num_classes=int(n) if n is not None and weights in (None, "none") else None,
        seed=int(record.get("seed", 0)),
        **kwargs,
    )
    if pp:
        loaded.preprocess = Preprocess.from_json(pp)
    want = record.get("weights_sha256")
    if check and want and loaded.fingerprint() != want:
        raise IsplitError(
            f"the weights of {name} ({weights}) are not the ones the run used (their sha256 "
            "differs: the file changed since?); rerun `isplit analyze` with the current weights"
        )
    return loaded


def _load_model(
    name: str | None,
    weights: str | None,
    num_classes: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> LoadedModel:
    weights = None if weights is None else str(weights)
    if weights is not None and weights.lower() == "none":
        weights = "none"
    path = weights if weights not in (None, "none") and _is_weights_path(weights) else None
    md = read_metadata(path) if path is not None else {}
    if name is None:
        name = str(md["model"]) if isinstance(md.get("model"), str) else DEFAULT_MODEL
    md_pp, classes, md_classes = _from_metadata(md, path) if md else (None, None, None)
    if num_classes is not None and num_classes < 1:
        raise IsplitError(f"num_classes must be at least 1, not {num_classes}")
    n_build = num_classes if num_classes is not None else md_classes

    key = name.lower()
    if key not in DEMO_MODELS and ":" not in name and key not in torchvision_model_names():
        raise _unknown_model(name)
    state: dict[str, torch.Tensor] | None = None
    if path is not None:
        state = load_state_dict_file(path)

    if key in DEMO_MODELS:
        source, name = "demo", key
        if weights is None or weights == "packaged":
            packaged = packaged_weights_path(key)
            if not packaged.is_file():
                raise IsplitError(
                    f"the packaged weights of {key} ({packaged}) are missing; create them with "
                    "`make demo-weights`, or pass --weights none (random init) or a weights file"
                )
            path, weights = str(packaged), "packaged"
            md = read_metadata(path)
            md_pp, classes, md_classes = _from_metadata(md, path)
            n_build = num_classes if num_classes is not None else md_classes
            state = load_state_dict_file(path)
        elif weights != "none" and state is None:
            raise IsplitError(
                f"{key} takes --weights none, a .safetensors/.pth file, or nothing for the "
                f"packaged weights, not {weights!r}"
            )
        cls = DEMO_MODELS[key]
        model = cls(num_classes=n_build or 10)
        if state is not None and (n := _file_num_classes(model, state)) and num_classes is None:
            model = cls(num_classes=n)
        preprocess = DEMO_PREPROCESS
    elif key in torchvision_model_names():
        source, name = "torchvision", key
        preprocess = IMAGENET_PREPROCESS
        if weights is None or weights == "none" or state is not None:
            model = _build_torchvision(key, n_build)
            if state is not None and (n := _file_num_classes(model, state)) and num_classes is None:
                model = _build_torchvision(key, n)
        else:
            enum = _torchvision_weights(key, weights)
            categories = list(enum.meta.get("categories") or [])
            if num_classes is not None and categories and num_classes != len(categories):
                raise IsplitError(
                    f"{key} {enum.name} has {len(categories)} classes, not {num_classes}; leave "
                    "the class count out, or fine-tune with `isplit train`"
                )
            model = _pretrained_torchvision(key, enum)
            weights = enum.name
            classes = categories or None
            preprocess = _preset_preprocess(enum)
    else:
        source = "factory"
        model = _build_factory(name)
        preprocess = IMAGENET_PREPROCESS
        if weights not in (None, "none", "default") and state is None:
            raise IsplitError(
                f"{name} takes a .safetensors/.pth weights file or 'none', not {weights!r}"
            )
        if weights is None:  # whatever the factory builds (seeded): it may load its own weights
            weights = "default"

    if state is not None:
        hint = (
            f" (the file says it is for {md['model']})"
            if md.get("model") not in (None, name)
            else ""
        )
        try:
            apply_state_dict(model, state, str(path), name)
        except IsplitError as e:
            raise IsplitError(f"{e}{hint}") from None
    if weights is None:  # no weights asked and none packaged: random initialisation
        weights = "none"
        log.warning(
            "%s: no --weights given: the weights are random (seeded); pass --weights DEFAULT "
            "(torchvision) or a weights file for a trained network, or --weights none to "
            "silence this",
            name,
        )

    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    preset = md_pp is not None or source == "demo" or preprocess is not IMAGENET_PREPROCESS
    preprocess = md_pp or preprocess
    preprocess = _for_channels(preprocess, input_channels(model))
    preprocess = _override(preprocess, image_size, mean, std, preset=preset)
    n_out = count_classes(model, preprocess)
    if classes is not None and len(classes) != n_out:
        log.warning(
            "%s: the weights name %d classes but the model has %d outputs; ignoring the names",
            name,
            len(classes),
            n_out,
        )
        classes = None
    return LoadedModel(
        model=model,
        name=name,
        weights=weights,
        preprocess=preprocess,
        classes=classes,
        num_classes=n_out,
        source=source,
    )
