"""Training the bottleneck at a split point on the head's cached outputs (the tail frozen, or
fine-tuned with ``finetune="tail"``), and measuring the split network on the test images."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from isplit.validation.bottleneck import Bottleneck
from isplit.validation.settings import Settings


def train_bottleneck(
    tail: nn.Module,
    bottleneck: Bottleneck,
    z: torch.Tensor,
    y: torch.Tensor,
    settings: Settings,
    device: str | torch.device,
    teacher: torch.Tensor | None = None,
    progress: bool = False,
    desc: str = "",
) -> list[float]:
    """Train the bottleneck (and the tail with finetune="tail") on cached head outputs ``z``.
    Returns the mean loss of each epoch."""
    params = list(bottleneck.parameters())
    if settings.finetune == "tail":
        for p in tail.parameters():
            p.requires_grad_(True)
        params += [p for p in tail.parameters()]
        tail.train()
    else:
        tail.eval()
    opt = torch.optim.Adam(params, lr=settings.lr)
    steps = settings.epochs * math.ceil(len(z) / settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(settings.training_seed)
    scale = float(z[: 4 * settings.batch_size].float().pow(2).mean()) or 1.0
    losses = []
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not progress or not sys.stderr.isatty())
    bottleneck.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(z), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(z), settings.batch_size):
            idx = order[i : i + settings.batch_size]
            if len(idx) < 2:  # batch norm needs two
                continue
            zb = z[idx].to(device)
            soft = None if teacher is None else teacher[idx].to(device)
            loss = _loss(tail, bottleneck, zb, y[idx].to(device), soft, scale, settings)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
        losses.append(total / max(count, 1))
    bar.close()
    bottleneck.eval()
    tail.eval()
    return losses


def _loss(tail, bottleneck, zb, yb, teacher, scale: float, settings: Settings) -> torch.Tensor:
    """Cross-entropy, plus the reconstruction error relative to the activation's mean square
    (``recon``), plus the KL divergence to the unsplit model's logits (``distill``)."""
    decoded = bottleneck(zb)
    logits = tail(decoded)
    loss = F.cross_entropy(logits, yb)
    if settings.recon > 0:
        loss = loss + settings.recon * F.mse_loss(decoded, zb) / scale
    if teacher is not None and settings.distill > 0:
        soft = F.log_softmax(teacher, 1)
        loss = loss + settings.distill * F.kl_div(
            F.log_softmax(logits, 1), soft, log_target=True, reduction="batchmean"
        )
    return loss


def correct(
    tail: nn.Module,
    bottleneck: Bottleneck,
    z: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: str | torch.device,
    int8: bool = False,
) -> np.ndarray:
    """Which test images the split network classifies right; ``int8``: with the code quantised
    as it would cross the link (per image, 8-bit affine)."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(z), batch_size):
            code = bottleneck.encoder(z[i : i + batch_size].to(device))
            if int8:
                code = bottleneck.quantise(code)
            preds.append(tail(bottleneck.decoder(code)).argmax(1).cpu())
    return (torch.cat(preds) == y).numpy()
