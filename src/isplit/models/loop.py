"""The training loop of ``isplit train``: one epoch at a time (:class:`TrainingRun`), with the
augmentation done on the batch tensor, evaluation, and the state a checkpoint resumes from."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from isplit.data import LabelledDataset, make_loader
from isplit.errors import IsplitError

SHIFT_PIXELS = 2
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# AdamW (ConvNeXt's and ViT's own recipe: SGD barely moves their layer scales and attention):
# decoupled weight decay 0.05 on the weight matrices only, none on biases, norms, layer scales.
ADAMW_WEIGHT_DECAY = 0.05
OPTIMIZERS = ("sgd", "adamw")
LABEL_SMOOTHING = 0.1
CHECKPOINT_FORMAT = 1


def make_optimizer(net: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """``sgd``: Nesterov momentum, weight decay on every parameter; ``adamw``: AdamW with weight
    decay on the parameters of two or more dimensions only."""
    if name == "sgd":
        return torch.optim.SGD(
            net.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
        )
    if name != "adamw":
        raise IsplitError(f"unknown --optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    params = [p for p in net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": ADAMW_WEIGHT_DECAY},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``SHIFT_PIXELS`` (edge-replicating) and, with ``+flip``, flips.

    Works on a whole ``[B, C, H, W]`` batch with tensor ops; the random numbers come from the
    CPU ``generator`` so that a run is reproducible on any device.
    """
    if mode == "none":
        return x
    b, _, h, w = x.shape
    p = SHIFT_PIXELS
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator)
    rows = (dy + torch.arange(h)).to(x.device)  # [B, H]
    cols = (dx + torch.arange(w)).to(x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice: the result is [B, H, W, C].
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if mode == "shift+flip":
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def evaluate(model: nn.Module, loader: Iterable, device: torch.device) -> float:
    """Top-1 accuracy (fraction) of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingRun:
    """The state of a training run: the network, optimizer, schedule and random numbers, and
    the epochs done so far."""

    net: nn.Module
    train_ds: LabelledDataset
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    device: torch.device
    args: dict
    loader_kw: dict
    drop_last: bool
    criterion: nn.Module = field(
        default_factory=lambda: nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    )
    history: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    done: int = 0  # epochs finished

    @classmethod
    def start(
        cls, net: nn.Module, train_ds: LabelledDataset, args: dict, dev: torch.device,
        loader_kw: dict,
    ) -> TrainingRun:  # fmt: skip
        """The optimizer (:func:`make_optimizer`) and a one-cycle schedule over all epochs."""
        batch_size, peak_lr = args["batch_size"], args["lr"]
        # drop_last: a final batch of one image would break batch norm.
        drop_last = len(train_ds) > batch_size
        steps = len(make_loader(train_ds, batch_size, drop_last=drop_last, **loader_kw))
        optimizer = make_optimizer(net, args["optimizer"], peak_lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak_lr, total_steps=args["epochs"] * steps
        )
        generator = torch.Generator().manual_seed(args["seed"])
        return cls(net, train_ds, optimizer, scheduler, generator, dev, args, loader_kw, drop_last)

    def restore(self, checkpoint: dict) -> None:
        self.net.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"], self.generator, self.device)
        self.history = list(checkpoint["history"])
        self.done = int(checkpoint["epoch"])

    def state(self) -> dict:
        """What a checkpoint holds to resume after the last finished epoch."""
        return {
            "format": CHECKPOINT_FORMAT,
            "args": self.args,
            "epoch": self.done,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(self.generator, self.device),
            "history": self.history,
        }

    def epoch(self, epoch: int, test_loader: Iterable | None, progress: bool) -> dict:
        """Train one epoch; its entry in the history (losses, accuracies, seconds)."""
        a, dev = self.args, self.device
        t0 = time.perf_counter()
        loader = make_loader(
            self.train_ds, a["batch_size"], shuffle=True, seed=a["seed"] + epoch,
            drop_last=self.drop_last, **self.loader_kw,
        )  # fmt: skip
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        seen = 0
        bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{a['epochs']}", unit="batch",
                   leave=False, disable=not progress or not sys.stderr.isatty())  # fmt: skip
        for x, y in bar:
            x = augment_batch(x.to(dev, non_blocking=True), a["augment"], self.generator)
            y = y.to(dev, non_blocking=True)
            logits = self.net(x)
            loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        self.skipped += loader.skipped
        if seen == 0:
            raise IsplitError(f"no readable images in the {a['split']} split of {a['data']}")
        entry = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / seen,
            "train_accuracy": int(correct) / seen,
            "test_accuracy": evaluate(self.net, test_loader, dev) if test_loader else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self.history.append(entry)
        self.done = epoch
        return entry
