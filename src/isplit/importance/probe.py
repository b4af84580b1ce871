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
from typing import ClassVar

import numpy as np
import scipy.linalg
import threadpoolctl
import torch

from isplit.importance.predictors import DEFAULTS, PredictorOptions, to_numpy
from isplit.importance.registry import PCA_PROBE_RATIO

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


def _row_sum(x: torch.Tensor, group: int = 64) -> torch.Tensor:
    """The float64 sum of the rows of float32 ``x``: float32 sums of ``group`` rows, added in
    float64 (``x.sum(0, dtype=torch.float64)`` is 20x slower on a CPU)."""
    whole = len(x) // group * group
    out = x[whole:].double().sum(0)
    if whole:
        out += x[:whole].view(-1, group, x.shape[1]).sum(1).double().sum(0)
    return out


class _Rows:
    """Rows of features and their labels (and keys) gathered batch by batch into one buffer
    that grows by doubling: a few large allocations in a run instead of a long-lived tensor per
    batch. (Hundreds of those, kept between the batches' activations, made the allocator hand
    the activations fresh pages: twice the page faults, seconds of system time, on a 10 000-image
    run.)"""

    def __init__(self) -> None:
        self.x = torch.zeros(0, 0)
        self.y = torch.zeros(0, dtype=torch.int64)
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.rows = 0

    def append(self, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor | None = None) -> None:
        need = self.rows + len(x)
        if need > len(self.x) or x.shape[1] != self.x.shape[1] or x.device != self.x.device:
            size = max(need, 2 * len(self.x), 64)
            grown = torch.empty(size, x.shape[1], dtype=torch.float32, device=x.device)
            if self.rows:
                grown[: self.rows] = self.x[: self.rows]
            self.x = grown
            self.y = torch.cat(
                [self.y[: self.rows], torch.empty(size - self.rows, dtype=torch.int64)]
            )
            self.keys = torch.cat(
                [self.keys[: self.rows], torch.empty(size - self.rows, dtype=torch.int64)]
            )
        self.x[self.rows : need] = x
        self.y[self.rows : need] = y.cpu()
        if keys is not None:
            self.keys[self.rows : need] = keys
        self.rows = need

    def clear(self) -> None:
        self.rows = 0


class LinearProbe:
    """Streaming ridge probe per point (``probe``): sufficient statistics of the training part,
    and the pooled features of (at most ``max_heldout``) held-out images for scoring. The
    features of all points sit side by side in one row per image (point ``k``'s in the columns
    ``spans[k]``), so that a batch costs a handful of tensor operations, not a few per point."""

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
        # made at the first batch (the widths are known then)
        self.spans: list[tuple[int, int]] = []  # point k's columns: spans[k][0]:spans[k][1]
        self.sx = torch.zeros(0, dtype=torch.float64)  # [D] sum of features
        self.gram: list[torch.Tensor] = []  # per point [D_k, D_k] sum of x x^T
        self.xy = torch.zeros(0, 0, dtype=torch.float64)  # [D, classes] sum of x y^T (one-hot)
        self.y = torch.zeros(num_classes, dtype=torch.float64)  # class counts of the fit part
        self.held = torch.zeros(0, 0)  # [M, D] features of the kept held-out images
        self.held_keys = torch.zeros(0, dtype=torch.int64)
        self.held_labels = torch.zeros(0, dtype=torch.int64)
        self._pending = _Rows()  # held-out rows not yet pruned
        # training rows not yet in the sums
        self._block = _Rows()
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

    def _features(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """The probe's features of a batch: [N, D], every point's (projected when wide)."""
        out = []
        for k, f in enumerate(pooled):
            p = self._projection(k, f.shape[1], f.device)
            out.append(f if p is None else f.float() @ p)
        return torch.cat(out, 1).float()

    def _start(self, dims: Sequence[int], device) -> None:
        ends = np.cumsum(dims).tolist()
        self.spans = list(zip([0, *ends[:-1]], ends))
        total = ends[-1] if ends else 0
        self.sx = torch.zeros(total, dtype=torch.float64, device=device)
        self.gram = [torch.zeros(d, d, dtype=torch.float64, device=device) for d in dims]
        self.xy = torch.zeros(total, self.num_classes, dtype=torch.float64, device=device)
        self.held = torch.zeros(0, total, device=device)

    def add(self, batch, labels: np.ndarray, index: np.ndarray) -> None:
        pooled = batch.extras["pooled"]
        feats = self._features(pooled)
        if not self.spans:
            self._start([min(f.shape[1], self.dim) for f in pooled], feats.device)
            self.widths = torch.tensor([f.shape[1] for f in pooled], dtype=torch.int64)
        dev = feats.device
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
        if self._block.rows + len(yf) > min(_BLOCK_ROWS, _BLOCK_VALUES // max(feats.shape[1], 1)):
            self._add_block()
        self._block.append(feats[fit], yf)
        if held.any():
            h = torch.from_numpy(held).to(dev)
            self._keep_heldout(
                feats[h],
                torch.from_numpy(keys[held]),
                torch.as_tensor(np.asarray(labels)[held], dtype=torch.int64),
                prune=False,
            )

    def _add_block(self) -> None:
        """Add the waiting training rows ``x`` to the sums, through their float32 offsets
        ``c = x - m`` from the block's float32 mean ``m`` (``x = c + m`` up to the rounding of
        ``c``): per point ``X^T X = C^T C + m s^T + s m^T +
        rows m m^T`` with ``s`` the sum of the rows of ``C`` (near 0), ``C^T C`` one float32
        matrix product and the rest float64, and likewise the other sums. Pooled features can
        have means far above their spread: the float64 terms keep the mean, the centred float32
        product the spread; a block of hundreds of rows makes the product one efficient matrix
        multiply (2-5x less time than one per batch in float64 on a CPU), and no float64 copy
        of the block is made."""
        rows = self._block.rows
        if not rows:
            return
        x, y = self._block.x[:rows], self._block.y[:rows].to(self.xy.device)
        m = x.mean(0)  # any m would do: the sums below are exact for every m
        c = x.sub_(m)  # in the block's buffer, refilled after this
        s = _row_sum(c)
        m64 = m.double()
        counts = torch.bincount(y, minlength=self.num_classes).double()
        self.sx += s + rows * m64
        self.xy += torch.zeros_like(self.xy, dtype=c.dtype).index_add_(1, y, c.T).double()
        self.xy.addr_(m64, counts)
        for k, (a, b) in enumerate(self.spans):
            ck, mk, sk = c[:, a:b], m64[a:b], s[a:b]
            gram = self.gram[k].add_(ck.T @ ck).addr_(mk, sk).addr_(sk, mk)
            gram.addr_(mk, mk, alpha=rows)
        self._block.clear()

    def _keep_heldout(self, feats, keys: torch.Tensor, labels: torch.Tensor, prune: bool) -> None:
        # rows wait and are pruned together once there are twice as many as kept: each row is
        # copied O(1) times, not once per later batch
        self._pending.append(feats, labels, keys.cpu())
        if prune or len(self.held_keys) + self._pending.rows > 2 * self.max_heldout:
            self._prune()

    def _prune(self) -> None:
        """Keep the ``max_heldout`` held-out images with the smallest keys (a bottom-k sample:
        the same images whatever the order and sharding they arrived in), ordered by key."""
        rows = self._pending.rows
        if rows:
            p = self._pending
            self.held = torch.cat([self.held, p.x[:rows].to(self.held.device)])
            self.held_keys = torch.cat([self.held_keys, p.keys[:rows]])
            self.held_labels = torch.cat([self.held_labels, p.y[:rows]])
            p.clear()
        order = torch.argsort(self.held_keys)[: self.max_heldout]
        self.held_keys, self.held_labels = self.held_keys[order], self.held_labels[order]
        self.held = self.held[order.to(self.held.device)]

    def merge(self, other: LinearProbe) -> LinearProbe:
        if not other.spans:
            return self
        other._add_block()
        other._prune()
        if not self.spans:
            self._start([b - a for a, b in other.spans], other.sx.device)
            self.widths = other.widths.clone()
        dev = self.sx.device
        self.n = self.n + other.n
        self.y = self.y.to(dev) + other.y.to(dev)
        self.sx += other.sx.to(dev)
        self.xy += other.xy.to(dev)
        for k in range(len(self.gram)):
            self.gram[k] += other.gram[k].to(dev)
        self._keep_heldout(other.held, other.held_keys, other.held_labels, prune=True)
        return self

    def state(self) -> dict[str, np.ndarray]:
        if self.spans:
            self._add_block()
            self._prune()
        out = {
            "n": to_numpy(self.n),
            "y": to_numpy(self.y),
            "held_keys": to_numpy(self.held_keys),
            "held_labels": to_numpy(self.held_labels),
            "widths": to_numpy(self.widths),
        }
        for k, (a, b) in enumerate(self.spans):
            out[f"sx{k}"] = to_numpy(self.sx[a:b])
            out[f"gram{k}"] = to_numpy(self.gram[k])
            out[f"xy{k}"] = to_numpy(self.xy[a:b])
            out[f"held{k}"] = to_numpy(self.held[:, a:b])
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.n = torch.as_tensor(state["n"], dtype=torch.int64)
        self.y = torch.as_tensor(state["y"], dtype=torch.float64)
        self.held_keys = torch.as_tensor(state["held_keys"], dtype=torch.int64)
        self.held_labels = torch.as_tensor(state["held_labels"], dtype=torch.int64)
        points = sum(1 for key in state if key.startswith("sx"))
        self.widths = torch.as_tensor(state["widths"], dtype=torch.int64)
        self._start([len(state[f"sx{k}"]) for k in range(points)], "cpu")
        for k, (a, b) in enumerate(self.spans):
            self.sx[a:b] = torch.as_tensor(state[f"sx{k}"])
            self.xy[a:b] = torch.as_tensor(state[f"xy{k}"])
            self.gram[k].copy_(torch.as_tensor(state[f"gram{k}"]))
        if points:
            self.held = torch.cat(
                [torch.as_tensor(state[f"held{k}"], dtype=torch.float32) for k in range(points)], 1
            )
        self._block.clear()

    def weights(
        self, k: int, components: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fitted probe at point ``k``: mean, std, W and the class prior, such that the class
        scores of features ``x`` are ``((x - mean) / std) @ W + prior``. With ``components``,
        the probe sees only the top ``components`` principal components of the standardised
        features: ``W = V (L + ridge I)^-1 V^T c`` with ``V``, ``L`` the leading eigenvectors and
        eigenvalues of their correlation matrix."""
        self._add_block()
        a, b = self.spans[k]
        n = int(self.n)
        sx, gram, xy = (
            to_numpy(t).astype(np.float64) for t in (self.sx[a:b], self.gram[k], self.xy[a:b])
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
        if self.spans:
            self._add_block()
            self._prune()
        if not self.spans or int(self.n) == 0 or len(self.held_keys) == 0:
            return np.full(self.num_points, np.nan)
        labels = to_numpy(self.held_labels)
        out = np.empty(self.num_points)
        # one BLAS thread: the matrices are small, and BLAS threads woken beside torch's idle
        # OpenMP threads made the eigendecompositions 2x slower on 2 cores (README "Speed")
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            for k in range(self.num_points):
                out[k] = self._held_accuracy(k, ratio, labels)
        return out

    def _held_accuracy(self, k: int, ratio: int | None, labels: np.ndarray) -> float:
        """The held-out accuracy of point ``k``'s probe."""
        mean, std, w, prior = self.weights(k, self.components(k, ratio))
        a, b = self.spans[k]
        x = to_numpy(self.held[:, a:b]).astype(np.float64)
        scores = ((x - mean) / std) @ w + prior
        return float((scores.argmax(1) == labels).mean())


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
