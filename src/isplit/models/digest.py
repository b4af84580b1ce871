"""The weights fingerprint when a result needs it, not on every call.

A sha256 over all the weights costs about a second per GB (0.5 s for VGG16's 537 MB), which an
in-memory analysis does not need: only a run folder or a checkpoint records it. A
:class:`WeightsDigest` notes the weights as they are when it is made and computes their
fingerprint the first time it is asked for, or at once in a background thread
(:meth:`WeightsDigest.start`, overlapping the analysis's set-up) where a checkpoint will need it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

import torch
from torch import nn

from isplit.models.weights import weights_fingerprint

log = logging.getLogger("isplit")


def _versions(model: nn.Module) -> list[tuple[str, int]]:
    """Every state-dict tensor's in-place version counter: an optimiser step, ``copy_`` or
    ``load_state_dict`` changes it, moving the model to another device or memory format does not
    (nor its values)."""
    return [(k, getattr(t, "_version", 0)) for k, t in model.state_dict().items()]


class WeightsDigest:
    """The fingerprint (:func:`weights_fingerprint`) of ``model``'s weights as they are when the
    digest is made, computed when :meth:`value` is first called. Holds only a weak reference to
    the model: when the model is gone or its weights were changed in place by then, the
    fingerprint is unknown (``None``, with a warning)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self._versions = _versions(model)
        self._value: str | None = None
        self._done = False
        self._thread: threading.Thread | None = None
        self.seconds = 0.0  # how long computing it took (in the background or not)

    def start(self) -> WeightsDigest:
        """Compute the fingerprint now, in a background thread (sha256 releases the GIL)."""
        model = self._model()
        if model is None or self._done or self._thread is not None:
            return self
        state = {k: t.detach() for k, t in model.state_dict().items()}  # kept until hashed
        self._thread = threading.Thread(
            target=self._compute, args=(state,), name="isplit-weights-sha256", daemon=True
        )
        self._thread.start()
        return self

    def _compute(self, state: dict[str, torch.Tensor]) -> None:
        started = time.perf_counter()
        self._value = weights_fingerprint(state)
        self.seconds = time.perf_counter() - started
        self._done = True

    def value(self) -> str | None:
        """The fingerprint; ``None`` when the weights are no longer the ones it was made for."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._done:
            return self._value
        model = self._model()
        if model is None or _versions(model) != self._versions:
            log.warning(
                "the weights fingerprint is not recorded: the model was %s after the analysis; "
                "validate and export will not be able to check that they use the same weights",
                "freed" if model is None else "changed",
            )
            self._done = True
            return None
        self._compute({k: t.detach() for k, t in model.state_dict().items()})
        return self._value
