"""The settings of a validation sweep: what decides the trained bottlenecks (and so the
resumable per-point results) and how the statistics are computed."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from isplit.errors import IsplitError

#: The settings that decide a point's trained bottleneck: a finished point made with others is
#: not reused.
TRAINING_KEYS = (
    "ratio",
    "halve",
    "epochs",
    "batch_size",
    "lr",
    "finetune",
    "distill",
    "recon",
    "train_limit",
    "test_limit",
    "seed",
)

#: Decides the trained bottlenecks too, but enters the fingerprint only when not 0, so that a
#: sweep made before it existed (bottleneck seed 0) still resumes.
BOTTLENECK_SEED = "bottleneck_seed"


#: Fewer bootstrap resamples than this give no interval worth the name.
MIN_BOOTSTRAP = 10


@dataclass
class Settings:
    ratio: int = 8
    halve: bool = False
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    finetune: str = "none"  # or "tail"
    distill: float = 0.0  # weight of the distillation loss (KL to the unsplit model's logits)
    recon: float = 1.0  # weight of the reconstruction loss (MSE / mean square of the activation)
    train_limit: int | None = 8000
    test_limit: int | None = 5000
    seed: int = 0  # the model's; the images' subsets, the probe and the bootstrap
    bottleneck_seed: int = 0  # the bottlenecks' initialisation and training order
    k: int = 3
    n_boot: int = 1000
    flop_shares: tuple[float, ...] = (0.25, 0.5)
    byte_budgets: tuple[int, ...] | None = None  # default: the median bytes of admissible points
    # how the images are read (as in the analysis); they decide no result
    workers: int | None = None  # data-loading processes (None: chosen for the data set)
    skip_bad_images: bool = False  # skip unreadable image files with a warning

    def fingerprint(self) -> str:
        """A short hash of :data:`TRAINING_KEYS`."""
        keys = TRAINING_KEYS + ((BOTTLENECK_SEED,) if self.bottleneck_seed else ())
        text = json.dumps({k: getattr(self, k) for k in keys})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def training_seed(self) -> int:
        """The seed of the bottlenecks' initialisation and training order: ``seed`` with
        bottleneck seed 0 (as before bottleneck seeds), else one drawn from both."""
        if not self.bottleneck_seed:
            return self.seed
        digest = hashlib.sha256(f"{self.seed}:{self.bottleneck_seed}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def check(self) -> None:
        """An error for settings no sweep can run with."""
        if self.finetune not in ("none", "tail"):
            raise IsplitError(f"--finetune must be none or tail, not {self.finetune!r}")
        if self.bottleneck_seed < 0:
            raise IsplitError(f"--bottleneck-seed must be 0 or more, not {self.bottleneck_seed}")
        if self.epochs < 1:
            raise IsplitError("--epochs must be at least 1")
        if not (math.isfinite(self.lr) and self.lr >= 0):  # 0: the bottleneck stays as it starts
            raise IsplitError(f"--lr must be a number, 0 or more (e.g. 2e-3), not {self.lr}")
        for flag, value in (("--recon", self.recon), ("--distill", self.distill)):
            if not (math.isfinite(value) and value >= 0):
                raise IsplitError(f"{flag} is a loss weight: give 0 or more, not {value}")
        if self.k < 1:
            raise IsplitError(f"--k must be at least 1 (retrained points to fit on), not {self.k}")
        if self.n_boot < MIN_BOOTSTRAP:
            raise IsplitError(
                f"--bootstrap must be at least {MIN_BOOTSTRAP} resamples (the intervals need "
                f"them; 1000 by default), not {self.n_boot}"
            )
        if self.workers is not None and self.workers < 0:
            raise IsplitError(f"--workers must be at least 0, not {self.workers}")
        for flag, value in (("--train-limit", self.train_limit), ("--test-limit", self.test_limit)):
            if value is not None and value < 1:
                raise IsplitError(f"{flag} must be at least 1, not {value}")

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
