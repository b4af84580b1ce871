"""Cheap predictors of post-split accuracy, computed in the analysis pass beside CUI: the
:class:`Predictor` protocol, the set of them a run computes (:class:`PredictorSet`), and the
predictors made of sums (``taylor``, ``cam-share``; the probes are in
:mod:`isplit.importance.probe`).

Each predictor gives one number per split point; higher should mean "a bottleneck here keeps more
accuracy". All of them stream: their state is a few sums (and, for the probe, a bounded sample of
held-out images), so it does not grow with the number of images, and states of disjoint shards
merge into the state of one pass over all of them (processes, resumed runs).

``cui``
    The I-SPLIT curve (Grad-CAM importance, mean over images); kept by ``CurveAccumulator``.
``taylor``
    The first-order Taylor share of the target logit carried by the point::

        taylor_k = sum_x sum_{c,i,j} (d s/d A_k[c,i,j]) A_k[c,i,j]  /  sum_x s(x)

    For a network of ReLUs, max-pools and linear layers without biases ``s`` is exactly that sum at
    every point (Euler's theorem for positively homogeneous functions), so the share is 1; biases
    and batch-norm shifts after the point make it fall below. It does not change when a point's
    activations are rescaled (the gradient scales inversely), and it is the same before and after a
    max-pool: the two things that make CUI peak at max-pool outputs.
``cam-share``
    How much of the Grad-CAM evidence at the point survives as positive map, per image::

        cam_share_k(x) = sum_ij ReLU(sum_c alpha_c A[c,i,j]) / sum_ij sum_c |alpha_c| |A[c,i,j]|

    averaged over the images (0 where the point gets no gradient). It lies in [0, 1] and is
    invariant to the scale of the activations, to the scale of the gradient and to the channel
    and position counts, which make raw CUI follow the activation magnitude from layer to layer.
``probe``, ``pca-probe``
    Held-out accuracy of a linear probe on the pooled activations (:mod:`isplit.importance.probe`).

Each predictor is one class following :class:`Predictor`, registered by name in
:data:`isplit.importance.registry.PREDICTORS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from isplit.importance.registry import PCA_PROBE_RATIO, parse_predictors, predictor_class
from isplit.importance.registry import PREDICTORS as REGISTRY

if TYPE_CHECKING:
    from isplit.importance.gradcam import BatchImportance

#: name -> one line for tables and help (read from the registry, which names the predictors).
PREDICTORS: dict[str, str] = {name: info.description for name, info in REGISTRY.items()}


@dataclass(frozen=True)
class PredictorOptions:
    """What a run sets for its predictors (from its analysis settings)."""

    probe_ratio: int = PCA_PROBE_RATIO  # pca-probe keeps ceil(channels / probe_ratio) components


@runtime_checkable
class Predictor(Protocol):
    """The streaming state of one predictor, fed with every batch that ``GradCAM`` analysed.

    Constructed as ``cls(num_points, num_classes)`` and registered by name in
    :data:`isplit.importance.registry.PREDICTORS`. States of disjoint shards of the data
    (processes, resumed runs) must merge into the state of one pass over all of them, and
    ``state`` / ``load_state`` must round-trip through flat numpy arrays (checkpoints).
    """

    #: the predictor's name in the registry
    name: ClassVar[str]
    #: the per-point quantities (:data:`isplit.importance.gradcam.EXTRAS`) it reads from a batch
    needs: ClassVar[tuple[str, ...]]
    #: a predictor whose state holds everything this one needs: when both are computed, only
    #: that one is fed, and this one's values are read from its state (:meth:`values_from`)
    shares_state_with: ClassVar[str | None]

    def add(self, batch: BatchImportance, labels: np.ndarray, index: np.ndarray) -> None:
        """Add one batch (with the extras in :attr:`needs`) of images with ``labels`` at
        positions ``index`` of the analysed data."""

    def merge(self, other: Predictor) -> Predictor:
        """Add the state of another shard to this one; returns self."""

    def state(self) -> dict[str, np.ndarray]:
        """The state as flat arrays."""

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set the state from :meth:`state`'s arrays."""

    def values(self, options: PredictorOptions = ...) -> np.ndarray:
        """The predictor's value per point [K] (NaN where nothing was added)."""

    # and, with ``shares_state_with``:
    # ``values_from(cls, holder, options) -> np.ndarray`` (a classmethod): the values from the
    # state of the predictor it shares


#: The options of a run that sets none.
DEFAULTS = PredictorOptions()


def to_numpy(t) -> np.ndarray:
    """A tensor (on any device) or an array as a numpy array."""
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, targets.to(logits.device)[:, None])[:, 0]


class _SumRatio:
    """A per-point sum over the images over one scalar sum (``num`` [K] / ``den``); both add up
    across batches and shards."""

    needs: ClassVar[tuple[str, ...]]
    shares_state_with: ClassVar[str | None] = None
    keys: ClassVar[tuple[str, str]] = ("num", "den")  # the two sums' names in the state
    den_dtype: ClassVar[torch.dtype] = torch.float64

    def __init__(self, num_points: int, num_classes: int) -> None:
        self.num = torch.zeros(num_points, dtype=torch.float64)
        self.den = torch.zeros((), dtype=self.den_dtype)

    def _sums(self, batch: BatchImportance) -> tuple[torch.Tensor, torch.Tensor | int]:
        """The batch's numerators [K] and denominator."""
        raise NotImplementedError

    def add(self, batch: BatchImportance, labels: np.ndarray, index: np.ndarray) -> None:
        num, den = self._sums(batch)
        self.num = self.num.to(num.device) + num
        self.den = self.den.to(num.device) + den

    def merge(self, other: _SumRatio) -> _SumRatio:
        self.num = self.num + other.num.to(self.num.device)
        self.den = self.den + other.den.to(self.den.device)
        return self

    def state(self) -> dict[str, np.ndarray]:
        num, den = self.keys
        return {num: to_numpy(self.num), den: to_numpy(self.den)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        num, den = self.keys
        self.num = torch.as_tensor(state[num], dtype=torch.float64)
        self.den = torch.as_tensor(state[den], dtype=self.den_dtype)

    def values(self, options: PredictorOptions = DEFAULTS) -> np.ndarray:
        den = float(self.den)
        return to_numpy(self.num) / den if den != 0 else np.full(len(self.num), np.nan)


class TaylorShare(_SumRatio):
    """Sums of gradient x activation per point and of the target logit (``taylor``)."""

    name = "taylor"
    needs = ("taylor",)

    def _sums(self, batch: BatchImportance) -> tuple[torch.Tensor, torch.Tensor]:
        taylor = torch.stack(batch.extras["taylor"], 1).double()
        return taylor.sum(0), _score(batch.logits, batch.targets).double().sum()


class CamShare(_SumRatio):
    """Sum over images of each point's Grad-CAM mass share, and the image count (``cam-share``)."""

    name = "cam-share"
    needs = ("cam_share",)
    keys = ("sums", "count")
    den_dtype = torch.int64

    def _sums(self, batch: BatchImportance) -> tuple[torch.Tensor, int]:
        share = torch.stack(batch.extras["cam_share"], 1).double()
        return share.sum(0), len(share)


class PredictorSet:
    """The streaming states of the predictors asked for (besides CUI, which ``CurveAccumulator``
    holds), fed with each batch that ``GradCAM`` analysed; their classes come from the registry
    (:data:`isplit.importance.registry.PREDICTORS`)."""

    def __init__(self, names: Sequence[str], num_points: int, num_classes: int) -> None:
        self.names = [n for n in parse_predictors(names) if n != "cui"]
        self.classes = {n: predictor_class(n) for n in self.names}
        # a predictor that reads another's state when both are asked for: one state, fed once
        self.shared = {
            n: cls.shares_state_with
            for n, cls in self.classes.items()
            if cls.shares_state_with in self.classes
        }
        self.states: dict[str, Predictor] = {
            n: cls(num_points, num_classes)
            for n, cls in self.classes.items()
            if n not in self.shared
        }

    @property
    def needs(self) -> tuple[str, ...]:
        """The extras (:data:`isplit.importance.EXTRAS`) ``GradCAM`` must compute."""
        return tuple(dict.fromkeys(e for s in self.states.values() for e in s.needs))

    def add(self, batch: BatchImportance, labels: np.ndarray, index: np.ndarray) -> None:
        """Add one analysed batch (a ``BatchImportance`` with the extras in :attr:`needs`) of
        images with ``labels`` at positions ``index`` of the data set."""
        for s in self.states.values():
            s.add(batch, np.asarray(labels), np.asarray(index))

    def merge(self, other: PredictorSet) -> PredictorSet:
        if self.names != other.names:
            raise ValueError("predictor sets of different predictors cannot merge")
        for n, s in self.states.items():
            s.merge(other.states[n])
        return self

    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays (``predictor/<name>/<key>``) for checkpoints and shard exchange."""
        return {
            f"predictor/{n}/{key}": value
            for n, s in self.states.items()
            for key, value in s.state().items()
        }

    @classmethod
    def from_state(
        cls, names: Sequence[str], num_points: int, num_classes: int, state: dict[str, np.ndarray]
    ) -> PredictorSet:
        out = cls(names, num_points, num_classes)
        for n, s in out.states.items():
            prefix = f"predictor/{n}/"
            s.load_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        return out

    def values(self, options: PredictorOptions = DEFAULTS) -> dict[str, np.ndarray]:
        """Each predictor's value per point [K], in the order asked for."""
        return {
            n: self.classes[n].values_from(self.states[self.shared[n]], options)
            if n in self.shared
            else self.states[n].values(options)
            for n in self.names
        }
