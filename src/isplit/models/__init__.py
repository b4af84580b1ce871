"""Models: the zoo (demo networks, torchvision, factories), weights I/O, presets, training."""

from isplit.models.loading import (
    WEIGHTS_SUFFIXES,
    LoadedModel,
    apply_state_dict,
    atomic_torch_save,
    input_channels,
    list_model_names,
    load_model,
    load_recorded,
    load_state_dict_file,
    loaded_info,
    read_metadata,
    replace_final_layer,
    resolve_device,
    save_weights,
    weights_fingerprint,
)

__all__ = [
    "WEIGHTS_SUFFIXES",
    "LoadedModel",
    "apply_state_dict",
    "atomic_torch_save",
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
