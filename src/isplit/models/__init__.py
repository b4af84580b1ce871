"""Models: the zoo (demo networks, torchvision, factories), weights I/O, presets, training.

zoo.py       model names and builders (demo.py: the demo networks)
weights.py   weights files: read, write, metadata, fingerprint
digest.py    the fingerprint computed when a result needs it
presets.py   preprocessing presets and the user's overrides
heads.py     the classifier layer: find, resize, count classes
loading.py   load_model / load_recorded: the above put together
train.py     isplit train (loop.py: its epochs, augmentation, evaluation)
device.py    which torch device --device means
"""

from isplit.models.device import resolve_device
from isplit.models.digest import WeightsDigest
from isplit.models.heads import input_channels, replace_final_layer
from isplit.models.loading import LoadedModel, load_model, load_recorded, loaded_info
from isplit.models.weights import (
    apply_state_dict,
    load_state_dict_file,
    read_metadata,
    save_weights,
    weights_fingerprint,
)
from isplit.models.zoo import list_model_names

__all__ = [
    "LoadedModel",
    "WeightsDigest",
    "apply_state_dict",
    "input_channels",
    "list_model_names",
    "load_model",
    "load_recorded",
    "load_state_dict_file",
    "loaded_info",
    "read_metadata",
    "replace_final_layer",
    "resolve_device",
    "save_weights",
    "weights_fingerprint",
]
