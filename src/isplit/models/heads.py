"""A classifier's ends: its input channels, its final (classifier) layer, resizing that layer to
another class count, and counting its outputs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from isplit.data import Preprocess
from isplit.errors import IsplitError
from isplit.models.timm_zoo import timm_classifier


def input_channels(model: nn.Module) -> int:
    """``in_channels`` of the first Conv2d in module order (3 when there is none)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def final_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier layer: timm's ``get_classifier()`` for a timm model, else the last
    ``nn.Linear`` in module order.

    Models without one (SqueezeNet) end in a 1x1 ``nn.Conv2d``: then the last Conv2d.
    """
    found = timm_classifier(model)
    if found is not None:
        return found
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
    A timm model gets its own ``reset_classifier(num_classes)``.
    """
    found = final_layer(model)
    if found is None:
        raise IsplitError("the model has no Linear or Conv2d layer to resize to the data set")
    name, old = found
    if timm_classifier(model) is not None:
        model.reset_classifier(num_classes)
        model.get_classifier().to(device=old.weight.device, dtype=old.weight.dtype)
        return name
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


def file_num_classes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of the classifier in ``state``, when it differs from ``model``'s."""
    found = final_layer(model)
    if found is None:
        return None
    key = f"{found[0]}.weight" if found[0] else "weight"
    if key in state and state[key].ndim >= 2 and state[key].shape[0] != _out_size(found[1]):
        return int(state[key].shape[0])
    return None
