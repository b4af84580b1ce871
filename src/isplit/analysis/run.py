"""``analyze``: model + data -> CUI curves -> candidates and best split.

``analyze`` streams the data through ``GradCAM`` once, accumulating per-image CUI curves (and the
further predictors asked for), and returns an :class:`~isplit.analysis.result.Analysis` that
saves to (and loads from) a run folder. What decides the result is one
:class:`~isplit.analysis.settings.AnalysisSettings`; how the work is carried out (device,
loading, progress, checkpoints) one :class:`~isplit.analysis.settings.RunOptions`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

from isplit import distributed
from isplit.analysis.job import Job, class_names, model_record
from isplit.analysis.loop import frozen, run_job
from isplit.analysis.result import Analysis
from isplit.analysis.settings import AnalysisSettings, RunOptions, from_options
from isplit.data import limit_dataset
from isplit.errors import IsplitError
from isplit.importance.gradcam import autocast_dtype
from isplit.models import LoadedModel, WeightsDigest, loaded_info


def analyze(
    model: nn.Module | LoadedModel,
    data: Dataset | DataLoader,
    settings: AnalysisSettings | None = None,
    run: RunOptions | None = None,
    *,
    classes: Sequence[str] | None = None,
    model_name: str | None = None,
    **options: Any,
) -> Analysis:
    """Run the I-SPLIT analysis of ``model`` on ``data`` (a Dataset of (image, label) or a
    DataLoader); the result is an :class:`Analysis`.

    ``settings`` (:class:`AnalysisSettings`) decides the result, ``run`` (:class:`RunOptions`)
    how it is computed; every field of either can also be given as a keyword (``batch_size=32,
    limit=1000, device="cuda"``), replacing the field of ``settings`` / ``run`` when given too.
    See the README for the options.

    ``model`` is an ``nn.Module`` or the :class:`~isplit.models.LoadedModel` that
    :func:`~isplit.load_model` returned; a model that ``load_model`` built is recorded under the
    name, weights and seed it was loaded by (so that ``isplit report`` / ``validate`` can rebuild
    it from the run folder), any other under its class name (or ``model_name``). The model's
    weights are fingerprinted (sha256) into the run when it is saved, or a checkpoint needs it,
    or ``settings`` / ``fingerprint`` of the result are first read (a pass over the weights that
    an analysis used only in memory does not pay); its ``training`` flag and parameter flags
    are restored afterwards. ``classes``: the class names (default: the data set's).

    ``predictors``: further per-point predictors of post-split accuracy to compute in the same
    pass (:data:`isplit.importance.registry.PREDICTORS`; CUI always; default CUI and
    ``pca-probe``, whose maximum is the result's evidence-backed pick beside I-SPLIT's, see
    :attr:`Analysis.picks`; ``"cui"``: CUI alone); ``select_by``: the one whose maximum over the
    admissible points is the best split (default ``cui``; added to ``predictors``);
    ``probe_ratio``: ``pca-probe`` keeps ``ceil(channels / probe_ratio)`` principal components
    (default 8, ``isplit validate``'s default ``--ratio``).
    ``limit``: analyse a random sample of that many images, drawn with the seed the model was
    loaded with (``load_model(seed=...)``, ``--seed``; 0 for a model ``load_model`` did not build).
    ``leaf_modules``: submodules that torch.fx must not trace into (module classes, class names
    or qualified type names such as ``"timm.layers.Attention"``).
    ``cam``: the CAM method whose maps give the CUI, a name of
    :data:`isplit.importance.registry.CAMS` (``"gradcam"``, the default; ``"gradcam++"``) or a
    :class:`~isplit.importance.GradCAM` subclass (``cam=GradCAMPlusPlus``, or a user's own that
    overrides ``channel_weights`` or ``layout``); ``isplit report`` draws its maps with it.

    With ``checkpoint`` (a file path), the accumulated curves are saved there every
    ``checkpoint_seconds`` seconds, or after every ``checkpoint_every`` batches when given, and
    a rerun with the same model, data and settings resumes from it (another run's checkpoint is
    refused); it is deleted when the analysis finishes.

    ``precision`` ``bf16`` or ``fp16`` runs the network's forward pass under
    ``torch.autocast`` in that type (fp16: CUDA only); the Grad-CAM maps and CUI values are
    computed and accumulated in float32 either way.

    On a GPU, batches are loaded by worker processes into pinned memory and copied
    asynchronously, results stay on the GPU until the end (or a checkpoint), and the network
    runs in channels-last memory format (``channels_last``; default: on CUDA only)."""
    started = time.perf_counter()
    settings, run = from_options(settings, run, options)
    autocast_dtype(settings.precision, run.device)  # an error where the device cannot
    info = model if isinstance(model, LoadedModel) else loaded_info(model)
    model, model_name, record = model_record(model, model_name)
    if info is not None and info.model is not model:
        info = None
    data, source, n_total = _source(data, settings.limit, record)
    weights = WeightsDigest(model)
    if run.checkpoint is not None:  # its fingerprint holds the weights': overlap with set-up
        weights.start()
    names = class_names(data, classes)
    job = Job(
        settings, run, model_name, record, weights, n_total, names, distributed.shard(n_total)
    )
    job.rank, job.world, job.started = distributed.rank(), distributed.world_size(), started
    if info is not None:
        job.model_classes, job.trained = info.classes, info.trained
    with frozen(model):
        return run_job(model, data, source, job)


def _source(
    data: Dataset | DataLoader, limit: int | None, record: dict
) -> tuple[Dataset | DataLoader, Dataset | DataLoader, int]:
    """The data (limited to ``limit`` images), the source its batches come from and its size."""
    if isinstance(data, DataLoader):
        source, n_total = (
            data,
            len(data.dataset) if limit is None else min(limit, len(data.dataset)),
        )
    else:  # the sample follows the seed the model was loaded with (--seed), 0 for another
        data = limit_dataset(data, limit, _sample_seed(record))
        source, n_total = data, len(data)
    if n_total == 0:
        raise IsplitError("the data set is empty: no images to analyse")
    if distributed.active() and isinstance(source, DataLoader):
        raise IsplitError(
            "a distributed analysis shares out a Dataset, not a DataLoader: pass the "
            "DataLoader's dataset (and its batch size as batch_size)"
        )
    return data, source, n_total


def _sample_seed(record: dict) -> int:
    """The seed of the ``limit`` sample: the one the model was loaded with (``--seed``, in the
    run's settings and fingerprint), else 0."""
    seed = record.get("seed")
    return int(seed) if isinstance(seed, int) else 0
