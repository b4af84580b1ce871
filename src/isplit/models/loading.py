"""Load a model to analyse (:func:`load_model`) or rebuild the one a run recorded
(:func:`load_recorded`).

Every model comes back as a :class:`LoadedModel`: the network in eval mode on the CPU with frozen
parameters, plus what isplit needs to feed it (its :class:`~isplit.data.Preprocess`) and to name
its outputs (class names, when the weights say). The zoo (:mod:`isplit.models.zoo`) builds the
network, :mod:`isplit.models.weights` reads the weights file, :mod:`isplit.models.presets` says
how to preprocess its inputs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from isplit.data import Preprocess
from isplit.errors import IsplitError
from isplit.models import demo
from isplit.models.demo import DEMO_MODELS, DEMO_PREPROCESS
from isplit.models.heads import count_classes, input_channels
from isplit.models.presets import IMAGENET_PREPROCESS, for_channels, override, preset_preprocess
from isplit.models.timm_zoo import (
    PRETRAINED,
    build_timm,
    imagenet_classes,
    is_timm_name,
    pretrained_tag,
    resolve,
    timm_preprocess,
)
from isplit.models.weights import (
    apply_state_dict,
    is_weights_path,
    load_state_dict_file,
    metadata_fields,
    read_metadata,
    weights_fingerprint,
)
from isplit.models.zoo import (
    DEFAULT_MODEL,
    build_factory,
    build_torchvision,
    pretrained_torchvision,
    sized,
    torchvision_model_names,
    torchvision_weights,
    unknown_model,
)

log = logging.getLogger("isplit")


@dataclass
class LoadedModel:
    """A model ready for analysis, and what isplit knows about its inputs and outputs."""

    model: nn.Module  # eval mode, on CPU, parameters requires_grad=False
    name: str  # as asked: "demo-vgg16", "resnet50", "timm:vit_tiny_patch16_224", "pkg.mod:factory"
    weights: str  # "IMAGENET1K_V1", a timm tag, a path, "packaged", or "none" (random, seeded)
    preprocess: Preprocess  # default input preprocessing for this model
    classes: list[str] | None  # class names when the weights say so, else None
    num_classes: int
    source: str = "factory"  # "demo", "torchvision", "timm" or "factory": how it was built
    seed: int = 0  # seed of the random initialisation (the whole model with weights "none")
    #: what the weights file records of its training (``isplit train``): ``accuracy`` (a
    #: fraction), ``test_images``, ``dataset``, ``test_split``; None when it records none
    trained: dict | None = None

    def fingerprint(self) -> str:
        """sha256 of the model's weights (:func:`~isplit.models.weights_fingerprint`)."""
        return weights_fingerprint(self.model)

    def record(self, fingerprint: bool = True) -> dict:
        """What rebuilds exactly this network: see :func:`load_recorded` (``weights_sha256``
        only with ``fingerprint``: computing it costs a pass over the weights)."""
        return {
            "model": self.name,
            "weights": self.weights,
            "seed": self.seed,
            "num_classes": self.num_classes,
            **({"weights_sha256": self.fingerprint()} if fingerprint else {}),
            "preprocess": self.preprocess.to_json(),
        }


#: The models :func:`load_model` built, so that ``analyze(loaded.model, ...)`` knows their name.
_LOADED: weakref.WeakKeyDictionary[nn.Module, LoadedModel] = weakref.WeakKeyDictionary()


def loaded_info(model: nn.Module) -> LoadedModel | None:
    """The :class:`LoadedModel` that ``model`` came from, when :func:`load_model` built it."""
    try:
        return _LOADED.get(model)
    except TypeError:  # an unhashable module
        return None


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
    classification model (``resnet50``), a timm model (``timm:convnext_atto``; needs
    ``isplit[timm]``), or ``package.module:factory`` (a callable returning an ``nn.Module``, or
    the module object itself).

    ``weights``: ``None`` means the packaged weights for demo networks, timm's pretrained
    weights for timm models, and random init for the others; ``"none"`` random init; a
    torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``) or timm pretrained tag
    (``DEFAULT``, ``in1k``); or a ``.safetensors``/``.pth``/``.pt`` file. A file written by
    ``isplit train`` also supplies the preprocessing, class names and class count; when ``name``
    is None it supplies the model.

    ``num_classes`` sizes the classifier of a model built from scratch (torchvision, timm, demo);
    ``image_size``, ``mean``, ``std`` override the preprocessing (a timm model with a fixed
    input size, as ViT, is built for ``image_size``). ``seed`` seeds the random
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


# --------------------------------------------------------------------------------------------
# The steps of load_model
# --------------------------------------------------------------------------------------------


@dataclass
class _Weights:
    """``weights`` resolved: the value the model records, and for a weights file its path, its
    tensors and what its metadata says (preprocessing, class names, class count)."""

    value: str | None  # None (the zoo's default), "none", a weights name or a path
    path: str | None = None
    metadata: dict = field(default_factory=dict)
    preprocess: Preprocess | None = None
    classes: list[str] | None = None
    num_classes: int | None = None
    state: dict[str, torch.Tensor] | None = None

    @classmethod
    def parse(cls, weights: str | None) -> _Weights:
        value = None if weights is None else str(weights)
        if value is not None and value.lower() == "none":
            value = "none"
        out = cls(value)
        if value not in (None, "none") and is_weights_path(value):
            out.use_file(value)
        return out

    def use_file(self, path: str) -> None:
        """Take the weights from file ``path`` (its metadata now, its tensors on ``load``)."""
        self.path = path
        self.metadata = read_metadata(path)
        fields = metadata_fields(self.metadata, path) if self.metadata else (None, None, None)
        self.preprocess, self.classes, self.num_classes = fields

    def load(self) -> None:
        if self.path is not None:
            self.state = load_state_dict_file(self.path)

    def size(self, num_classes: int | None) -> int | None:
        """The class count to build with: the caller's, else the file's."""
        return num_classes if num_classes is not None else self.num_classes


def _load_model(
    name: str | None,
    weights: str | None,
    num_classes: int | None,
    image_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> LoadedModel:
    w = _Weights.parse(weights)
    if name is None:
        model_name = w.metadata.get("model")
        name = str(model_name) if isinstance(model_name, str) else DEFAULT_MODEL
    if num_classes is not None and num_classes < 1:
        raise IsplitError(f"num_classes must be at least 1, not {num_classes}")
    key = name.lower()
    if key not in DEMO_MODELS and ":" not in name and key not in torchvision_model_names():
        raise unknown_model(name)
    w.load()
    if key in DEMO_MODELS:
        source, name, model, preprocess = "demo", key, _demo(key, w, num_classes), DEMO_PREPROCESS
    elif is_timm_name(name):
        source = "timm"
        name, model, preprocess = _timm(name, w, num_classes, image_size)
    elif key in torchvision_model_names():
        source, name = "torchvision", key
        model, preprocess = _torchvision(key, w, num_classes)
    else:
        source, model, preprocess = "factory", _factory(name, w), IMAGENET_PREPROCESS
    _apply_file(model, w, name)
    if w.value is None:  # no weights asked and none packaged: random initialisation
        w.value = "none"
        log.warning(
            "%s: no --weights given: the weights are random (seeded); pass --weights DEFAULT "
            "(torchvision) or a weights file for a trained network, or --weights none to "
            "silence this",
            name,
        )
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    preset = w.preprocess is not None or source == "demo" or preprocess is not IMAGENET_PREPROCESS
    preprocess = for_channels(w.preprocess or preprocess, input_channels(model))
    preprocess = override(preprocess, image_size, mean, std, preset=preset)
    n_out = count_classes(model, preprocess)
    return LoadedModel(
        model=model,
        name=name,
        weights=w.value,
        preprocess=preprocess,
        classes=_class_names(w.classes, n_out, name),
        num_classes=n_out,
        source=source,
        trained=_trained(w.metadata),
    )


def _trained(md: dict) -> dict | None:
    """The accuracy a weights file records of its training, with what it was measured on."""
    accuracy = md.get("accuracy")
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool):
        return None
    keys = ("test_images", "dataset", "test_split", "holdout")
    return {"accuracy": float(accuracy), **{k: md.get(k) for k in keys if md.get(k) is not None}}


def _demo(key: str, w: _Weights, num_classes: int | None) -> nn.Module:
    """A demo network: the packaged weights unless other weights were asked for."""
    if w.value is None or w.value == "packaged":
        packaged = demo.packaged_weights_path(key)
        if not packaged.is_file():
            raise IsplitError(
                f"the packaged weights of {key} ({packaged}) are missing; create them with "
                "`make demo-weights`, or pass --weights none (random init) or a weights file"
            )
        w.use_file(str(packaged))
        w.value = "packaged"
        w.load()
    elif w.value != "none" and w.state is None:
        raise IsplitError(
            f"{key} takes --weights none, a .safetensors/.pth file, or nothing for the "
            f"packaged weights, not {w.value!r}"
        )
    cls = DEMO_MODELS[key]
    return sized(lambda n: cls(num_classes=n or 10), w.size(num_classes), w.state, num_classes)


def _torchvision(key: str, w: _Weights, num_classes: int | None) -> tuple[nn.Module, Preprocess]:
    """A torchvision classifier: random (then maybe a weights file) or pretrained by name."""
    if w.value in (None, "none") or w.state is not None:
        build = lambda n: build_torchvision(key, n)  # noqa: E731
        return sized(build, w.size(num_classes), w.state, num_classes), IMAGENET_PREPROCESS
    enum = torchvision_weights(key, w.value)
    categories = list(enum.meta.get("categories") or [])
    if num_classes is not None and categories and num_classes != len(categories):
        raise IsplitError(
            f"{key} {enum.name} has {len(categories)} classes, not {num_classes}; leave "
            "the class count out, or fine-tune with `isplit train`"
        )
    model = pretrained_torchvision(key, enum)
    w.value, w.classes = enum.name, categories or None
    return model, preset_preprocess(enum)


def _timm(
    name: str, w: _Weights, num_classes: int | None, image_size: int | None
) -> tuple[str, nn.Module, Preprocess]:
    """A timm model: timm's pretrained weights (the default, or a tag), or random (then maybe a
    weights file), built for the input size it will be fed."""
    pretrained = w.state is None and w.value != "none"
    tag = None if not pretrained or w.value is None or w.value.lower() in PRETRAINED else w.value
    spec = resolve(name, tag)
    preprocess = w.preprocess or timm_preprocess(spec, image_size)
    size = image_size or preprocess.size
    if not pretrained:
        build = lambda n: build_timm(spec, pretrained=False, num_classes=n, size=size)  # noqa: E731
        return spec.name, sized(build, w.size(num_classes), w.state, num_classes), preprocess
    classes = spec.cfg.get("num_classes")
    if num_classes is not None and classes and num_classes != classes:
        raise IsplitError(
            f"{spec.name}'s pretrained weights have {classes} classes, not {num_classes}; "
            "leave the class count out, or fine-tune with `isplit train`"
        )
    model = build_timm(spec, pretrained=True, num_classes=None, size=size)
    w.value = pretrained_tag(model, spec)
    w.classes = imagenet_classes(model, int(getattr(model, "num_classes", 0) or 0))
    return spec.name, model, preprocess


def _factory(name: str, w: _Weights) -> nn.Module:
    """``package.module:factory``: whatever it builds, or a weights file on top."""
    model = build_factory(name)
    if w.value not in (None, "none", "default") and w.state is None:
        raise IsplitError(
            f"{name} takes a .safetensors/.pth weights file or 'none', not {w.value!r}"
        )
    if w.value is None:  # whatever the factory builds (seeded): it may load its own weights
        w.value = "default"
    return model


def _apply_file(model: nn.Module, w: _Weights, name: str) -> None:
    if w.state is None:
        return
    said = w.metadata.get("model")
    hint = f" (the file says it is for {said})" if said not in (None, name) else ""
    try:
        apply_state_dict(model, w.state, str(w.path), name)
    except IsplitError as e:
        raise IsplitError(f"{e}{hint}") from None


def _class_names(classes: list[str] | None, n_out: int, name: str) -> list[str] | None:
    if classes is not None and len(classes) != n_out:
        log.warning(
            "%s: the weights name %d classes but the model has %d outputs; ignoring the names",
            name,
            len(classes),
            n_out,
        )
        return None
    return classes
