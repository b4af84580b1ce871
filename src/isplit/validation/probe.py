"""The logistic probe: a baseline predictor of post-split accuracy fitted at each validated
point on the head's outputs for the training images (global average pooling over the point's
image positions, standardisation, logistic regression), scored on the test images."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from isplit.graph.layout import Layout
from isplit.importance.gradcam import channels_and_positions

log = logging.getLogger("isplit")


def linear_probe(
    z_train: torch.Tensor,
    y_train: torch.Tensor,
    z_test: torch.Tensor,
    y_test: torch.Tensor,
    seed: int = 0,
    layout: Layout | None = None,
) -> float:
    """Accuracy of a logistic-regression probe on globally average-pooled activations: the mean
    over the image positions of ``layout`` (tokens that are not image positions left out), per
    channel; without a layout, over every axis after the first (N x C x positions)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def pool(z):
        if layout is not None and layout.known:
            return channels_and_positions(layout, z, z)[0].mean(2).numpy()
        return z.flatten(2).mean(2).numpy() if z.dim() > 2 else z.numpy()

    scaler = StandardScaler().fit(pool(z_train))
    clf = LogisticRegression(max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        # lbfgs may stop at max_iter on nearly separable points; the probe is a baseline and
        # its accuracy after 300 iterations is what is reported: one log line, not sklearn's
        # multi-line warning per point
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(pool(z_train)), y_train.numpy())
    if (np.asarray(clf.n_iter_) >= clf.max_iter).any():
        log.info("the logistic probe stopped at %d iterations before converging", clf.max_iter)
    return float(clf.score(scaler.transform(pool(z_test)), y_test.numpy()))
