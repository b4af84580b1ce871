"""The probe predictors: the held-out accuracy of a linear classifier on each point's pooled
activations (``probe``), and of the same classifier behind a linear bottleneck of principal
components (``pca-probe``). Their state streams and merges (sums and a bounded held-out sample).

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
    The same probe behind a linear bottleneck as narrow as ``isplit validate``'s: fitted on the
    top ``ceil(C / probe_ratio)`` principal components of the standardised pooled features
    (``C``: the point's channels; at most the probe's width; ``probe_ratio`` a setting of the run,
    default ``PCA_PROBE_RATIO`` = 8), computed from the same streamed sums. A point whose class
    information does not fit in 1/probe_ratio of its channels scores low, however deep it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.linalg
import torch

from isplit.importance.predictors import DEFAULTS, PredictorOptions, to_numpy
from isplit.importance.registry import PCA_PROBE_RATIO

if TYPE_CHECKING:
    pass

PROBE_DIM = 512  # wider pooled features are randomly projected to this many dimensions
PROBE_RIDGE = 1e-3  # ridge penalty on standardised features (0.01 cost early points 1-3 pp)
PROBE_HOLDOUT = 0.2  # share of the images held out for scoring the probe
PROBE_MAX_HELDOUT = 2000  # held-out images kept for scoring (smallest hashes)
_HOLDOUT_KEY = int(PROBE_HOLDOUT * 2**63)
# training rows enter the sums in blocks of this many rows (at most _BLOCK_VALUES features)
_BLOCK_ROWS = 512
_BLOCK_VALUES = 1 << 24


def holdout_keys(index: np.ndarray) -> np.ndarray:
    """A fixed 63-bit hash (splitmix64) of each image index; the probe holds out the images whose
    key is below ``PROBE_HOLDOUT * 2**63``."""
    z = np.asarray(index, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


class LinearProbe:
    """Streaming ridge probe per point (``probe``): sufficient statistics of the training part,
    and the pooled features of (at most ``max_heldout``) held-out images for scoring."""

    name = "probe"
    needs = ("pooled",)
    shares_state_with: ClassVar[str | None] = None
    ratio: ClassVar[int | None] = None  # keep ceil(channels / ratio) principal components

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
        # training rows not yet in the sums: (features per point, labels) per batch
        self._block: list[tuple[list[torch.Tensor], torch.Tensor]] = []
        self._block_rows = 0
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
        # the training rows wait in a block and enter the sums together (_add_block)
        self._block.append(([f[fit] for f in feats], yf))
        self._block_rows += len(yf)
        if self._block_rows >= min(_BLOCK_ROWS, _BLOCK_VALUES // sum(f.shape[1] for f in feats)):
            self._add_block()
        if held.any():
            h = torch.from_numpy(held).to(dev)
            self._keep_heldout(
                [f[h] for f in feats],
                torch.from_numpy(keys[held]),
                torch.as_tensor(np.asarray(labels)[held], dtype=torch.int64),
                prune=False,
            )

    def _add_block(self) -> None:
        """Add the waiting training rows to the sums, one block per point: ``X^T X`` as one
        float32 product of the rows centred on the block's mean (in float64), plus the mean's
        outer product in float64. Pooled features can have means far above their spread: the
        float64 sums keep the mean, the centred float32 product the spread; and a block of
        hundreds of rows makes the product one efficient matrix multiply instead of one per
        batch in float64 (2-5x less time on a CPU)."""
        if not self._block:
            return
        y = torch.cat([yf for _, yf in self._block])
        for k in range(len(self.sx)):
            x = torch.cat([feats[k] for feats, _ in self._block]).double()
            mean = x.mean(0)
            centred = (x - mean).float()
            self.sx[k] += x.sum(0)
            self.gram[k] += (centred.T @ centred).double() + len(x) * torch.outer(mean, mean)
            self.xy[k].index_add_(1, y, x.T)
        self._block, self._block_rows = [], 0

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
        other._add_block()
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
            self._add_block()
            self._prune()
        out = {
            "n": to_numpy(self.n),
            "y": to_numpy(self.y),
            "held_keys": to_numpy(self.held_keys),
            "held_labels": to_numpy(self.held_labels),
            "widths": to_numpy(self.widths),
        }
        for k in range(len(self.sx)):
            out[f"sx{k}"] = to_numpy(self.sx[k])
            out[f"gram{k}"] = to_numpy(self.gram[k])
            out[f"xy{k}"] = to_numpy(self.xy[k])
            out[f"held{k}"] = to_numpy(self.held[k])
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
        self._block, self._block_rows = [], 0

    def weights(
        self, k: int, components: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fitted probe at point ``k``: mean, std, W and the class prior, such that the class
        scores of features ``x`` are ``((x - mean) / std) @ W + prior``. With ``components``,
        the probe sees only the top ``components`` principal components of the standardised
        features: ``W = V (L + ridge I)^-1 V^T c`` with ``V``, ``L`` the leading eigenvectors and
        eigenvalues of their correlation matrix."""
        self._add_block()
        n = int(self.n)
        sx, gram, xy = (
            to_numpy(t).astype(np.float64) for t in (self.sx[k], self.gram[k], self.xy[k])
        )
        prior = to_numpy(self.y) / n
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
            # the leading eigenpairs only (ascending): a few times faster than all of them
            lam, v = scipy.linalg.eigh(s, subset_by_index=(len(s) - components, len(s) - 1))
            w = v @ ((v.T @ c) / (lam + self.ridge)[:, None])
        return mean, std, w, prior

    def components(self, k: int, ratio: int | None = None) -> int | None:
        """How many principal components the probe of point ``k`` keeps (None: all)."""
        ratio = self.ratio if ratio is None else ratio
        return None if ratio is None else max(1, -(-int(self.widths[k]) // ratio))

    def values(self, options: PredictorOptions = DEFAULTS) -> np.ndarray:
        """The held-out accuracy per point of the probe on all features."""
        return self.accuracy()

    def accuracy(self, ratio: int | None = None) -> np.ndarray:
        """The held-out accuracy per point; with ``ratio``, of the probe on the top
        ``ceil(channels / ratio)`` principal components (default: this probe's own)."""
        if self.sx:
            self._add_block()
            self._prune()
        if not self.sx or int(self.n) == 0 or len(self.held_keys) == 0:
            return np.full(self.num_points, np.nan)
        labels = to_numpy(self.held_labels)
        out = np.empty(self.num_points)
        for k in range(self.num_points):
            mean, std, w, prior = self.weights(k, self.components(k, ratio))
            x = to_numpy(self.held[k]).astype(np.float64)
            scores = ((x - mean) / std) @ w + prior
            out[k] = float((scores.argmax(1) == labels).mean())
        return out


class PcaProbe(LinearProbe):
    """The probe behind a linear bottleneck of ``ceil(C / probe_ratio)`` components
    (``pca-probe``); the same streamed state as ``probe``, which it reads when both are
    computed."""

    name = "pca-probe"
    shares_state_with = "probe"
    ratio = PCA_PROBE_RATIO

    def values(self, options: PredictorOptions = DEFAULTS) -> np.ndarray:
        return self.accuracy(options.probe_ratio)

    @classmethod
    def values_from(cls, probe: LinearProbe, options: PredictorOptions = DEFAULTS) -> np.ndarray:
        return probe.accuracy(options.probe_ratio)
