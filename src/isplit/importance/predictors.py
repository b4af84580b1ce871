"""Cheap predictors of post-split accuracy, computed in the analysis pass beside CUI.

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
``probe``
    The held-out accuracy of a linear classifier (ridge regression on one-hot labels, features
    standardised, ``lambda = PROBE_RIDGE``) on the globally average-pooled activation at the point,
    projected by a fixed random Gaussian matrix to ``PROBE_DIM`` dimensions when wider. It is fitted
    on the analysed images outside the held-out part and scored on the held-out part: an image is
    held out when a fixed hash of its index in the analysed data is below ``PROBE_HOLDOUT`` (20 %),
    and at most ``PROBE_MAX_HELDOUT`` held-out images (those with the smallest hashes) are kept for
    scoring. The fit is exactly the batch ridge fit: it needs only ``X^T X``, ``X^T Y`` and sums,
    which stream and merge.
``pca-probe``
    The same probe behind a linear bottleneck as narrow as ``isplit validate``'s default: fitted
    on the top ``ceil(C / PCA_PROBE_RATIO)`` principal components of the standardised pooled
    features (``C``: the point's channels; at most the probe's width), computed from the same
    streamed sums. A point whose class information does not fit in 1/8 of its channels scores
    low, however deep it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from isplit.importance.registry import PCA_PROBE_RATIO, parse_predictors
from isplit.importance.registry import PREDICTORS as REGISTRY

#: name -> one line for tables and help (read from the registry, which names the predictors).
PREDICTORS: dict[str, str] = {name: info.description for name, info in REGISTRY.items()}
PROBE_DIM = 512  # wider pooled features are randomly projected to this many dimensions
PROBE_RIDGE = 1e-3  # ridge penalty on standardised features (0.01 cost early points 1-3 pp)
PROBE_HOLDOUT = 0.2  # share of the images held out for scoring the probe
PROBE_MAX_HELDOUT = 2000  # held-out images kept for scoring (smallest hashes)
_HOLDOUT_KEY = int(PROBE_HOLDOUT * 2**63)


def holdout_keys(index: np.ndarray) -> np.ndarray:
    """A fixed 63-bit hash (splitmix64) of each image index; the probe holds out the images whose
    key is below ``PROBE_HOLDOUT * 2**63``."""
    z = np.asarray(index, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, targets.to(logits.device)[:, None])[:, 0]


class TaylorShare:
    """Sums of gradient x activation per point and of the target logit (``taylor``)."""

    name = "taylor"
    needs = ("taylor",)

    def __init__(self, num_points: int, num_classes: int) -> None:
        self.num = torch.zeros(num_points, dtype=torch.float64)
        self.den = torch.zeros((), dtype=torch.float64)

    def add(self, batch, labels: np.ndarray, index: np.ndarray) -> None:
        taylor = torch.stack(batch.extras["taylor"], 1).double()
        self.num = self.num.to(taylor.device) + taylor.sum(0)
        self.den = self.den.to(taylor.device) + _score(batch.logits, batch.targets).double().sum()

    def merge(self, other: TaylorShare) -> TaylorShare:
        self.num = self.num + other.num.to(self.num.device)
        self.den = self.den + other.den.to(self.den.device)
        return self

    def state(self) -> dict[str, np.ndarray]:
        return {"num": _np(self.num), "den": _np(self.den)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.num = torch.as_tensor(state["num"], dtype=torch.float64)
        self.den = torch.as_tensor(state["den"], dtype=torch.float64)

    def values(self) -> np.ndarray:
        den = float(self.den)
        return _np(self.num) / den if den != 0 else np.full(len(self.num), np.nan)


class CamShare:
    """Sum over images of each point's Grad-CAM mass share, and the image count (``cam-share``)."""

    name = "cam-share"
    needs = ("cam_share",)

    def __init__(self, num_points: int, num_classes: int) -> None:
        self.sums = torch.zeros(num_points, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)

    def add(self, batch, labels: np.ndarray, index: np.ndarray) -> None:
        share = torch.stack(batch.extras["cam_share"], 1).double()
        self.sums = self.sums.to(share.device) + share.sum(0)
        self.count = self.count + len(share)

    def merge(self, other: CamShare) -> CamShare:
        self.sums = self.sums + other.sums.to(self.sums.device)
        self.count = self.count + other.count
        return self

    def state(self) -> dict[str, np.ndarray]:
        return {"sums": _np(self.sums), "count": _np(self.count)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.sums = torch.as_tensor(state["sums"], dtype=torch.float64)
        self.count = torch.as_tensor(state["count"], dtype=torch.int64)

    def values(self) -> np.ndarray:
        n = int(self.count)
        return _np(self.sums) / n if n else np.full(len(self.sums), np.nan)


class LinearProbe:
    """Streaming ridge probe per point (``probe``): sufficient statistics of the training part,
    and the pooled features of (at most ``max_heldout``) held-out images for scoring."""

    name = "probe"
    needs = ("pooled",)
    ratio: int | None = None  # keep ceil(channels / ratio) principal components (None: all)

    def __init__(
        self,
        num_points: int,
        num_classes: int,
        dim: int = PROBE_DIM,
        ridge: float = PROBE_RIDGE,
        max_heldout: int = PROBE_MAX_HELDOUT,
    ) -> None:
        self.num_points, self.num_classes = num_points, num_classes
        self.dim, self.ridge, self.max_heldout = dim, ridge, max_heldout
        self.n = torch.zeros((), dtype=torch.int64)
        # per point, made at the first batch (the widths are known then)
        self.sx: list[torch.Tensor] = []  # [D] sum of features
        self.gram: list[torch.Tensor] = []  # [D, D] sum of x x^T
        self.xy: list[torch.Tensor] = []  # [D, classes] sum of x y^T (y one-hot)
        self.y = torch.zeros(num_classes, dtype=torch.float64)  # class counts of the fit part
        self.held: list[torch.Tensor] = []  # [M, D] features of the kept held-out images
        self.held_keys = torch.zeros(0, dtype=torch.int64)
        self.held_labels = torch.zeros(0, dtype=torch.int64)
        self._pending: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]] = []
        self._pending_rows = 0
        self._proj: list[torch.Tensor | None] | None = None
        self.widths = torch.zeros(num_points, dtype=torch.int64)  # channels before projection

    def _projection(self, k: int, width: int, device) -> torch.Tensor | None:
        """A fixed Gaussian projection of point ``k``'s ``width`` features to ``dim``."""
        if self._proj is None:
            self._proj = [None] * self.num_points
        if width <= self.dim:
            return None
        p = self._proj[k]
        if p is None or p.shape[0] != width or p.device != torch.device(device):
            gen = torch.Generator().manual_seed(1_000_003 * (k + 1) + width)
            p = torch.randn(width, self.dim, generator=gen) / self.dim**0.5
            p = self._proj[k] = p.to(device)  # made on the CPU: the same on every device
        return p

    def _features(self, pooled: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for k, f in enumerate(pooled):
            f = f.float()
            p = self._projection(k, f.shape[1], f.device)
            out.append(f if p is None else f @ p)
        return out

    def _start(self, feats: list[torch.Tensor]) -> None:
        dev = feats[0].device
        self.sx = [torch.zeros(f.shape[1], dtype=torch.float64, device=dev) for f in feats]
        self.gram = [
            torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=dev) for f in feats
        ]
        self.xy = [
            torch.zeros(f.shape[1], self.num_classes, dtype=torch.float64, device=dev)
            for f in feats
        ]
        self.held = [torch.zeros(0, f.shape[1], device=dev) for f in feats]

    def add(self, batch, labels: np.ndarray, index: np.ndarray) -> None:
        pooled = batch.extras["pooled"]
        feats = self._features(pooled)
        if not self.sx:
            self._start(feats)
            self.widths = torch.tensor([f.shape[1] for f in pooled], dtype=torch.int64)
        dev = feats[0].device
        keys = holdout_keys(index)
        held = keys < _HOLDOUT_KEY
        fit = torch.from_numpy(~held).to(dev)
        y = torch.as_tensor(labels, dtype=torch.int64, device=dev)
        yf = y[fit]
        self.n = self.n + int((~held).sum())
        self.y = self.y.to(dev).index_add_(
            0, yf, torch.ones(len(yf), dtype=torch.float64, device=dev)
        )
        for k, f in enumerate(feats):
            # float64: pooled features can have means far above their spread, and X^T X / n
            # - mean mean^T would lose that spread to float32 rounding
            ff = f[fit].double()
            self.sx[k] += ff.sum(0)
            self.gram[k] += ff.T @ ff
            self.xy[k].index_add_(1, yf, ff.T)
        if held.any():
            h = torch.from_numpy(held).to(dev)
            self._keep_heldout(
                [f[h] for f in feats],
                torch.from_numpy(keys[held]),
                torch.as_tensor(np.asarray(labels)[held], dtype=torch.int64),
                prune=False,
            )

    def _keep_heldout(self, feats, keys: torch.Tensor, labels: torch.Tensor, prune: bool) -> None:
        # batches wait in a list and are pruned together once there are twice as many rows as
        # kept: each row is copied O(1) times, not once per later batch
        self._pending.append((list(feats), keys.cpu(), labels.cpu()))
        self._pending_rows += len(keys)
        if prune or len(self.held_keys) + self._pending_rows > 2 * self.max_heldout:
            self._prune()

    def _prune(self) -> None:
        """Keep the ``max_heldout`` held-out images with the smallest keys (a bottom-k sample:
        the same images whatever the order and sharding they arrived in), ordered by key."""
        if self._pending:
            self.held = [
                torch.cat([h, *(f[k].to(h.device) for f, _, _ in self._pending)])
                for k, h in enumerate(self.held)
            ]
            self.held_keys = torch.cat([self.held_keys, *(k for _, k, _ in self._pending)])
            self.held_labels = torch.cat([self.held_labels, *(y for _, _, y in self._pending)])
            self._pending, self._pending_rows = [], 0
        order = torch.argsort(self.held_keys)[: self.max_heldout]
        self.held_keys, self.held_labels = self.held_keys[order], self.held_labels[order]
        self.held = [h[order.to(h.device)] for h in self.held]

    def merge(self, other: LinearProbe) -> LinearProbe:
        if not other.sx:
            return self
        other._prune()
        if not self.sx:
            self._start(other.held)
            self.widths = other.widths.clone()
        dev = self.sx[0].device
        self.n = self.n + other.n
        self.y = self.y.to(dev) + other.y.to(dev)
        for k in range(len(self.sx)):
            self.sx[k] += other.sx[k].to(dev)
            self.gram[k] += other.gram[k].to(dev)
            self.xy[k] += other.xy[k].to(dev)
        self._keep_heldout(other.held, other.held_keys, other.held_labels, prune=True)
        return self

    def state(self) -> dict[str, np.ndarray]:
        if self.sx:
            self._prune()
        out = {
            "n": _np(self.n),
            "y": _np(self.y),
            "held_keys": _np(self.held_keys),
            "held_labels": _np(self.held_labels),
            "widths": _np(self.widths),
        }
        for k in range(len(self.sx)):
            out[f"sx{k}"] = _np(self.sx[k])
            out[f"gram{k}"] = _np(self.gram[k])
            out[f"xy{k}"] = _np(self.xy[k])
            out[f"held{k}"] = _np(self.held[k])
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.n = torch.as_tensor(state["n"], dtype=torch.int64)
        self.y = torch.as_tensor(state["y"], dtype=torch.float64)
        self.held_keys = torch.as_tensor(state["held_keys"], dtype=torch.int64)
        self.held_labels = torch.as_tensor(state["held_labels"], dtype=torch.int64)
        points = sum(1 for key in state if key.startswith("sx"))
        self.widths = torch.as_tensor(state["widths"], dtype=torch.int64)
        self.sx = [torch.as_tensor(state[f"sx{k}"], dtype=torch.float64) for k in range(points)]
        self.gram = [torch.as_tensor(state[f"gram{k}"], dtype=torch.float64) for k in range(points)]
        self.xy = [torch.as_tensor(state[f"xy{k}"], dtype=torch.float64) for k in range(points)]
        self.held = [torch.as_tensor(state[f"held{k}"], dtype=torch.float32) for k in range(points)]

    def weights(
        self, k: int, components: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fitted probe at point ``k``: mean, std, W and the class prior, such that the class
        scores of features ``x`` are ``((x - mean) / std) @ W + prior``. With ``components``,
        the probe sees only the top ``components`` principal components of the standardised
        features: ``W = V (L + ridge I)^-1 V^T c`` with ``V``, ``L`` the leading eigenvectors and
        eigenvalues of their correlation matrix."""
        n = int(self.n)
        sx, gram, xy = (_np(t).astype(np.float64) for t in (self.sx[k], self.gram[k], self.xy[k]))
        prior = _np(self.y) / n
        mean = sx / n
        cov = gram / n - np.outer(mean, mean)
        cxy = xy / n - np.outer(mean, prior)
        std = np.sqrt(np.clip(np.diag(cov), 0, None))
        live = std > 1e-6 * max(float(std.max(initial=0.0)), 1e-30)
        std = np.where(live, std, np.inf)  # constant features get zero weight
        s = cov / np.outer(std, std)
        s[~live, :] = 0.0
        s[:, ~live] = 0.0
        c = cxy / std[:, None]
        if components is None or components >= len(s):
            w = np.linalg.solve(s + self.ridge * np.eye(len(s)), c)
        else:
            eigval, eigvec = np.linalg.eigh(s)  # ascending
            v, lam = eigvec[:, -components:], eigval[-components:]
            w = v @ ((v.T @ c) / (lam + self.ridge)[:, None])
        return mean, std, w, prior

    def components(self, k: int, ratio: int | None = None) -> int | None:
        """How many principal components the probe of point ``k`` keeps (None: all)."""
        ratio = self.ratio if ratio is None else ratio
        return None if ratio is None else max(1, -(-int(self.widths[k]) // ratio))

    def values(self, ratio: int | None = None) -> np.ndarray:
        """The held-out accuracy per point; with ``ratio``, of the probe on the top
        ``ceil(channels / ratio)`` principal components (default: this probe's own)."""
        if self.sx:
            self._prune()
        if not self.sx or int(self.n) == 0 or len(self.held_keys) == 0:
            return np.full(self.num_points, np.nan)
        labels = _np(self.held_labels)
        out = np.empty(self.num_points)
        for k in range(self.num_points):
            mean, std, w, prior = self.weights(k, self.components(k, ratio))
            x = _np(self.held[k]).astype(np.float64)
            scores = ((x - mean) / std) @ w + prior
            out[k] = float((scores.argmax(1) == labels).mean())
        return out


class PcaProbe(LinearProbe):
    """The probe behind a linear bottleneck of ``ceil(C / PCA_PROBE_RATIO)`` components
    (``pca-probe``); the same streamed state as ``probe``."""

    name = "pca-probe"
    ratio = PCA_PROBE_RATIO


_CLASSES = {cls.name: cls for cls in (TaylorShare, CamShare, LinearProbe, PcaProbe)}


class PredictorSet:
    """The streaming states of the predictors asked for (besides CUI, which ``CurveAccumulator``
    holds), fed with each batch that ``GradCAM`` analysed."""

    def __init__(self, names: Sequence[str], num_points: int, num_classes: int) -> None:
        self.names = [n for n in parse_predictors(names) if n != "cui"]
        # pca-probe reads the probe's sums when both are asked for: one state, fed once
        self.shared = {"pca-probe": "probe"} if {"probe", "pca-probe"} <= set(self.names) else {}
        self.states = {
            n: _CLASSES[n](num_points, num_classes) for n in self.names if n not in self.shared
        }

    @property
    def needs(self) -> tuple[str, ...]:
        """The extras (:data:`isplit.importance.EXTRAS`) ``GradCAM`` must compute."""
        return tuple(dict.fromkeys(e for s in self.states.values() for e in s.needs))

    def add(self, batch, labels: np.ndarray, index: np.ndarray) -> None:
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

    def values(self, probe_ratio: int = PCA_PROBE_RATIO) -> dict[str, np.ndarray]:
        """Each predictor's value per point [K], in the order asked for; ``probe_ratio``:
        ``pca-probe``'s."""
        out = {}
        for n in self.names:
            if n == "pca-probe":
                out[n] = self.states[self.shared.get(n, n)].values(ratio=probe_ratio)
            else:
                out[n] = self.states[n].values()
        return out
