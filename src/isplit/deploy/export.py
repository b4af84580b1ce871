"""Export a network cut at a split point (the parts: :mod:`isplit.deploy.parts`).

:func:`export_split` writes one folder:

- ``head.onnx`` (head, + the bottleneck's encoder) and ``tail.onnx`` ((decoder +) tail), with a
  dynamic batch dimension; ``tail_int8.onnx``, the tail fed with the 8-bit code (it dequantises
  first). Each is checked against PyTorch with onnxruntime on real inputs.
- ``head.pt2`` / ``tail.pt2``: the same programs for PyTorch (``torch.export``; TorchScript
  ``.ts`` where ``torch.export`` fails). isplit never loads them itself (a ``.pt2`` may hold
  pickled data); they are for users who stay in PyTorch, on files they made.
- ``bottleneck.safetensors`` with ``--bottleneck``: the trained encoder and decoder.
- ``manifest.json`` (:class:`~isplit.deploy.manifest.Manifest`).
- ``triton/<name>/`` and ``triton/<name>-int8/``: an NVIDIA Triton model repository serving the
  tail (``config.pbtxt`` + ``1/model.onnx``), which KServe's Triton runtime serves unchanged.

The folder is built beside ``out`` and renamed into place at the end: a failed export leaves
nothing behind. :func:`isplit.deploy.runtime.load_programs` runs the parts on numpy arrays, with
onnxruntime (the ``.onnx`` files) or PyTorch (the network rebuilt from its recorded weights).
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from isplit.checks import Check, accuracy_vs_chance, reused_accuracy
from isplit.checks import to_json as checks_json
from isplit.deploy.accuracy import accuracy_block, check_learned, validated
from isplit.deploy.manifest import (
    ACTIVATION,
    MANIFEST,
    Manifest,
    check_name,
    default_name,
    sha256_file,
)
from isplit.deploy.parts import (
    BOTTLENECK_FILE,
    HEAD,
    PARTS,
    TAIL,
    TAIL_INT8,
    Dequantize,
    Split,
    first_line,
    require,
    split_parts,
)
from isplit.deploy.runtime import onnx_runner
from isplit.deploy.staging import build_folder, replace
from isplit.deploy.triton import TRITON_MAX_BATCH, write_triton
from isplit.errors import IsplitError, write_error
from isplit.io import atomic_write_bytes
from isplit.models import LoadedModel
from isplit.runfolder import RunFolder
from isplit.validation.bottleneck import dequantize_uint8, quantize_uint8

log = logging.getLogger("isplit")

#: ONNX and PyTorch outputs may differ by float rounding only: at most this much relative to
#: the largest magnitude of the output.
TOLERANCE = 1e-3


def find_bottleneck(run: str | Path, point: str) -> Path:
    """The bottleneck a validation run (``isplit validate``) trained at ``point``."""
    from isplit.validation import bottleneck_file

    run = Path(run)
    path = bottleneck_file(run, point)
    if path.is_file():
        return path
    folder = RunFolder(run) / RunFolder.VALIDATION_POINTS
    if not folder.is_dir():
        raise IsplitError(f"{run} is not a validation run (no validation_points/ in it)")
    trained = sorted(f.stem for f in folder.glob("*.safetensors"))
    done = (folder / f"{path.stem}.json").is_file()
    hint = (
        "it was validated before isplit saved bottlenecks: validate it again in a new folder"
        if done
        else f"it has bottlenecks for {', '.join(trained) or 'no point'}"
    )
    raise IsplitError(f"{run} has no trained bottleneck at {point}; {hint}")


def check_images(
    loaded: LoadedModel, data: str, split: str, root: str | None, n: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None]:
    """``n`` images of a data set to check an export on, with the model's preprocessing, and
    their labels; ``(None, None, why)`` when the data set is not available (the check then uses
    random inputs)."""
    from isplit.data import limit_dataset, load_dataset, make_loader

    if n < 2:
        raise IsplitError(f"--check-images must be at least 2, not {n}")
    try:
        ds = limit_dataset(load_dataset(data, split, loaded.preprocess, root=root), n)
        batches = list(make_loader(ds, n, workers=0))
    except IsplitError as e:
        return None, None, f"checking the export on random inputs: {e}"
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), None


def export_split(
    loaded: LoadedModel,
    point: str,
    out: str | Path,
    *,
    bottleneck: str | Path | None = None,
    name: str | None = None,
    classes: list[str] | None = None,
    check_inputs: torch.Tensor | None = None,
    check_labels: torch.Tensor | None = None,
    max_batch: int = TRITON_MAX_BATCH,
    allow_unlearned: bool = False,
    leaf_modules: Sequence[str] = (),
    analysis_accuracy: tuple[float, int] | None = None,
) -> Manifest:
    """Export ``loaded``'s network cut at ``point`` into the folder ``out`` (see the module
    docstring) and return its manifest. ``check_inputs`` (preprocessed images [N, C, H, W]) are
    what the ONNX programs are checked on, without them random inputs; with ``check_labels``
    the manifest records the accuracies on them. A bottleneck its validation marked as not
    learned is refused unless ``allow_unlearned``. ``leaf_modules``: those the analysis traced
    as one node (``Analysis.leaf_modules``: its points are cuts of that graph), recorded in the
    manifest for the network's rebuilding. ``analysis_accuracy`` (accuracy, images) of the
    analysis the point comes from: with ``check_labels``, checked against the unsplit accuracy
    measured here (``manifest.checks["self_checks"]``). A failed write (a full disk) raises
    :class:`IsplitError` and leaves nothing behind."""
    require("onnx", "onnxscript", "onnxruntime")
    out = Path(out)
    _check_out(out)
    name = check_name(name) if name else default_name(loaded.name)
    if max_batch < 1:
        raise IsplitError(f"the maximum batch must be at least 1, not {max_batch}")
    record = None
    if bottleneck is not None:
        record = validated(bottleneck, point)
        check_learned(record, point, allow_unlearned)
    split = split_parts(loaded, point, bottleneck, leaf_modules)
    x, what = _inputs(loaded, check_inputs, check_labels)
    names = _class_names(loaded, classes)
    try:
        with build_folder(out) as tmp:
            manifest, predicted = _write(split, loaded, (point, bottleneck), x, tmp, name=name,
                                         classes=names, max_batch_size=max_batch)  # fmt: skip
            if leaf_modules:  # what rebuilds the graph the point is a cut of
                manifest.model["leaf_modules"] = list(leaf_modules)
            manifest.checks["inputs"] = f"{len(x)} {what}"
            manifest.accuracy = accuracy_block(record, predicted, check_labels)
            manifest.checks["self_checks"] = checks_json(
                _self_checks(manifest.accuracy, analysis_accuracy, len(names))
            )
            write_triton(manifest, tmp, max_batch)
            manifest.save(tmp)
            replace(tmp, out)
    except OSError as e:
        message = write_error(e, out)
        if message is None:
            raise
        raise IsplitError(message) from None
    return manifest


def _self_checks(
    accuracy: dict | None, analysis: tuple[float, int] | None, classes: int
) -> list[Check]:
    """The unsplit network's accuracy on the labelled check images against chance and against
    the analysis the export comes from."""
    if not accuracy or accuracy.get("unsplit") is None:
        return []
    unsplit, n = float(accuracy["unsplit"]), int(accuracy["check_images"])
    out = [accuracy_vs_chance(unsplit, n, classes)]
    if analysis is not None:
        reused = reused_accuracy("export", analysis[0], analysis[1], unsplit, n)
        out += [reused] if reused is not None else []
    return out


def _inputs(
    loaded: LoadedModel, x: torch.Tensor | None, labels: torch.Tensor | None
) -> tuple[torch.Tensor, str]:
    """The images to check the export on (random ones without ``x``), and what they are."""
    pp = loaded.preprocess
    input_shape = (pp.channels, pp.size, pp.size)
    if x is None:
        x = torch.randn(16, *input_shape, generator=torch.Generator().manual_seed(0))
        what = "random inputs"
    else:
        what = "real inputs"
    x = x.float()
    if tuple(x.shape[1:]) != input_shape or len(x) < 2:
        raise IsplitError(
            f"the check inputs must be at least 2 images of shape {list(input_shape)}, not "
            f"{list(x.shape)}"
        )
    if labels is not None and len(labels) != len(x):
        raise IsplitError(f"{len(labels)} check labels for {len(x)} check images; pass one each")
    return x, what


def _class_names(loaded: LoadedModel, classes: list[str] | None) -> list[str]:
    names = list(classes or loaded.classes or [])
    if names and len(names) != loaded.num_classes:
        raise IsplitError(
            f"{len(names)} class names for a model with {loaded.num_classes} outputs; pass "
            "names that fit the model"
        )
    return names or [str(i) for i in range(loaded.num_classes)]


def _write(
    split: Split,
    loaded: LoadedModel,
    at: tuple[str, str | Path | None],
    x: torch.Tensor,
    folder: Path,
    **describe,
) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Write the programs (and the bottleneck) of the cut ``at`` (point, bottleneck file) into
    ``folder`` and check them on ``x``: the manifest (``describe``: its name and classes), and
    the predictions of the check (:func:`_check`)."""
    from isplit import __version__

    point, bottleneck = at
    pytorch = _write_programs(split, x[:2], folder)
    checks, predicted = _check(split, loaded, x, folder)
    if split.bottleneck is not None:
        shutil.copyfile(bottleneck, folder / BOTTLENECK_FILE)
    pp = loaded.preprocess
    manifest = Manifest(
        point=point,
        input_shape=(pp.channels, pp.size, pp.size),
        preprocess=pp.to_json(),
        transmitted_shape=split.transmitted_shape,
        transmitted_layout=split.transmitted_layout.to_json(),
        model={**loaded.record(), "graph_sha256": split.graph_sha256},
        bottleneck=_bottleneck_info(split.bottleneck),
        pytorch=pytorch,
        checks=checks,
        isplit_version=__version__,
        **describe,
    )
    manifest.files = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
    return manifest, predicted


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise IsplitError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise IsplitError(
            f"--out {out} holds files but no isplit export; pass an empty or new folder (an "
            "earlier export is replaced)"
        )


def _bottleneck_info(md: dict | None) -> dict | None:
    if md is None:
        return None
    keys = ("point", "shape", "layout", "ratio", "halve", "code_shape", "finetuned_tail")
    keys += ("settings",)
    return {"file": BOTTLENECK_FILE, **{k: md.get(k) for k in keys}}


def _examples(split: Split, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    with torch.no_grad():
        z = split.head(x)
    return {HEAD: (x,), TAIL: (z,), TAIL_INT8: quantize_uint8(z)}


def _write_programs(split: Split, x: torch.Tensor, folder: Path) -> dict:
    """ONNX files for every part, PyTorch programs for the head and the tail. The 8-bit tail is
    the exported dequantiser composed with the exported tail (``onnx.compose``), so it holds
    exactly the tail's graph and costs no second export of it."""
    from onnx import compose

    examples = _examples(split, x)
    pytorch, protos, legacy = {}, {}, False
    for part, module in ((HEAD, split.head), (TAIL, split.tail)):
        program = _torch_export(module, examples[part], part)
        pytorch[part] = _save_pytorch(program, module, examples[part], folder, part)
        protos[part] = _to_onnx(program, module, examples[part], part, *PARTS[part][1:])
        atomic_write_bytes(folder / PARTS[part][0], protos[part].SerializeToString())
        legacy = program is None  # the dequantiser goes the tail's way, for the same opset
    module, args = Dequantize(), examples[TAIL_INT8]
    program = None if legacy else _torch_export(module, args, "dequantiser")
    dequantize = _to_onnx(program, module, args, "dequantiser", PARTS[TAIL_INT8][1], ["code"])
    merged = compose.merge_models(
        compose.add_prefix(dequantize, "dequantize/", rename_inputs=False, rename_outputs=False),
        compose.add_prefix(protos[TAIL], "tail/", rename_inputs=False, rename_outputs=False),
        io_map=[("code", ACTIVATION)],
    )
    atomic_write_bytes(folder / PARTS[TAIL_INT8][0], merged.SerializeToString())
    return pytorch


def _torch_export(module: nn.Module, args: tuple, part: str):
    """The ``torch.export`` program of ``module`` with a dynamic batch, or None if it fails."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        return torch.export.export(
            module, args, dynamic_shapes=tuple({0: batch} for _ in args), strict=False
        )
    except Exception as e:  # data-dependent control flow and the like: TorchScript instead
        log.warning("torch.export failed for the %s (%s); using TorchScript", part, first_line(e))
        return None


def _save_pytorch(program, module: nn.Module, args, folder: Path, part: str) -> dict:
    # Saved into memory and written by Python: torch's own file writer, on a full disk, throws
    # from a destructor and aborts the process (``terminate called ... c10::Error``).
    if program is not None:
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        atomic_write_bytes(folder / f"{part}.pt2", buffer.getvalue())
        return {"file": f"{part}.pt2", "format": "torch.export"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated, and only the fallback
            traced = torch.jit.trace(module, args)
    except Exception as e:
        raise IsplitError(
            f"the {part} can be exported neither with torch.export nor with TorchScript "
            f"({first_line(e)})"
        ) from None
    atomic_write_bytes(folder / f"{part}.ts", traced.save_to_buffer())
    return {"file": f"{part}.ts", "format": "torchscript"}


def _to_onnx(program, module: nn.Module, args, part: str, inputs: list[str], outputs: list[str]):
    """The ONNX model (``ModelProto``) of ``program`` (or of ``module`` with the TorchScript-based
    exporter when there is no program); a clear error naming the op that does not translate."""
    import onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if program is not None:
                return torch.onnx.export(
                    program, args, input_names=inputs, output_names=outputs, verbose=False
                ).model_proto
            buffer = io.BytesIO()
            axes = {n: {0: "batch"} for n in [*inputs, *outputs]}
            torch.onnx.export(
                module, args, buffer, input_names=inputs, output_names=outputs,
                dynamic_axes=axes, dynamo=False,
            )  # fmt: skip
            return onnx.load_from_string(buffer.getvalue())
    except Exception as e:
        op = _failed_op(e)
        where = f"the operation {op}" if op else "an operation"
        raise IsplitError(
            f"cannot export the {part} to ONNX: {where} has no ONNX translation ({first_line(e)}); "
            "export at another point, or replace the operation in the model"
        ) from None


def _failed_op(e: BaseException) -> str | None:
    """The operator named in an ONNX exporter's error (``aten.cummax``), if any."""
    text = ""
    while e is not None:
        text += f"\n{e}"
        e = e.__cause__ or e.__context__
    for pattern in (r"OpOverload\(op='([\w.]+)'", r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]",
                    r"'(aten::\w+)'", r"(aten::\w+)"):  # fmt: skip
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None


def _check(
    split: Split, loaded: LoadedModel, x: torch.Tensor, folder: Path
) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the ONNX programs with onnxruntime beside PyTorch: the maximum absolute differences
    (against the unsplit network, or with a bottleneck the PyTorch split network: what the
    programs must reproduce), and how often the split's predictions (float and 8-bit) agree
    with the unsplit network's; and the classes predicted by the unsplit network and by the
    exported split (float and 8-bit)."""
    run = {part: onnx_runner(folder / PARTS[part][0], "cpu") for part in PARTS}
    with torch.no_grad():
        z = split.head(x)
        logits = split.tail(z)
        q, scale, zp = quantize_uint8(z)
        logits_int8 = split.tail(dequantize_uint8(q, scale, zp))
        unsplit = loaded.model(x)
    ref = logits if split.bottleneck is not None else unsplit
    xn = x.numpy()
    z_onnx = run[HEAD](xn)
    e2e = run[TAIL](z_onnx)
    q_onnx, s_onnx, zp_onnx = (t.numpy() for t in quantize_uint8(torch.from_numpy(z_onnx)))
    e2e_int8 = run[TAIL_INT8](q_onnx, s_onnx, zp_onnx)
    first = run[TAIL](run[HEAD](xn[:1]))  # batch 1 against batch N: the batch is dynamic
    tail_int8 = run[TAIL_INT8](q.numpy(), scale.numpy(), zp.numpy())
    diffs = {
        "head_max_abs_diff": (z_onnx, z),
        "tail_max_abs_diff": (run[TAIL](z.numpy()), logits),
        "tail_int8_max_abs_diff": (tail_int8, logits_int8),
        "end_to_end_max_abs_diff": (e2e, ref),
        "batch_1_max_abs_diff": (first, torch.from_numpy(e2e[:1])),
    }
    checks: dict = {}
    for key, (got, want) in diffs.items():
        want = want.numpy()
        diff = float(np.abs(got - want).max())
        checks[key] = diff
        if not diff <= TOLERANCE * max(1.0, float(np.abs(want).max())):
            raise IsplitError(
                f"the exported ONNX programs do not reproduce PyTorch ({key.replace('_', ' ')} "
                f"{diff:.3g}); this is an exporter problem: export at another point, or report it"
            )
    want = unsplit.argmax(1).numpy()
    checks["agreement"] = float((e2e.argmax(1) == want).mean())
    checks["agreement_int8"] = float((e2e_int8.argmax(1) == want).mean())
    checks["reference"] = "split PyTorch network" if split.bottleneck else "unsplit network"
    checks["agreement_with"] = "unsplit network"
    return checks, {"unsplit": want, "split": e2e.argmax(1), "split_int8": e2e_int8.argmax(1)}
