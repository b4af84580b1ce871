"""An export job as a library call: the rules ``isplit export`` follows, for a library user.

- :func:`export_analysis`: the analysis run an export takes its network and best split from.
- :func:`export_run`: the network (the run's own unless another is given), the split point,
  the check images and whether their labels are the network's classes, then
  :func:`~isplit.deploy.export.export_split`; returns the :class:`Manifest`.
- :func:`accuracy_line`: the manifest's accuracies in one line.

``isplit export`` maps its options to these calls and prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from isplit.errors import IsplitError
from isplit.runfolder import RunFolder

if TYPE_CHECKING:
    from isplit.analysis import Analysis
    from isplit.deploy.manifest import Manifest
    from isplit.models import LoadedModel

#: the data set the export is checked on when neither the run nor the caller names one
DEFAULT_DATA = "fashion-mnist"


def export_analysis(
    analysis: str | Path | None, bottleneck: str | Path | None = None
) -> Analysis | None:
    """The analysis saved in run folder ``analysis``, else in the validation run
    ``bottleneck`` when it holds one (a validation run holds its analysis); None: neither."""
    run = analysis
    if run is None and bottleneck and RunFolder(bottleneck).is_analysis():
        run = bottleneck
    if not run:
        return None
    from isplit.analysis import Analysis

    return Analysis.load(run)


def export_run(
    out: str | Path,
    *,
    analysis: Analysis | None = None,
    model: LoadedModel | None = None,
    point: str | None = None,
    bottleneck: str | Path | None = None,
    allow_unlearned: bool = False,
    name: str | None = None,
    data: str | None = None,
    split: str = "test",
    data_root: str | None = None,
    check_images: int = 64,
    max_batch: int = 64,
    on_note: Callable[[str], None] | None = None,
) -> Manifest:
    """Export into ``out`` the network ``model`` (default: the one ``analysis`` analysed) cut
    at ``point`` (default: the analysis' best), with the bottleneck the validation run
    ``bottleneck`` trained there. Checked on ``check_images`` images of ``data`` (default: the
    analysis' data set, else fashion-mnist), random inputs when it is not available (a note,
    passed to ``on_note``). Accuracies are recorded only when the labels are the network's
    classes. ``classes``: the analysis' when they fit the network."""
    from isplit.data import FASHION_MNIST_CLASSES
    from isplit.deploy.export import check_images as load_check_images
    from isplit.deploy.export import export_split, find_bottleneck

    if model is None:
        if analysis is None:
            raise IsplitError("export needs a model, or an analysis run to rebuild it from")
        model = analysis.load_model()  # the network the run analysed
    point = point or (analysis.best if analysis is not None else None)
    if point is None:
        raise IsplitError(
            "pass --point NAME (`isplit points` lists them), or --analysis RUN_DIR to export at "
            "the run's best split"
        )
    found = find_bottleneck(bottleneck, point) if bottleneck else None
    data = data or (analysis.dataset.get("name") if analysis is not None else None)
    inputs, labels, note = load_check_images(
        model, data or DEFAULT_DATA, split, data_root, check_images
    )
    if note and on_note is not None:
        on_note(note)
    guessed = data is None and model.classes != FASHION_MNIST_CLASSES  # not its classes
    if guessed or labels is None or int(labels.max()) >= model.num_classes:
        labels = None  # no accuracy then, only the agreement with the unsplit network
    classes = None
    if analysis is not None and len(analysis.dataset.get("classes") or []) == model.num_classes:
        classes = model.classes or list(analysis.dataset["classes"])
    return export_split(
        model,
        point,
        out,
        bottleneck=found,
        name=name,
        classes=classes,
        check_inputs=inputs,
        check_labels=labels,
        max_batch=max_batch,
        allow_unlearned=allow_unlearned,
        leaf_modules=analysis.leaf_modules if analysis is not None else (),
        analysis_accuracy=None
        if analysis is None
        else (analysis.accuracy, int(analysis.dataset.get("images") or len(analysis.labels))),
    )


def accuracy_line(m: Manifest) -> str | None:
    """The accuracies of the manifest ``m`` in one line; None when it has none."""
    a = m.accuracy or {}
    parts = []
    v = a.get("validation")
    if v:
        mark = "" if v["learned"] else " (the bottleneck did NOT learn)"
        parts.append(
            f"validated at {m.point}: accuracy {v['accuracy']:.3f} (unsplit "
            f"{v['unsplit_accuracy']:.3f}){mark}"
        )
    if a.get("split") is not None:
        parts.append(
            f"on the {a['check_images']} check images: split {a['split']:.3f} "
            f"({a['split_int8']:.3f} with 8 bits), unsplit {a['unsplit']:.3f}"
        )
    return "accuracy " + "; ".join(parts) if parts else None
