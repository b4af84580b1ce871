"""A validation job as a library call: the rules ``isplit validate`` follows, for a library user.

- :func:`reused_analysis`: an analysis run folder to validate, checked against the options
  of an analysis that validate would run itself.
- :func:`validation_model`: the network to validate (the run's own unless another is given).
- :func:`load_validation_data`: the training and test images, never the same ones, labelled
  as the model's outputs.
- :func:`validate_run`: the sweep on them; returns the :class:`ValidationReport`.

``isplit validate`` maps its options to these calls and prints; it adds only what a command
does (running and saving the analysis when no run folder is given, drawing the figure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from isplit.errors import IsplitError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from isplit.analysis import Analysis
    from isplit.models import LoadedModel
    from isplit.validation.result import ValidationReport
    from isplit.validation.settings import Settings

#: the data set validate reads when none is named
DEFAULT_DATA = "fashion-mnist"


def reused_analysis(
    folder: str | Path | None,
    *,
    predictors: Sequence[str] | None = None,
    select_by: str = "cui",
    probe_ratio: int | None = None,
) -> Analysis | None:
    """The analysis saved in run ``folder`` (None: none, the caller runs one); an error when
    options of the analysis validate would run itself are given too: the folder has its own."""
    if not folder:
        return None
    from isplit.analysis import Analysis

    analysis = Analysis.load(folder)
    if predictors or select_by != "cui" or probe_ratio:
        raise IsplitError(
            "--predictors, --select-by and --probe-ratio set up the analysis that validate runs "
            f"itself; the --analysis folder has its own ({', '.join(analysis.predictor_names)}): "
            "rerun `isplit analyze --predictors ...` into it, or leave --analysis out"
        )
    return analysis


def validation_model(analysis: Analysis | None, given: LoadedModel | None = None) -> LoadedModel:
    """The network to validate: ``given``, else the one the reused ``analysis`` analysed."""
    if given is not None:
        return given
    if analysis is None:
        raise IsplitError("validate needs a model, or an analysis run folder to rebuild it from")
    return analysis.load_model()


def load_validation_data(
    loaded: LoadedModel,
    data: str | None = None,
    *,
    train_split: str = "train",
    test_split: str = "test",
    root: str | None = None,
    download: bool = False,
    holdout: float | None = None,
    match_classes: str | None = None,
) -> tuple[Dataset, Dataset, str | None]:
    """The training and test images of ``data`` (default: fashion-mnist) in ``loaded``'s
    preprocessing, labelled as its outputs (``match_classes``: None, name or position; else an
    error when the classes differ), and a note on how a folder without split sub-folders was
    divided (or None). Never the same images: a folder without split sub-folders tests on its
    hold-out (``holdout``, else the share the weights were trained with)."""
    from isplit.data.load import holdout_share, load_train_test
    from isplit.data.relabel import match_classes as relabel

    kw = {"root": root, "download": download, "holdout": holdout_share(holdout, loaded.weights)}
    train, test, note = load_train_test(
        data or DEFAULT_DATA, train_split, test_split, loaded.preprocess, **kw
    )
    train, _ = relabel(train, loaded.classes, match_classes)  # else an error
    test, _ = relabel(test, loaded.classes, match_classes)
    return train, test, note


def validate_run(
    loaded: LoadedModel,
    analysis: Analysis | str | Path,
    train: Dataset,
    test: Dataset,
    out: str | Path | None = None,
    *,
    points: str | Sequence[str] = "auto",
    settings: Settings | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> ValidationReport:
    """Validate ``loaded`` at ``points`` of ``analysis`` (an :class:`Analysis` or its run
    folder): bottlenecks trained on ``train``, measured on ``test``; writes ``validation.json``
    into ``out`` (default: the run folder given as ``analysis``) and returns the report."""
    from isplit.analysis import Analysis
    from isplit.validation.sweep import validate

    if not isinstance(analysis, Analysis):
        out = analysis if out is None else out
        analysis = Analysis.load(analysis)
    if out is None:
        raise IsplitError("validate_run needs out, the folder to write validation.json into")
    return validate(
        loaded.model,
        analysis,
        train,
        test,
        out,
        points=points,
        settings=settings,
        device=device,
        model_name=loaded.name,
        progress=progress,
    )
