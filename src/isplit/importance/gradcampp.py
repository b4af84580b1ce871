"""Grad-CAM++ (Chattopadhay et al., WACV 2018, https://arxiv.org/abs/1710.11063): Grad-CAM's
pipeline with other channel weights, from the same one forward and one backward pass.

With the score's higher derivatives taken as powers of its gradient ``g = d s / d A`` (exact
for a score whose exponential is differentiated, the paper's eq. 19, and what pytorch-grad-cam's
``GradCAMPlusPlus.get_cam_weights`` computes)::

    a_cij   = g_cij^2 / (2 g_cij^2 + (sum_ij A_cij) g_cij^3 + eps)     (0 where g_cij = 0)
    alpha_c = sum_ij a_cij ReLU(g_cij)

The map is then Grad-CAM's: ``M = ReLU(reduce_c alpha_c A_c)`` with the same ``mean`` / ``sum``
channel reduction, over the channels and image positions of the point's layout.
"""

from __future__ import annotations

import torch

from isplit.importance.gradcam import GradCAM

#: Keeps the denominator off zero, as pytorch-grad-cam does.
EPS = 1e-6


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ maps / CUI values at every point (``cam="gradcam++"``)."""

    def channel_weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """``alpha`` [N, C] from activation and gradient [N, C, positions], in float32."""
        a, g = activation.float(), gradient.float()
        g2 = g * g
        total = a.sum(2, keepdim=True)  # sum_ij A_cij, [N, C, 1]
        aij = g2 / (2 * g2 + total * (g2 * g) + EPS)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        return (aij * torch.relu(g)).sum(2)
