"""timm models by name: ``timm:NAME`` (``timm:resnet50``, ``timm:deit_tiny_patch16_224.fb_in1k``).

timm is an optional extra (``pip install 'isplit[timm]'``), imported only when a ``timm:`` name
is asked for. What comes from timm:

- the network, from ``timm.create_model``: random (seeded by the caller) or with timm's pretrained
  weights (``pretrained=True``, downloaded from the Hugging Face Hub and cached there);
- the preprocessing, from the model's ``pretrained_cfg`` (input size, mean, std, interpolation,
  crop), as :func:`timm.data.resolve_data_config` reads it;
- the class names of ImageNet-pretrained weights (:class:`timm.data.ImageNetInfo`).

Models with a fixed input size (ViT, Swin, MaxViT, ...) are built for the size that will be fed
(timm's ``img_size``), so ``--image-size`` works for them too where the architecture allows it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn

from isplit.data import Preprocess
from isplit.data.preprocess import INTERPOLATIONS
from isplit.errors import IsplitError, did_you_mean

log = logging.getLogger("isplit")

PREFIX = "timm:"
#: ``--weights`` values that mean "timm's pretrained weights, the default tag".
PRETRAINED = ("default", "pretrained")
#: timm names that are not in its registry and need the network to resolve.
_REMOTE = ("hf-hub:", "hf_hub:", "local-dir:")


def is_timm_name(name: str) -> bool:
    """Whether a model name asks for a timm model (``timm:NAME``)."""
    return name.lower().startswith(PREFIX)


def import_timm() -> ModuleType:
    """The timm package, or an IsplitError saying how to install it."""
    try:
        import timm
    except ImportError as e:
        raise IsplitError(
            f"timm models need the timm package, which is not installed ({e}); "
            "pip install 'isplit[timm]'"
        ) from e
    return timm


@dataclass
class TimmSpec:
    """A ``timm:`` name resolved: the architecture, the pretrained tag, and its config."""

    name: str  # as isplit records it: "timm:" + what follows (case kept)
    arch: str  # timm's model name without the tag ("vit_tiny_patch16_224")
    tag: str | None  # the pretrained tag ("augreg_in21k_ft_in1k"), None: timm's default
    cfg: dict  # the pretrained_cfg of arch.tag ({} when timm has none registered)

    @property
    def model_name(self) -> str:
        """The name to give ``timm.create_model``."""
        return self.arch if self.tag is None else f"{self.arch}.{self.tag}"

    @property
    def fixed_size(self) -> bool:
        return bool(self.cfg.get("fixed_input_size"))

    @property
    def default_size(self) -> int:
        return int(self.cfg.get("input_size", (3, 224, 224))[-1])


def resolve(name: str, weights_tag: str | None = None) -> TimmSpec:
    """``timm:NAME`` checked against timm's registry, with ``weights_tag`` (a ``--weights``
    value naming a pretrained tag) taking the place of the name's own tag."""
    timm = import_timm()
    full = name[len(PREFIX) :]
    if not full.startswith(_REMOTE):
        full = full.lower()  # timm's names are lower case
    if not full:
        raise IsplitError("model 'timm:': write timm:NAME; timm.list_models() lists the names")
    if full.startswith(_REMOTE):
        return TimmSpec(PREFIX + full, full, None, {})
    arch, _, tag = full.partition(".")
    if not timm.is_model(arch):
        hint = did_you_mean(arch.lower(), timm.list_models())
        raise IsplitError(
            f'unknown timm model {arch!r}{hint}; python -c "import timm; '
            "print(timm.list_models('*NAME*'))\" lists the names"
        )
    tag = (weights_tag or tag or "").lower() or None
    spec = TimmSpec(PREFIX + full, arch, tag, {})
    try:
        cfg = timm.models.get_pretrained_cfg(spec.model_name)
    except RuntimeError as e:  # an unknown tag
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise IsplitError(
            f"timm model {arch} has no pretrained weights {tag!r} ({e}); use one of: "
            f"{', '.join(tags) or '(none)'}; or --weights none for random weights"
        ) from e
    spec.cfg = cfg.to_dict() if cfg is not None else {}
    return spec


def timm_preprocess(spec: TimmSpec, size: int | None = None) -> Preprocess:
    """The preprocessing of the model's ``pretrained_cfg``: input size (``size``: another one,
    ``--image-size``), mean, std, interpolation, and the centre crop (``crop_pct``: resize to
    ``floor(size / crop_pct)``, then crop, as timm's ``create_transform`` does at any size)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config(pretrained_cfg=spec.cfg or {"input_size": (3, 224, 224)})
    channels, height, width = cfg["input_size"]
    if height != width:
        log.warning("%s: timm's input size is %dx%d; isplit feeds %d px squares", spec.name,
                    height, width, width)  # fmt: skip
    size = int(size or width)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    center = cfg.get("crop_mode", "center") == "center"  # "squash", "border": resize to size
    interpolation = cfg.get("interpolation") or "bilinear"
    return Preprocess(
        size=size,
        channels=int(channels) if int(channels) in (1, 3) else 3,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        resize=max(size, math.floor(size / crop_pct)) if center else None,
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
    )


def build_timm(
    spec: TimmSpec, *, pretrained: bool, num_classes: int | None, size: int
) -> nn.Module:
    """``timm.create_model`` for ``spec``, built for ``size`` px inputs; every failure is an
    IsplitError that names the model and what to do."""
    timm = import_timm()
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    resized = spec.fixed_size and size != spec.default_size
    if resized:
        kwargs["img_size"] = size
    try:
        model = timm.create_model(spec.model_name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        if resized and "img_size" in str(e):
            raise _fixed_size_error(spec, size, "it has no img_size option") from e
        raise _build_error(spec, e) from e
    except OSError as e:  # no network, no cached file: huggingface_hub's errors, URLError, ...
        if not pretrained:
            raise _build_error(spec, e) from e
        raise _offline_error(spec, e) from e
    except Exception as e:  # timm's own checks (sizes, configs): one clear line
        raise _build_error(spec, e) from e
    if resized:
        _check_size(model, spec, size)
    return model


def _check_size(model: nn.Module, spec: TimmSpec, size: int) -> None:
    """A forward pass at ``size``: a model built for another size fails here, not mid-analysis."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, int(spec.cfg.get("input_size", (3,))[0]), size, size)
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # any failure means: this size does not fit
        raise _fixed_size_error(spec, size, f"{type(e).__name__}: {e}") from e
    model.train(was_training)


def _fixed_size_error(spec: TimmSpec, size: int, why: str) -> IsplitError:
    return IsplitError(
        f"{spec.name} has a fixed input size ({spec.default_size} px) and cannot be built for "
        f"{size} px ({why}); leave --image-size out, or pass a size the architecture divides "
        "into its patches and windows"
    )


def _build_error(spec: TimmSpec, e: Exception) -> IsplitError:
    return IsplitError(
        f"timm could not build {spec.name} ({type(e).__name__}: {e}); check the name and "
        "--image-size, or pass --weights none"
    )


def _offline_error(spec: TimmSpec, e: Exception) -> IsplitError:
    where = spec.cfg.get("hf_hub_id") or spec.cfg.get("url") or "the Hugging Face Hub"
    return IsplitError(
        f"cannot get the pretrained weights of {spec.name} from {where} ({type(e).__name__}: "
        f"{e}); connect once to let timm cache them (Hugging Face cache, $HF_HOME), pass "
        "--weights none for random weights, or a local .safetensors/.pth file with --weights PATH"
    )


def pretrained_tag(model: nn.Module, spec: TimmSpec) -> str:
    """The tag of the pretrained weights ``model`` was built with: what a run records."""
    cfg = getattr(model, "pretrained_cfg", None) or spec.cfg
    return str(cfg.get("tag") or spec.tag or PRETRAINED[0])


def imagenet_classes(model: nn.Module, n_out: int) -> list[str] | None:
    """The class names of ImageNet-pretrained weights (the first of each synonym list), when
    timm knows the label set and it has ``n_out`` classes."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset is None:
            return None
        names = [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]
    except Exception:  # class names are a nicety; timm versions differ
        return None
    return names if len(names) == n_out else None


def timm_classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier layer of a timm model (``get_classifier()``) and its name, when it is one
    Linear or Conv2d layer."""
    get = getattr(model, "get_classifier", None)
    if not callable(get) or not callable(getattr(model, "reset_classifier", None)):
        return None
    try:
        layer = get()
    except Exception:  # a model that merely has a method of that name
        return None
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        return None
    for name, m in model.named_modules():
        if m is layer:
            return name, layer
    return None
