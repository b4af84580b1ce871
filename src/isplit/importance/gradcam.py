"""Grad-CAM importance at every split point from one forward and one backward pass per batch.

For a split point with activation ``A`` (``C`` channels, ``H x W`` positions; a flat tensor counts
as ``H = W = 1``) and target score ``s``::

    alpha_c = mean_ij d s / d A[c, i, j]
    M       = ReLU(reduce_c alpha_c * A[c])      reduce = mean (default, the authors' code) or sum
    cui     = mean_ij M

The traced graph is instrumented once: it returns the logits and the activations at the chosen
points, and the earliest point is detached into a leaf that requires grad, so the backward pass
stops there (nothing before the first point is differentiated; parameters are frozen).

Channels and positions are the axes the point's :class:`~isplit.graph.layout.Layout` names
(inferred from the graph): N x C x H x W, N x H x W x C, tokens N x L x D (tokens that are not
image positions, such as a class token, left out), window partitions, attention heads. A point
whose layout is unknown gets NaN.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx

from isplit.errors import IsplitError
from isplit.graph import ModelGraph
from isplit.graph.layout import Layout

TARGETS = ("label", "predicted")
REDUCTIONS = ("mean", "sum")
#: Per-point quantities ``GradCAM`` can compute beside the CUI, in the same backward hooks (for
#: the predictors of :mod:`isplit.importance.predictors`): ``taylor`` [N] sum over channels and
#: positions of gradient x activation; ``cam_share`` [N] the Grad-CAM map's mass over the mass
#: it could have without cancellation (see :meth:`GradCAM.extras_of`); ``pooled`` [N, C] the
#: globally average-pooled activation.
EXTRAS = ("taylor", "cam_share", "pooled")

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise IsplitError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype the forward pass runs in under ``precision`` on ``device`` (None: float32);
    an error where the device cannot run it."""
    check_precision(precision)
    if precision == "fp32":
        return None
    return _check_autocast(precision, torch.device(device))


@functools.cache
def _check_autocast(precision: str, device: torch.device) -> torch.dtype:
    if device.type == "cpu" and precision == "fp16":
        raise IsplitError(
            "--precision fp16 needs a CUDA GPU; on a CPU use --precision bf16 (or fp32)"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise IsplitError(
            f"this GPU ({torch.cuda.get_device_name(device)}) does not support bfloat16; use "
            "--precision fp16 (or fp32)"
        )
    if device.type not in ("cpu", "cuda"):
        raise IsplitError(f"--precision {precision} is supported on cpu and cuda, not {device}")
    return _AUTOCAST[precision]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


@dataclass
class BatchImportance:
    logits: torch.Tensor  # [N, classes]
    targets: torch.Tensor  # [N] the class whose score was differentiated
    cui: torch.Tensor  # [N, K] one value per image per point
    maps: list[torch.Tensor] | None  # K tensors [N, *spatial] when asked for
    # name -> K tensors, one per point ([N] or [N, C]), for the ``extras`` asked for
    extras: dict[str, list[torch.Tensor]] | None = None


def check_labels(labels: torch.Tensor, num_classes: int, what: str = "the model's") -> None:
    """Labels (a tensor on the host) must be class indices below ``num_classes``."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        hint = "does the model fit this data set?" if what == "the model's" else "check the labels"
        raise IsplitError(f"a label ({bad}) is outside {what} {num_classes} classes: {hint}")


def _num_outputs(graph: ModelGraph) -> int | None:
    """The model's number of classes (its logits' width), from the traced shapes."""
    out = next((n for n in graph.nodes if n.op == "output"), None)
    value = graph.values.get(out.args[0]) if out is not None and out.args else None
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        return int(value.shape[1])
    return None


class GradCAM:
    """Grad-CAM maps / CUI values at ``points`` of a traced model, all in one pass per batch.

    Two steps can be overridden by a subclass, each for every point: :meth:`layout` (which axes
    of the activation hold channels and positions) and :meth:`channel_weights` (``alpha`` from
    activation and gradient). :func:`~isplit.analyze` takes the subclass (``cam=MyCAM``), or a
    registered one by name (``cam="gradcam++"``, :data:`isplit.importance.registry.CAMS`).

    Labels on the host are checked against the model's classes; labels already on a GPU are
    not (that check would make the host wait for the GPU every batch): check them before the
    copy, as :func:`~isplit.analyze` does.
    """

    def __init__(
        self,
        graph: ModelGraph,
        points: Sequence[str],
        reduction: str = "mean",
        precision: str = "fp32",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise IsplitError(f"--reduction must be one of {REDUCTIONS}, not {reduction!r}")
        check_precision(precision)
        self.precision = precision  # checked against the device on each call
        if not points:
            raise IsplitError("no split points to analyse")
        self.reduction = reduction
        self.points = list(points)
        order = {n: i for i, n in enumerate(graph.nodes)}
        nodes = [graph.node(p) for p in self.points]
        if len(set(nodes)) != len(nodes):
            raise IsplitError("the same split point is listed twice")
        if [order[n] for n in nodes] != sorted(order[n] for n in nodes):
            raise IsplitError("split points must be given in network order")
        self.module = self._instrument(graph, nodes)
        self.num_classes = _num_outputs(graph)
        self.layouts = [graph.axes.layout(n) for n in nodes]

    @staticmethod
    def _instrument(graph: ModelGraph, nodes: list[fx.Node]) -> fx.GraphModule:
        new = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        taps: list[fx.Node] = []
        first = nodes[0]
        wanted = set(nodes)
        output = None
        for n in graph.nodes:
            if n.op == "output":
                output = env[n.args[0]] if isinstance(n.args[0], fx.Node) else None
                break
            env[n] = new.node_copy(n, lambda a: env[a])
            if n is first:
                env[n] = new.call_function(_leaf, (env[n],))
            if n in wanted:
                taps.append(env[n])
        if output is None:
            raise IsplitError("the model must return one logits tensor [N, classes]")
        new.output((output, tuple(taps)))
        gm = fx.GraphModule(graph.gm, new, class_name="GradCAMTaps")
        _reuse_buffers(gm, graph, env, set(taps))
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm.eval()

    def to(self, device: torch.device | str) -> GradCAM:
        self.module.to(device)
        return self

    def __call__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        target: str = "label",
        keep_maps: bool = False,
        extras: Collection[str] = (),
    ) -> BatchImportance:
        if target not in TARGETS:
            raise IsplitError(f"--target must be one of {TARGETS}, not {target!r}")
        unknown = set(extras) - set(EXTRAS)
        if unknown:
            raise ValueError(f"unknown extras {sorted(unknown)}; known: {EXTRAS}")
        # an autocast region of the caller's does not reach in: the forward pass runs in
        # ``precision``, the maps in float32
        with torch.autocast(x.device.type, enabled=False):
            return self._importance(x, labels, target, keep_maps, extras)

    def _importance(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        target: str,
        keep_maps: bool,
        extras: Collection[str],
    ) -> BatchImportance:
        dtype = autocast_dtype(self.precision, x.device)
        with torch.enable_grad():
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                logits, acts = self.module(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise IsplitError("the model must return one logits tensor [N, classes]")
            logits = logits.float()  # the score in float32; the backward casts back
            if target == "label":
                if labels is None:
                    raise IsplitError("target 'label' needs labels")
                if labels.device.type == "cpu":  # on a GPU the check would wait for it
                    check_labels(labels, logits.shape[1])
                idx = labels.to(logits.device)
            else:
                idx = logits.detach().argmax(1)
            score = logits.gather(1, idx[:, None]).sum()
            # Each point's map is made as soon as its gradient exists (a hook), so gradients
            # are freed during the backward pass instead of all being held until its end.
            maps: list[torch.Tensor | None] = [None] * len(acts)
            extra: dict[str, list] = {name: [None] * len(acts) for name in extras}
            handles = [
                a.register_hook(self._hook(maps, extra, k, a.detach(), len(x)))
                for k, a in enumerate(acts)
                if k > 0 and a.requires_grad
            ]
            try:
                (g0,) = torch.autograd.grad(score, acts[0], allow_unused=True)
            finally:
                for h in handles:
                    h.remove()
        with torch.no_grad():
            a0 = acts[0].detach()
            self._point(maps, extra, 0, a0, torch.zeros_like(a0) if g0 is None else g0, len(x))
            for k, a in enumerate(acts):
                if maps[k] is None:  # the score does not depend on this point
                    self._point(maps, extra, k, a.detach(), torch.zeros_like(a), len(x))
            cui = torch.stack([m.reshape(m.shape[0], -1).mean(1) for m in maps], 1)
        return BatchImportance(
            logits=logits.detach(),
            targets=idx,
            cui=cui,
            maps=maps if keep_maps else None,
            extras=extra if extras else None,
        )

    def _hook(self, maps: list, extra: dict, k: int, a: torch.Tensor, n: int):
        def hook(grad: torch.Tensor) -> None:
            self._point(maps, extra, k, a, grad, n)

        return hook

    def _point(
        self, maps: list, extra: dict, k: int, a: torch.Tensor, g: torch.Tensor, n: int
    ) -> None:
        """Point ``k``'s map (and extras) for the ``n`` images from its activation and gradient."""
        layout = self.layout(k, a)
        if not layout.known:  # never guess which axis holds the channels (nor the batch)
            maps[k] = torch.full((n, 1), float("nan"), device=a.device)
            for name in extra:
                width = (n, 1) if name == "pooled" else (n,)
                extra[name][k] = torch.full(width, float("nan"), device=a.device)
            return
        a, g = channels_and_positions(layout, a, g)
        alpha = self.channel_weights(a, g)
        m = self._map(a, alpha)
        maps[k] = layout.image_grid(m)
        if extra:
            for name, value in self.extras_of(a, g, alpha, maps[k], extra.keys()).items():
                extra[name][k] = value

    # -- the steps a subclass may override ---------------------------------------------------
    def layout(self, k: int, activation: torch.Tensor) -> Layout:
        """Which axes of point ``k``'s activation [N, ...] hold its channels and its positions,
        and which positions are not on the image grid: the layout inferred from the graph
        (pytorch-grad-cam's ``reshape_transform``, automatic). Override it for an exotic model;
        a :class:`~isplit.graph.layout.Layout` whose ``reason`` is set gives NaN."""
        return self.layouts[k]

    def channel_weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """The channel weights ``alpha`` [N, C] from activation and gradient [N, C, positions]:
        Grad-CAM's mean of the gradient over the image positions, in float32
        (pytorch-grad-cam's ``get_cam_weights``)."""
        return gradient.mean(2, dtype=torch.float32)

    def _map(self, a: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The map [N, positions] in float32 from activation [N, C, positions] and weights
        [N, C]. A bf16 / fp16 activation (``precision``) is not copied to float32: the weights
        are rounded to its type and the channel sum runs there with float32 accumulation (into
        a float32 map on CUDA, rounded to the type on a CPU); README "Speed" gives the error."""
        c = a.shape[1]
        m = _weighted_channel_sum(a, alpha)  # [N, positions]
        if self.reduction == "mean":
            m = m / c
        return torch.relu(m)

    def extras_of(
        self,
        a: torch.Tensor,
        g: torch.Tensor,
        alpha: torch.Tensor,
        m: torch.Tensor,
        names: Collection[str],
    ) -> dict[str, torch.Tensor]:
        """The ``names`` (of :data:`EXTRAS`) for activation ``a``, gradient ``g`` [N, C, P],
        the channel weights ``alpha`` [N, C] and the Grad-CAM map ``m`` made from them::

            taylor    = sum_{c,i,j} g[c,i,j] * A[c,i,j]                           [N]
            cam_share = sum_ij ReLU(sum_c alpha_c A[c,i,j])
                        / sum_ij sum_c |alpha_c| |A[c,i,j]|   (0 where that is 0)  [N]
            pooled    = mean_ij A[c,i,j]                                          [N, C]
        """
        if a.dtype in (torch.float16, torch.bfloat16):  # sums over whole tensors: float32
            a, g, alpha, m = a.float(), g.float(), alpha.float(), m.float()
        n, c = a.shape[:2]
        flat_a, flat_g = a, g
        out: dict[str, torch.Tensor] = {}
        if "taylor" in names:
            out["taylor"] = torch.linalg.vecdot(flat_g.reshape(n, -1), flat_a.reshape(n, -1))
        if "cam_share" in names:
            # |sum_c alpha_c A_c| <= sum_c |alpha_c| |A_c| at every position, so the share is
            # in [0, 1] whatever the scale of A, of the gradient, of C and of H x W.
            bound = torch.linalg.vecdot(alpha.abs(), torch.linalg.vector_norm(flat_a, 1, dim=2))
            mass = m.reshape(n, -1).sum(1) * (c if self.reduction == "mean" else 1)
            out["cam_share"] = torch.where(bound > 0, mass / bound, torch.zeros_like(mass))
        if "pooled" in names:
            out["pooled"] = flat_a.mean(2)
        return out


def _weighted_channel_sum(a: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """sum_c alpha[n, c] a[n, c, p] -> float32 [N, P]; in ``a``'s type when it is 16-bit."""
    if a.dtype == torch.float32 or not a.is_floating_point():
        return torch.bmm(alpha[:, None, :], a.float())[:, 0]
    weights = alpha.to(a.dtype)[:, None, :]
    if a.is_cuda:
        try:
            return torch.bmm(weights, a, out_dtype=torch.float32)[:, 0]
        except (RuntimeError, TypeError):  # a torch without bmm's out_dtype
            pass
    return torch.bmm(weights, a)[:, 0].float()


def channels_and_positions(
    layout: Layout, a: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and gradient as [N, C, P]: the channel axes merged into one, the image
    positions into another (tokens that are not image positions left out). Views where the
    layout is N x C x positions already."""
    if layout.extra is not None:
        axis, lead, trail = layout.extra
        keep = a.shape[axis] - lead - trail
        a, g = a.narrow(axis, lead, keep), g.narrow(axis, lead, keep)
    rest = tuple(i for i in range(1, a.dim()) if i not in layout.channels + layout.positions)
    order = (0, *layout.channels, *layout.positions, *rest)  # the rest have size 1
    if order != tuple(range(a.dim())):
        a, g = a.permute(order), g.permute(order)
    c = 1
    for i in layout.channels:
        c *= a.shape[order.index(i)]
    return a.reshape(a.shape[0], c, -1), g.reshape(g.shape[0], c, -1)


_RELUS = (torch.relu, torch.nn.functional.relu)
# Producers whose backward does not need their own output, so it may be overwritten.
_OVERWRITABLE_MODULES = (
    torch.nn.modules.conv._ConvNd,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.Linear,
)


def _overwritable(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _OVERWRITABLE_MODULES)
    return node.op == "call_function" and node.target in (operator.add, torch.Tensor.add_)


def _reuse_buffers(gm: fx.GraphModule, graph: ModelGraph, env: dict, taps: set) -> None:
    """Run ReLUs and residual adds in place where that is safe, as the original model does.

    ``graph`` rewrote every in-place op out of place so that nothing captured is overwritten;
    here, where the taps are known, an op may again overwrite its first input when that input is
    used by nothing else, is not a tap or the leaf, and has the result's shape. Fresh buffers
    for every ReLU and add cost memory bandwidth. (Were it ever unsafe, autograd's version check
    would raise at backward rather than give wrong values.)
    """
    meta = {env[n]: graph.values[n] for n in env if n in graph.values}
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), torch.nn.ReLU):
            inplace = torch.relu_
        elif node.op == "call_function" and node.target in _RELUS and not node.kwargs:
            inplace = torch.relu_
        elif node.op == "call_function" and node.target is operator.add:
            inplace = torch.Tensor.add_
        else:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src in taps or len(src.users) != 1:
            continue
        if not _overwritable(gm, src):
            continue
        a, out = meta.get(src), meta.get(node)
        if not isinstance(a, torch.Tensor) or not isinstance(out, torch.Tensor):
            continue
        if a.shape != out.shape or a.dtype != out.dtype:
            continue
        if inplace is torch.Tensor.add_ and not isinstance(meta.get(node.args[1]), torch.Tensor):
            continue
        with gm.graph.inserting_after(node):
            repl = gm.graph.call_function(
                inplace, tuple(node.args[:2] if inplace is torch.Tensor.add_ else node.args[:1])
            )
        node.replace_all_uses_with(repl)
        meta[repl] = out
        gm.graph.erase_node(node)
