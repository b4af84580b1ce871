"""Train or fine-tune a classifier on a data set (``isplit train``): how the demo weights are made.

One recipe for every model: SGD with Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle
learning rate (peak 0.05 at batch 128, scaled linearly with the batch size), cross-entropy with
label smoothing 0.1, and optional shift / flip augmentation done on the batch tensor.

The run is seeded and resumable: after every epoch the model, optimizer, scheduler and random
number generator states go to ``<out>.ckpt/last.pt``; rerunning the same command continues after
the last finished epoch and gives the same weights as an uninterrupted run (on the CPU). When
``out`` is written the checkpoint folder is removed; rerunning a finished command says so.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from isplit.data import LabelledDataset, limit_dataset, load_dataset, make_loader
from isplit.errors import IsplitError
from isplit.models import (
    WEIGHTS_SUFFIXES,
    atomic_torch_save,
    load_model,
    read_metadata,
    replace_final_layer,
    resolve_device,
    save_weights,
)

log = logging.getLogger("isplit")

AUGMENTS = ("none", "shift", "shift+flip")
SHIFT_PIXELS = 2
BASE_LR = 0.05  # peak learning rate at batch size 128
BASE_BATCH = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.1
CHECKPOINT_FORMAT = 1
# The arguments that change the trained weights: a checkpoint or output made with other values
# of these is not this run's.
_RUN_ARGS = (
    "model", "weights", "data", "split", "epochs", "batch_size", "lr", "seed", "augment",
    "limit", "image_size", "mean", "std",
)  # fmt: skip


@dataclass
class TrainResult:
    """What a training run produced."""

    out: str
    model: str
    dataset: str
    epochs: int
    test_accuracy: float | None  # fraction in [0, 1]; None without a test split
    train_loss: float | None  # mean loss of the last epoch
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    resumed_from: int = 0  # epochs already done when this call started
    already_done: bool = False  # the output existed: nothing was trained
    skipped_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        acc = "no test split" if self.test_accuracy is None else (
            f"test accuracy {100 * self.test_accuracy:.2f} %")  # fmt: skip
        epochs = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
        what = f"{self.model} on {self.dataset}, {epochs}: {acc}"
        if self.already_done:
            return f"already trained ({what}): {self.out}; delete it to train again"
        resumed = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        return f"trained {what}{resumed}\nwrote {self.out}"

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


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


def evaluate(model: nn.Module, loader, device: torch.device) -> float:
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


def command_line(args: dict[str, Any], out: str, data_root: str | None, test_split: str) -> str:
    """The ``isplit train`` command that reproduces a run."""
    words = ["isplit", "train", "--model", args["model"]]
    if args["weights"] is not None:
        words += ["--weights", args["weights"]]
    words += ["--data", args["data"]]
    if args["split"] != "train":
        words += ["--split", args["split"]]
    if data_root is not None:
        words += ["--data-root", data_root]
    if args["limit"] is not None:
        words += ["--limit", args["limit"]]
    if args["image_size"] is not None:
        words += ["--image-size", args["image_size"]]
    for key in ("mean", "std"):
        if args[key] is not None:
            words += [f"--{key}", *args[key]]
    words += ["--epochs", args["epochs"], "--batch-size", args["batch_size"]]
    words += ["--lr", args["lr"], "--seed", args["seed"], "--augment", args["augment"]]
    if test_split != "test":
        words += ["--test-split", test_split]
    words += ["--out", out]
    return shlex.join(str(w) for w in words)


def _differences(old: dict, new: dict) -> list[str]:
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in _RUN_ARGS if old.get(k) != new.get(k)]


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically (a function of its own so tests can interrupt after it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, state)


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, or not ours
        raise IsplitError(
            f"cannot read checkpoint {path} ({e}); delete {path.parent} to start over"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise IsplitError(f"{path} is not an isplit training checkpoint; delete {path.parent}")
    return state


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


def _report(line: str, progress: bool) -> None:
    if progress:
        tqdm.write(f"isplit: {line}", file=sys.stderr)
    else:
        log.info(line)


def _check_classes(train_ds: LabelledDataset, test_ds: LabelledDataset | None) -> None:
    if test_ds is not None and list(test_ds.classes) != list(train_ds.classes):
        raise IsplitError(
            f"the {test_ds.split} split has other classes than the {train_ds.split} split "
            f"({len(test_ds.classes)} vs {len(train_ds.classes)}); give both splits the same "
            "class folders, or pass --test-split none"
        )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def train(
    *,
    model: str,
    weights: str | None,
    data: str,
    split: str = "train",
    data_root: str | None = None,
    download: bool = False,
    epochs: int,
    out: str,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    augment: str = "shift",
    device: str = "auto",
    limit: int | None = None,
    workers: int | None = None,
    skip_bad_images: bool = False,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = True,
    test_split: str = "test",
) -> TrainResult:
    """Train ``model`` on ``data`` and write its weights to ``out`` (``.safetensors``/``.pth``).

    ``weights``: where to start; ``None`` or ``"none"`` is random init (for demo networks too:
    training is how their packaged weights are made), else a torchvision weights name or a file.
    When the model's class count differs from the data set's, a demo or torchvision model gets
    a new final layer; ``lr`` is the peak of the one-cycle schedule (default 0.05 x batch/128).
    """
    if epochs < 1:
        raise IsplitError(f"--epochs must be at least 1, not {epochs}")
    if Path(out).suffix.lower() not in WEIGHTS_SUFFIXES:
        raise IsplitError(
            f"--out {out!r}: unknown extension; use one of {', '.join(WEIGHTS_SUFFIXES)}"
        )
    if augment not in AUGMENTS:
        raise IsplitError(f"unknown --augment {augment!r}; use one of {', '.join(AUGMENTS)}")
    if batch_size < 1:
        raise IsplitError(f"--batch-size must be at least 1, not {batch_size}")
    if lr is not None and not lr > 0:
        raise IsplitError(f"--lr must be positive, not {lr}")
    peak_lr = float(lr) if lr is not None else BASE_LR * batch_size / BASE_BATCH
    if weights is not None and weights.lower() == "none":
        weights = None
    args: dict[str, Any] = {
        "model": model,
        "weights": weights,
        "data": data,
        "split": split,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": peak_lr,
        "seed": int(seed),
        "augment": augment,
        "limit": limit,
        "image_size": image_size,
        "mean": None if mean is None else [float(m) for m in mean],
        "std": None if std is None else [float(s) for s in std],
    }
    out_path = Path(out)
    ckpt_path = Path(f"{out}.ckpt") / "last.pt"

    if out_path.exists():
        md = read_metadata(out)
        old = md.get("train_args")
        if isinstance(old, dict) and not _differences(old, args):
            shutil.rmtree(ckpt_path.parent, ignore_errors=True)  # left by a crash after writing
            return TrainResult(
                out=out,
                model=str(md.get("model", model)),
                dataset=str(md.get("dataset", data)),
                epochs=epochs,
                test_accuracy=md.get("accuracy"),
                train_loss=md.get("train_loss"),
                already_done=True,
            )
        why = (
            f"it was trained with other arguments ({'; '.join(_differences(old, args))})"
            if isinstance(old, dict)
            else "isplit cannot tell whether this command wrote it"
        )
        raise IsplitError(f"{out} already exists and {why}; delete it or choose another --out")

    checkpoint = _load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if checkpoint is not None and (diff := _differences(checkpoint["args"], args)):
        raise IsplitError(
            f"{ckpt_path} holds an unfinished run with other arguments ({'; '.join(diff)}); "
            f"rerun that command to finish it, or delete {ckpt_path.parent} to start over"
        )

    dev = resolve_device(device)
    torch.manual_seed(seed)
    lm = load_model(
        model,
        weights or "none",
        num_classes=None,
        image_size=image_size,
        mean=mean,
        std=std,
        seed=seed,
    )
    train_ds = limit_dataset(
        load_dataset(data, split, lm.preprocess, root=data_root, download=download), limit, seed
    )
    if len(train_ds) == 0:
        raise IsplitError(f"the {split} split of {data} holds no images; check --data / --split")
    test_ds = None
    if test_split != "none":
        test_ds = limit_dataset(
            load_dataset(data, test_split, lm.preprocess, root=data_root, download=download),
            limit,
            seed,
        )
        _check_classes(train_ds, test_ds)
    num_classes = len(train_ds.classes)
    net = lm.model
    if lm.num_classes != num_classes:
        if lm.source not in ("demo", "torchvision"):
            raise IsplitError(
                f"{model} has {lm.num_classes} outputs but {data} has {num_classes} classes; "
                f"make the factory return a model with {num_classes} outputs"
            )
        layer = replace_final_layer(net, num_classes)
        log.info("%s: new %d-class layer %s for %s", model, num_classes, layer, data)
    for p in net.parameters():
        p.requires_grad_(True)
    net.to(dev).train()

    # drop_last: a final batch of one image would break batch norm.
    drop_last = len(train_ds) > batch_size
    loader_kw = {"workers": workers, "skip_bad_images": skip_bad_images}
    steps = len(make_loader(train_ds, batch_size, drop_last=drop_last, **loader_kw))
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=peak_lr,
        momentum=MOMENTUM,
        nesterov=True,
        weight_decay=WEIGHT_DECAY,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lr, total_steps=epochs * steps
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start = 0
    if checkpoint is not None:
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"], generator, dev)
        history = list(checkpoint["history"])
        start = int(checkpoint["epoch"])
        _report(f"resuming after epoch {start}/{epochs} from {ckpt_path}", progress)
    test_loader = make_loader(test_ds, batch_size, **loader_kw) if test_ds is not None else None
    bar_off = not progress or not sys.stderr.isatty()
    skipped: list[str] = []

    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        loader = make_loader(
            train_ds, batch_size, shuffle=True, seed=seed + epoch, drop_last=drop_last, **loader_kw
        )
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        seen = 0
        bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   leave=False, disable=bar_off)  # fmt: skip
        for x, y in bar:
            x = augment_batch(x.to(dev, non_blocking=True), augment, generator)
            y = y.to(dev, non_blocking=True)
            logits = net(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        skipped += loader.skipped
        if seen == 0:
            raise IsplitError(f"no readable images in the {split} split of {data}")
        entry = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / seen,
            "train_accuracy": int(correct) / seen,
            "test_accuracy": evaluate(net, test_loader, dev) if test_loader else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        history.append(entry)
        test = entry["test_accuracy"]
        _report(
            f"epoch {epoch}/{epochs}: train loss {entry['train_loss']:.4f}, train accuracy "
            f"{100 * entry['train_accuracy']:.2f} %"
            + ("" if test is None else f", test accuracy {100 * test:.2f} %")
            + f" ({entry['seconds']:.1f} s)",
            progress,
        )
        _save_checkpoint(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "args": args,
                "epoch": epoch,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(generator, dev),
                "history": history,
            },
        )

    net.eval().cpu()
    for p in net.parameters():
        p.requires_grad_(False)
    final = history[-1]
    metadata = {
        "model": lm.name,
        "weights": weights,
        "classes": list(train_ds.classes),
        "preprocess": lm.preprocess.to_json(),
        "num_classes": num_classes,
        "dataset": train_ds.name,
        "split": split,
        "test_split": None if test_split == "none" else test_split,
        "accuracy": final["test_accuracy"],
        "train_loss": final["train_loss"],
        "epochs": epochs,
        "seed": seed,
        "command": command_line(args, out, data_root, test_split),
        "train_args": args,
        "history": history,
    }
    save_weights(net, out, metadata)
    shutil.rmtree(ckpt_path.parent, ignore_errors=True)
    return TrainResult(
        out=out,
        model=lm.name,
        dataset=train_ds.name,
        epochs=epochs,
        test_accuracy=final["test_accuracy"],
        train_loss=final["train_loss"],
        history=history,
        resumed_from=start,
        skipped_images=skipped,
    )
