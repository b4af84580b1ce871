"""The traced and instrumented model of an analysis, kept per model between ``analyze`` calls.

Tracing a model, recording its shapes and FLOPs and instrumenting its points take a fixed
0.1-0.3 s on a CPU for a ResNet-50: on a 128-image run, 5-10 % of the whole call. A process that
analyses the same model again (per class subset, with other settings, in a notebook) reuses them:
the last trace of each model is kept while the model lives, and used again when the input shape,
the tracing options and the key of everything the trace was made from (:func:`trace_key`, taken
just after the trace) are the same. The key holds:

- every submodule, by name, identity and class, and all its instance attributes: its parameters
  and buffers (by identity, dtype, device and shape), its children (by identity), its hooks of
  every kind (the hook functions, in order), its ``training`` flag, a ``forward`` set on the
  instance, and every plain attribute that a forward may read (``global_pool = "avg"``);
- every class of those submodules and its bases: their methods (a ``forward`` replaced on the
  class) and class attributes;
- torch's global module hooks (``register_module_forward_hook`` and the others).

Values of simple types (None, bool, int, float, str, enums, dtypes, devices) count by value and
type; tuples, lists, sets and dicts by their contents, and other objects by their attributes (a
config object or a list changed in place counts), :data:`DEPTH` levels deep; tensors by identity,
dtype, device and shape; modules, classes, functions and the rest by identity, each held weakly
where Python allows (the key neither keeps the model alive nor mistakes a new object for a freed
one that had its ``id``). Weights changed in place need no new trace: the traced graph holds the
model's own parameters.

Not in the key: module-level globals that a forward reads (a library's function replaced, a
library's global flag), values nested deeper than :data:`DEPTH`, the contents of tensors; after
changing those, call :func:`forget` or analyse a ``copy.deepcopy`` of the model. Retracing with
torch.fx and comparing the code would see the first, but costs 35 ms on a ResNet-50 and 180 ms
on a ViT-Tiny, a tenth to a half of a whole trace (0.4 s each, one CPU core), where the key
costs 4-10 ms (1-2 %).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import types
import weakref
from collections.abc import Sequence

import torch
import torch.nn.modules.module as module_hooks
from torch import nn

from isplit.analysis.settings import AnalysisSettings
from isplit.errors import IsplitError
from isplit.graph import ModelGraph, SplitPoint
from isplit.graph.points import no_admissible_message, restrict, select_points
from isplit.importance import GradCAM

#: How many containers or objects deep an attribute's values count by value; deeper, by identity.
DEPTH = 4

# values that count by value: exact types first (the common case), then subclasses (enums)
_ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, enum.Enum)
_ATOM_TYPES = frozenset(_ATOMS[:-1])
_SEQUENCES = (tuple, list, set, frozenset)
_MAPPINGS = (dict, types.MappingProxyType)
# most of a module's attributes are its hook dicts, most of them empty
_CONTAINER_TYPES = frozenset((*_SEQUENCES, *_MAPPINGS, collections.OrderedDict))
# torch's hooks on every module's call: their dicts and flags in torch.nn.modules.module
_GLOBAL_HOOKS = tuple(name for name in vars(module_hooks) if name.startswith("_global_"))

# model -> (trace key, graph, GradCAM key (its class first), GradCAM): the last of each model
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Same:
    """An object in a key, equal only to the same object, held weakly where it can be (the
    cache's key must not keep the model alive; tuples, builtins and the like are held): a new
    object cannot pass for a freed one that had the same ``id``, and once the object is gone,
    nothing equals it."""

    __slots__ = ("_hash", "_obj", "_ref")

    def __init__(self, obj: object) -> None:
        try:
            self._ref, self._obj = weakref.ref(obj), None
        except TypeError:
            self._ref, self._obj = None, obj
        self._hash = id(obj)

    def get(self) -> object:
        return self._obj if self._ref is None else self._ref()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Same):
            return NotImplemented
        obj = self.get()
        return obj is not None and obj is other.get()

    def __hash__(self) -> int:
        return self._hash


def _frozen(value: object, depth: int = 0) -> object:
    """``value`` as a snapshot that compares equal as long as ``value`` is unchanged, as the
    module docstring says: simple values by value, containers and objects by their contents
    (:data:`DEPTH` deep), tensors by identity and shape, anything else by identity."""
    kind = type(value)
    if kind in _ATOM_TYPES or isinstance(value, _ATOMS):
        return kind, value  # the type too: True, 1 and 1.0 are equal but may not act the same
    if kind in _CONTAINER_TYPES and not value:
        return kind, ()
    if isinstance(value, torch.Tensor):
        return _Same(value), value.dtype, value.device, tuple(value.shape)
    if depth >= DEPTH or isinstance(value, (nn.Module, type)):
        return _Same(value)  # a submodule's attributes are in its own entry of the key
    if isinstance(value, _SEQUENCES):
        return kind, tuple([_frozen(v, depth + 1) for v in value])
    if isinstance(value, _MAPPINGS):
        return kind, tuple([(_key(k), _frozen(v, depth + 1)) for k, v in value.items()])
    if isinstance(value, types.FunctionType):
        return _Same(value), _Same(value.__code__)
    if isinstance(value, types.MethodType):
        return _Same(value), _frozen(value.__func__, depth + 1)
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):  # an object of attributes (a config, a partial): them too
        return _Same(value), _frozen(state, depth + 1)
    return _Same(value)


def _key(key: object) -> object:
    """A dict's key as a snapshot: names and numbers as they are (most keys), others frozen."""
    return key if type(key) in _ATOM_TYPES else _frozen(key, DEPTH)


def trace_key(model: nn.Module) -> tuple:
    """What a trace of ``model`` is made from besides the input shape and the tracing options:
    every submodule (its class and instance attributes), every class of them and its bases,
    and torch's global module hooks."""
    modules = tuple(
        (name, _Same(m), type(m), _frozen(vars(m))) for name, m in model.named_modules()
    )
    bases = dict.fromkeys(c for _, _, t, _ in modules for c in t.__mro__[:-1])  # all but object
    classes = tuple((c, _frozen(vars(c))) for c in bases)
    hooks = tuple(_frozen(getattr(module_hooks, name)) for name in _GLOBAL_HOOKS)
    return modules, classes, hooks


def forget(model: nn.Module) -> None:
    """Drop ``model``'s kept trace, so that its next analysis traces it anew: after a change
    that the key does not see (the module docstring says which)."""
    with contextlib.suppress(TypeError):
        _CACHE.pop(model, None)


def instrument(
    model: nn.Module, input_shape: Sequence[int], settings: AnalysisSettings, model_name: str
) -> tuple[ModelGraph, list[SplitPoint], GradCAM]:
    """Trace ``model`` for this input shape (or reuse its last trace), choose and restrict the
    points, instrument them with the settings' CAM class (``settings.cam``)."""
    s = settings
    options = (tuple(input_shape), s.granularity, s.leaf_modules)
    try:
        cached = _CACHE.get(model)
    except TypeError:
        cached = None
    if cached is None or cached[0] != (*options, trace_key(model)):
        graph = ModelGraph(model, tuple(input_shape), s.granularity, s.leaf_modules)
        # taken after the trace, which may add to the model: torch.fx keeps a tensor made while
        # tracing as an attribute of the model (``_tensor_constant0``)
        cached = ((*options, trace_key(model)), graph, None, None)
    graph = cached[1]
    # copies: restrict() marks the admissible points in place, the cached graph's stay as traced
    points = select_points(graph, s.points, s.protocol, model_name)
    chosen = [dataclasses.replace(p) for p in points]
    restrict(chosen, **s.budget)
    if not any(p.admissible for p in chosen):
        raise IsplitError(no_admissible_message(chosen, s.budget))
    # the class too: a GradCAM of another class (Grad-CAM++, a user's subclass) is not reused
    cam_key = (s.cam_class, tuple(p.name for p in chosen), s.reduction, s.precision)
    if cached[2] == cam_key:
        cam = cached[3]
    else:
        cam = s.cam_class(graph, [p.name for p in chosen], s.reduction, s.precision)
    with contextlib.suppress(TypeError):  # a model that cannot be weakly referenced: no cache
        _CACHE[model] = (cached[0], graph, cam_key, cam)
    return graph, chosen, cam
