"""Train or fine-tune a classifier on a data set (``isplit train``): how the demo weights are made.

One recipe for every model: SGD with Nesterov momentum 0.9 and weight decay 5e-4 (or, with
``optimizer="adamw"``, AdamW with weight decay 0.05 on weight matrices: the recipe ConvNeXt and
vision transformers need), a one-cycle learning rate (peak 0.05 for SGD, 1e-3 for AdamW, at
batch 128, scaled linearly with the batch size), cross-entropy with label smoothing 0.1, and
optional shift / flip augmentation done on the batch tensor.

The run is seeded and resumable: after every epoch the model, optimizer, scheduler and random
number generator states go to ``<out>.ckpt/last.pt``; rerunning the same command continues after
the last finished epoch and gives the same weights as an uninterrupted run (on the CPU). When
``out`` is written the checkpoint folder is removed; rerunning a finished command says so.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from isplit.data import LabelledDataset, limit_dataset, make_loader
from isplit.data.folders import HOLDOUT
from isplit.data.load import load_train_test
from isplit.data.preprocess import describe_preprocess
from isplit.errors import IsplitError
from isplit.models import (
    load_model,
    read_metadata,
    replace_final_layer,
    resolve_device,
    save_weights,
)
from isplit.models.loop import CHECKPOINT_FORMAT, OPTIMIZERS, TrainingRun
from isplit.models.weights import WEIGHTS_SUFFIXES, atomic_torch_save

log = logging.getLogger("isplit")

AUGMENTS = ("none", "shift", "shift+flip")
BASE_LR = {"sgd": 0.05, "adamw": 1e-3}  # peak learning rate at batch size 128
BASE_BATCH = 128
# The arguments that change the trained weights: a checkpoint or output made with other values
# of these is not this run's.
_RUN_ARGS = (
    "model", "weights", "data", "split", "epochs", "batch_size", "lr", "seed", "augment",
    "limit", "image_size", "mean", "std", "optimizer", "holdout",
)  # fmt: skip
# What a run made before an argument existed used: its value then.
_RUN_ARG_DEFAULTS = {"optimizer": "sgd", "holdout": HOLDOUT}


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
    if args["optimizer"] != "sgd":
        words += ["--optimizer", args["optimizer"]]
    if test_split != "test":
        words += ["--test-split", test_split]
    if args.get("holdout", HOLDOUT) != HOLDOUT:
        words += ["--holdout", args["holdout"]]
    words += ["--out", out]
    return shlex.join(str(w) for w in words)


def _differences(old: dict, new: dict) -> list[str]:
    def value(args: dict, k: str) -> Any:
        return args.get(k, _RUN_ARG_DEFAULTS.get(k))

    return [
        f"{k} {value(old, k)!r} -> {value(new, k)!r}"
        for k in _RUN_ARGS
        if value(old, k) != value(new, k)
    ]


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
    optimizer: str = "sgd",
    holdout: float | None = HOLDOUT,
) -> TrainResult:
    """Train ``model`` on ``data`` and write its weights to ``out`` (``.safetensors``/``.pth``).

    ``weights``: where to start; ``None`` or ``"none"`` is random init (for demo networks too:
    training is how their packaged weights are made), else a torchvision weights name or a file.
    When the model's class count differs from the data set's, a demo or torchvision model gets
    a new final layer; ``lr``: the one-cycle peak (default 0.05 / 1e-3 x batch/128, sgd / adamw).
    An image folder without split sub-folders is divided by a hash of each file's path:
    ``holdout`` of its images test, the others train (``split`` "train", ``test_split`` "test").
    """
    peak_lr = _check(epochs, out, augment, batch_size, lr, optimizer)
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
        "optimizer": optimizer,
        "holdout": float(HOLDOUT if holdout is None else holdout),
    }
    ckpt_path = Path(f"{out}.ckpt") / "last.pt"
    if Path(out).exists():
        return _already_trained(out, args, ckpt_path)
    checkpoint = _unfinished(ckpt_path, args)

    dev = resolve_device(device)
    torch.manual_seed(seed)
    lm = load_model(
        model, weights or "none", num_classes=None, image_size=image_size, mean=mean, std=std,
        seed=seed,
    )  # fmt: skip
    train_ds, test_ds, note = _datasets(args, lm.preprocess, data_root, download, test_split)
    net = _trainable(lm, train_ds, args, dev)
    if note:  # once nothing is left to refuse: a refusal stays one line
        print(f"isplit: {note}", file=sys.stderr)
    print(f"isplit: preprocessing: {describe_preprocess(lm.preprocess)}", file=sys.stderr)
    loader_kw = {"workers": workers, "skip_bad_images": skip_bad_images}
    run = TrainingRun.start(net, train_ds, args, dev, loader_kw)
    resumed_from = _run_epochs(run, test_ds, loader_kw, checkpoint, ckpt_path, progress)
    return _finish(run, lm, (out, data_root, test_split, test_ds), ckpt_path, resumed_from)


def _run_epochs(
    run: TrainingRun,
    test_ds: LabelledDataset | None,
    loader_kw: dict,
    checkpoint: dict | None,
    ckpt_path: Path,
    progress: bool,
) -> int:
    """Train the epochs left after ``checkpoint``'s, checkpointing each; the epoch resumed after."""
    epochs, batch_size = run.args["epochs"], run.args["batch_size"]
    if checkpoint is not None:
        run.restore(checkpoint)
        _report(f"resuming after epoch {run.done}/{epochs} from {ckpt_path}", progress)
    test_loader = make_loader(test_ds, batch_size, **loader_kw) if test_ds is not None else None
    resumed_from = run.done
    for epoch in range(run.done + 1, epochs + 1):
        entry = run.epoch(epoch, test_loader, progress)
        _report(_epoch_line(entry, epochs), progress)
        _save_checkpoint(ckpt_path, run.state())
    return resumed_from


def _finish(
    run: TrainingRun,
    lm,
    where: tuple[str, str | None, str, LabelledDataset | None],
    ckpt_path: Path,
    resumed_from: int,
) -> TrainResult:
    """Write the run to ``where`` (out, data root, test split, test set), drop its checkpoint."""
    out, data_root, test_split, test_ds = where
    out_info = {
        "out": out,
        "data_root": data_root,
        "test_split": test_split,
        "test_images": None if test_ds is None else len(test_ds),
    }
    result = _write(run, lm, out_info)
    shutil.rmtree(ckpt_path.parent, ignore_errors=True)
    return dataclasses.replace(result, resumed_from=resumed_from)


def _write(run: TrainingRun, lm, where: dict) -> TrainResult:
    """Write the trained network to ``where["out"]`` with its metadata (classes,
    preprocessing, accuracy, the command that reproduces it, the history)."""
    net, args, train_ds = run.net, run.args, run.train_ds
    net.eval().cpu()
    for p in net.parameters():
        p.requires_grad_(False)
    final = run.history[-1]
    out, test_split = where["out"], where["test_split"]
    metadata = {
        "model": lm.name,
        "weights": args["weights"],
        "classes": list(train_ds.classes),
        "preprocess": lm.preprocess.to_json(),
        "num_classes": len(train_ds.classes),
        "dataset": train_ds.name,
        "split": args["split"],
        "test_split": None if test_split == "none" else test_split,
        **({"holdout": share} if (share := _holdout_share(train_ds)) else {}),
        "accuracy": final["test_accuracy"],
        "test_images": where.get("test_images"),  # what the accuracy's interval rests on
        "train_loss": final["train_loss"],
        "epochs": args["epochs"],
        "seed": args["seed"],
        "command": command_line(args, out, where["data_root"], test_split),
        "train_args": args,
        "history": run.history,
    }
    save_weights(net, out, metadata)
    return TrainResult(
        out=out,
        model=lm.name,
        dataset=train_ds.name,
        epochs=args["epochs"],
        test_accuracy=final["test_accuracy"],
        train_loss=final["train_loss"],
        history=run.history,
        skipped_images=run.skipped,
    )


def _check(
    epochs: int, out: str, augment: str, batch_size: int, lr: float | None, optimizer: str
) -> float:
    """Refuse bad arguments; the peak learning rate."""
    if optimizer not in OPTIMIZERS:
        raise IsplitError(f"unknown --optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
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
    return float(lr) if lr is not None else BASE_LR[optimizer] * batch_size / BASE_BATCH


def _already_trained(out: str, args: dict, ckpt_path: Path) -> TrainResult:
    """``out`` exists: the result of this very command (nothing to do), else an error."""
    md = read_metadata(out)
    old = md.get("train_args")
    if isinstance(old, dict) and not _differences(old, args):
        shutil.rmtree(ckpt_path.parent, ignore_errors=True)  # left by a crash after writing
        return TrainResult(
            out=out,
            model=str(md.get("model", args["model"])),
            dataset=str(md.get("dataset", args["data"])),
            epochs=args["epochs"],
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


def _unfinished(ckpt_path: Path, args: dict) -> dict | None:
    """The checkpoint of an unfinished run of this command, if there is one."""
    checkpoint = _load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if checkpoint is not None and (diff := _differences(checkpoint["args"], args)):
        raise IsplitError(
            f"{ckpt_path} holds an unfinished run with other arguments ({'; '.join(diff)}); "
            f"rerun that command to finish it, or delete {ckpt_path.parent} to start over"
        )
    return checkpoint


def _datasets(
    args: dict, preprocess, data_root: str | None, download: bool, test_split: str
) -> tuple[LabelledDataset, LabelledDataset | None, str | None]:
    """The training images and, unless ``test_split`` is "none", the test images (never the
    same ones; a folder without split sub-folders is divided by its hold-out), and the line
    that says how such a folder was divided."""
    data, split, limit, seed = args["data"], args["split"], args["limit"], args["seed"]
    train_ds, test_ds, note = load_train_test(
        data,
        split,
        None if test_split == "none" else test_split,
        preprocess,
        root=data_root,
        download=download,
        holdout=args.get("holdout", HOLDOUT),
    )
    train_ds = limit_dataset(train_ds, limit, seed)
    if len(train_ds) == 0:
        raise IsplitError(f"the {split} split of {data} holds no images; check --data / --split")
    if test_ds is not None:
        test_ds = limit_dataset(test_ds, limit, seed)
        _check_classes(train_ds, test_ds)
    return train_ds, test_ds, note


def _holdout_share(ds: LabelledDataset) -> float | None:
    """The hold-out share a folder without split sub-folders was divided by, else None."""
    rec = ds.holdout
    return rec.get("share") if rec else None


def _trainable(lm, train_ds: LabelledDataset, args: dict, dev: torch.device) -> nn.Module:
    """The loaded network with as many outputs as the data set has classes, trainable, on
    ``dev``."""
    num_classes = len(train_ds.classes)
    net = lm.model
    if lm.num_classes != num_classes:
        if lm.source not in ("demo", "torchvision", "timm"):
            raise IsplitError(
                f"{args['model']} has {lm.num_classes} outputs but {args['data']} has "
                f"{num_classes} classes; make the factory return a model with {num_classes} "
                "outputs"
            )
        layer = replace_final_layer(net, num_classes)
        model, data = args["model"], args["data"]
        log.info("%s: new %d-class layer %s for %s", model, num_classes, layer, data)
    for p in net.parameters():
        p.requires_grad_(True)
    return net.to(dev).train()


def _epoch_line(entry: dict, epochs: int) -> str:
    test = entry["test_accuracy"]
    return (
        f"epoch {entry['epoch']}/{epochs}: train loss {entry['train_loss']:.4f}, train accuracy "
        f"{100 * entry['train_accuracy']:.2f} %"
        + ("" if test is None else f", test accuracy {100 * test:.2f} %")
        + f" ({entry['seconds']:.1f} s)"
    )
