"""The traced and instrumented model of an analysis, kept per model between ``analyze`` calls.

Tracing a model, recording its shapes and FLOPs and instrumenting its points take a fixed
0.1-0.3 s on a CPU for a ResNet-50: on a 128-image run, 5-10 % of the whole call. A process that
analyses the same model again (per class subset, with other settings, in a notebook) reuses them:
the last trace of each model is kept while the model lives, and used again when the input shape,
the tracing options and the model's structure are the same. The structure is every submodule,
parameter and buffer, by identity, shape, type and device: replacing a layer, a parameter or a
buffer (or moving the model) traces it anew. Weights changed in place need no new trace (the
traced graph holds the model's own parameters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Sequence

from torch import nn

from isplit.analysis.settings import AnalysisSettings
from isplit.errors import IsplitError
from isplit.graph import ModelGraph, SplitPoint
from isplit.graph.points import no_admissible_message, restrict, select_points
from isplit.importance import GradCAM

# model -> (trace key, graph, GradCAM key, GradCAM): the last of each model
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def structure(model: nn.Module) -> tuple:
    """What a trace of ``model`` depends on besides the input shape and the tracing options."""
    modules = tuple((name, id(m), type(m)) for name, m in model.named_modules())
    tensors = tuple(
        (name, id(t), t.dtype, t.device, tuple(t.shape))
        for name, t in (*model.named_parameters(), *model.named_buffers())
    )
    return modules, tensors


def instrument(
    model: nn.Module, input_shape: Sequence[int], settings: AnalysisSettings, model_name: str
) -> tuple[ModelGraph, list[SplitPoint], GradCAM]:
    """Trace ``model`` for this input shape (or reuse its last trace), choose and restrict the
    points, instrument them."""
    s = settings
    key = (tuple(input_shape), s.granularity, s.leaf_modules, structure(model))
    try:
        cached = _CACHE.get(model)
    except TypeError:
        cached = None
    if cached is None or cached[0] != key:
        graph = ModelGraph(model, tuple(input_shape), s.granularity, s.leaf_modules)
        cached = (key, graph, None, None)
    graph = cached[1]
    # copies: restrict() marks the admissible points in place, the cached graph's stay as traced
    points = select_points(graph, s.points, s.protocol, model_name)
    chosen = [dataclasses.replace(p) for p in points]
    restrict(chosen, **s.budget)
    if not any(p.admissible for p in chosen):
        raise IsplitError(no_admissible_message(chosen, s.budget))
    cam_key = (tuple(p.name for p in chosen), s.reduction, s.precision)
    if cached[2] == cam_key:
        cam = cached[3]
    else:
        cam = GradCAM(graph, [p.name for p in chosen], s.reduction, s.precision)
    with contextlib.suppress(TypeError):  # a model that cannot be weakly referenced: no cache
        _CACHE[model] = (key, graph, cam_key, cam)
    return graph, chosen, cam
