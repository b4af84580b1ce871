"""Capture a model's graph with torch.fx, keeping whole the submodules it cannot trace into.

The model is traced with torchvision's ``NodePathTracer`` (the tracer behind
``get_graph_node_names`` / ``create_feature_extractor``), so node names are torchvision's
(``features.4``, ``layer2.1.relu_2``). A *leaf module* is traced as one node rather than into, so
no cut falls inside it: torchvision.ops modules always, the user's (``leaf_modules``, by class,
class name or qualified type name), and, found automatically, every submodule class whose forward
torch.fx cannot trace (data-dependent Python control flow, as in timm's MobileViT and
EfficientViT): when tracing fails, the class of the innermost submodule whose forward raised
becomes a leaf and the model is traced again, up to :data:`MAX_ROUNDS` times.

The model's image is its forward's one input. Its other arguments that have a default of a simple
type (``forward(x, mask=None)``, ``forward(x, pre_logits=False)``) are traced at that default, as
the model is called (torch.fx's ``concrete_args``): Python control flow on them (``if mask is not
None:``) takes the branch the call takes, and the graph takes the image alone.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch.fx as fx
import torchvision
from torch import nn
from torchvision.models.feature_extraction import NodePathTracer

from isplit.errors import IsplitError, did_you_mean

log = logging.getLogger("isplit")

#: A leaf module as the API takes it: a module class, or its class name or qualified type name.
LeafModule = str | type

#: How many submodule classes are made leaves automatically before capture gives up.
MAX_ROUNDS = 20


def leaf_module_name(leaf: LeafModule) -> str:
    """How a leaf module is recorded (in ``curves.json`` and the fingerprint): the name as given,
    or a class's qualified type name."""
    return leaf if isinstance(leaf, str) else f"{leaf.__module__}.{leaf.__qualname__}"


def _imported_type(name: str) -> type | None:
    """The module class that the qualified name ``package.module.Class`` imports as, if any."""
    module, _, attr = name.rpartition(".")
    if not module:
        return None
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def resolve_leaf_modules(model: nn.Module, leaves: Sequence[LeafModule]) -> list[type]:
    """The module classes of ``leaves``; a name must match a class of ``model``'s submodules (its
    ``__name__``, or ``module.qualname``) or import as a module class."""
    present = {type(m) for m in model.modules()}
    out: list[type] = []
    for leaf in leaves:
        if isinstance(leaf, type):
            out.append(leaf)
            continue
        found = [t for t in present if leaf in (t.__name__, leaf_module_name(t))]
        imported = _imported_type(leaf)
        if imported is not None and imported not in found:
            found.append(imported)
        if not found:
            known = sorted({t.__name__ for t in present})
            raise IsplitError(
                f"--leaf-module {leaf!r} is no module class of {type(model).__name__}"
                f"{did_you_mean(leaf, known)}; give a class name of one of its submodules or a "
                "qualified type name (package.module.Class)"
            )
        out.extend(found)
    return out


class _Tracer(NodePathTracer):
    """torchvision's tracer that also knows, when tracing fails, which submodules' forwards the
    failure came through (``failed_in``: (path, module) pairs, outermost first)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._inside: list[tuple[str, nn.Module]] = []
        self.failed_in: list[tuple[str, nn.Module]] = []

    def call_module(self, m: nn.Module, forward, args, kwargs):
        try:
            path = self.path_of_module(m)
        except NameError:  # not a submodule of the model: no node name, no leaf
            return forward(*args, **kwargs)
        self._inside.append((path, m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost module sees the failure first; its outer modules keep its record.
            if self.failed_in[: len(self._inside)] != self._inside:
                self.failed_in = list(self._inside)
            raise
        finally:
            self._inside.pop()


def _tracer(leaves: Sequence[type]) -> _Tracer:
    """torchvision's defaults (torchvision.ops modules are leaves, math is auto-wrapped) and the
    given leaf module classes."""
    ops = [
        obj
        for obj in vars(torchvision.ops).values()
        if isinstance(obj, type) and issubclass(obj, nn.Module)
    ]
    return _Tracer(
        autowrap_modules=(math, torchvision.ops),
        autowrap_functions=_timm_opaque_functions(),
        leaf_modules=[*ops, *leaves],
    )


def _timm_opaque_functions() -> tuple:
    """The functions timm marks as not traceable (position-embedding resampling, window
    reversal, ...), called as one node each, when timm is in use."""
    if "timm" not in sys.modules:
        return ()
    try:
        from timm.layers import get_notrace_functions
    except ImportError:
        return ()
    return tuple(get_notrace_functions())


@dataclass
class Capture:
    """A traced model: the graph, the tracer that made it (its ``root`` and ``node_to_qualname``)
    and the submodule classes that were made leaves because torch.fx cannot trace into them."""

    graph: fx.Graph
    tracer: NodePathTracer
    auto_leaves: tuple[type, ...]


def capture(model: nn.Module, leaf_modules: Sequence[LeafModule] = ()) -> Capture:
    """Trace ``model`` with ``leaf_modules`` kept whole, and every submodule class whose forward
    torch.fx cannot trace; an :class:`IsplitError` naming the module where that does not help."""
    given = resolve_leaf_modules(model, leaf_modules)
    defaults = forward_defaults(model)
    auto: list[type] = []
    while True:
        tracer = _tracer([*given, *auto])
        try:
            graph = tracer.trace(model, concrete_args=defaults or None)
        except Exception as e:  # tracing failures are the model's property, not a bug of ours
            leaves = (*given, *auto)
            inner = [(p, m) for p, m in tracer.failed_in if not isinstance(m, leaves)]
            if not inner or len(auto) == MAX_ROUNDS:
                raise IsplitError(_failure(model, tracer.failed_in, auto, e)) from None
            auto.append(type(inner[-1][1]))
            log.debug("torch.fx cannot trace into %s (%s): kept whole", inner[-1][0], auto[-1])
            continue
        _drop_specialised(graph, defaults)
        # only those that are nodes (not those inside a class made a leaf later)
        nodes = [tracer.root.get_submodule(n.target) for n in graph.nodes if n.op == "call_module"]
        auto = [c for c in auto if any(isinstance(m, c) for m in nodes)]
        if auto:
            log.warning(_kept_whole(tracer.root, auto))
        return Capture(graph, tracer, tuple(auto))


#: The types of a default that is traced as a constant rather than as an input.
_SIMPLE = (bool, int, float, str)


def forward_defaults(model: nn.Module) -> dict[str, object]:
    """The arguments of ``model``'s forward after the image that have a default of a simple type
    (None, bool, int, float, str), with that default: the values a call with the image alone
    gives them. ``*args`` and ``**kwargs`` have none."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin forward)
        return {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: p.default
        for p in params[1:]
        if p.kind in named and (p.default is None or type(p.default) in _SIMPLE)
    }


def _drop_specialised(graph: fx.Graph, defaults: dict[str, object]) -> None:
    """Remove the placeholders that torch.fx keeps for the arguments traced at their defaults
    (``mask_1``), with the guards it adds on them (``_assert_is_none``, ``torch._assert(mask_1
    == 0)``): the graph takes the image alone. The traced code no longer reads them."""
    names = {f"{name}_1" for name in defaults}
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.target in names]
    guards: list[fx.Node] = []
    for n in placeholders:
        todo = list(n.users)
        while todo:
            u = todo.pop()
            if u not in guards:
                guards.append(u)
                todo.extend(u.users)
    order = {n: i for i, n in enumerate(graph.nodes)}
    for n in sorted(guards, key=order.__getitem__, reverse=True) + placeholders:
        graph.erase_node(n)


def _kept_whole(model: nn.Module, auto: Sequence[type]) -> str:
    """The one-line warning that names the classes made leaves automatically."""
    names = []
    for cls in auto:
        paths = [p for p, m in model.named_modules() if type(m) is cls]
        where = f"{paths[0]}, ..." if len(paths) > 1 else paths[0] if paths else "-"
        names.append(f"{leaf_module_name(cls)} ({len(paths)}x: {where})")
    return (
        f"torch.fx cannot trace into {'; '.join(names)} of {type(model).__name__}: kept whole "
        "(leaf modules), so no split point falls inside them"
    )


def _failure(
    model: nn.Module, failed_in: list[tuple[str, nn.Module]], auto: list[type], e: Exception
) -> str:
    """Why capture failed, where, and what to do."""
    name = type(model).__name__
    why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    kept = f" (already kept whole: {', '.join(c.__name__ for c in auto)})" if auto else ""
    if not failed_in:
        return (
            f"cannot trace {name} with torch.fx: its own forward (the top-level module, "
            f"{leaf_module_name(type(model))}) fails ({why}){kept}; isplit keeps submodules "
            "that torch.fx cannot trace whole (as with --leaf-module CLASS), but not the model "
            "itself: move its data-dependent Python control flow into a submodule"
        )
    path, module = failed_in[-1]
    outer = [type(m).__name__ for _, m in failed_in[:-1]]
    example = f" (here: --leaf-module {outer[-1]})" if outer else ""
    return (
        f"cannot trace {name} with torch.fx: {path!r} ({leaf_module_name(type(module))}) fails "
        f"({why}){kept}; keep a module around it whole with --leaf-module CLASS{example}, or "
        "remove its data-dependent Python control flow"
    )
