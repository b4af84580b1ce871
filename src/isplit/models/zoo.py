"""The model zoo: the names :func:`~isplit.models.load_model` accepts and how each kind of model
is built: the demo networks (:mod:`isplit.models.demo`), torchvision classifiers (random or
pretrained weights), timm models (:mod:`isplit.models.timm_zoo`) and ``package.module:factory``.

To add a zoo: a name test and a builder here, and a branch in :mod:`isplit.models.loading`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from isplit.errors import IsplitError, did_you_mean
from isplit.models.demo import DEMO_MODELS
from isplit.models.heads import file_num_classes

DEFAULT_MODEL = "demo-vgg16"


def torchvision_model_names() -> list[str]:
    """The torchvision classification models (not detection, segmentation, video, ...)."""
    return torchvision.models.list_models(module=torchvision.models)


def list_model_names() -> list[str]:
    """Every model name :func:`~isplit.models.load_model` accepts besides
    ``package.module:factory``."""
    return list(DEMO_MODELS) + torchvision_model_names()


def unknown_model(name: str) -> IsplitError:
    """The error for a model name that is in no zoo, with the closest names (``timm:NAME``
    when timm knows the name)."""
    hint = did_you_mean(name.lower(), list_model_names())
    if importlib.util.find_spec("timm") is not None:
        import timm

        if timm.is_model(name.lower()):
            hint = f" (did you mean timm:{name.lower()}?)"
    return IsplitError(
        f"unknown model {name!r}{hint}; `isplit models` lists the names; pass timm:NAME for a "
        "timm model, or package.module:factory for your own model"
    )


def sized(
    build: Callable[[int | None], nn.Module],
    n: int | None,
    state: Mapping[str, torch.Tensor] | None,
    num_classes: int | None,
) -> nn.Module:
    """``build(n)``, built again with the class count of the weights ``state`` when that
    differs and the caller asked for no count of its own (``num_classes`` None)."""
    model = build(n)
    if state is not None and (k := file_num_classes(model, state)) and num_classes is None:
        model = build(k)
    return model


# --- torchvision ----------------------------------------------------------------------------


def torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    """The weights enum of torchvision model ``name`` that ``weights`` names."""
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


def pretrained_torchvision(name: str, weights: torchvision.models.WeightsEnum) -> nn.Module:
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


def build_torchvision(name: str, num_classes: int | None) -> nn.Module:
    """torchvision model ``name``, randomly initialised, with ``num_classes`` outputs."""
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's warning about the default
    return torchvision.models.get_model(name, weights=None, **kwargs)


# --- package.module:factory -----------------------------------------------------------------


def build_factory(spec: str) -> nn.Module:
    """The model ``package.module:factory`` returns (or the module object it names)."""
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
    except Exception as e:  # the module's own code failed: say so, in one line
        raise IsplitError(
            f"model {spec!r}: importing {module_name} raised {type(e).__name__}: {e}; fix the "
            "module"
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
    model = _call_factory(spec, attr, factory)
    if not isinstance(model, nn.Module):
        raise IsplitError(
            f"model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _call_factory(spec: str, attr: str, factory: Callable[[], Any]) -> Any:
    """``factory()``: a factory that needs arguments, or one that raises, is an IsplitError
    naming it and the exception (isplit calls factories with no arguments)."""
    try:
        inspect.signature(factory).bind()
    except TypeError as e:  # required parameters
        raise IsplitError(
            f"model {spec!r}: {attr} needs arguments ({e}) but isplit calls it with none; write "
            "a function without parameters that returns the model, and pass module:function"
            + (", or use --model timm:NAME for a timm model" if spec.startswith("timm") else "")
        ) from e
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    try:
        return factory()
    except IsplitError:
        raise
    except Exception as e:  # the user's code failed: one line, not a traceback
        raise IsplitError(
            f"model {spec!r}: {attr}() raised {type(e).__name__}: {e}; fix the factory"
        ) from e
