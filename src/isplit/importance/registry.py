"""The predictors of post-split accuracy that an analysis can compute, by name: what the command
line offers, what the curves record, what the report and the figures call them, and the class
that computes each. Also the CAM methods (:data:`CAMS`) whose maps give the CUI.

Torch-free on purpose: the command line reads it to build ``--help``; the classes are imported
only when a predictor is computed.

To add a predictor: write one class that follows
:class:`~isplit.importance.predictors.Predictor` (its streaming ``add`` / ``merge`` / ``state`` /
``load_state`` / ``values`` and the Grad-CAM quantities it ``needs``), and register it here with
one :class:`PredictorInfo` in :data:`PREDICTORS`. The command line (``--predictors``,
``--select-by``), the analysis, ``curves.json``, the figures and the report take it from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from isplit.errors import IsplitError

#: pca-probe keeps ceil(channels / ratio) principal components; validate's default --ratio.
PCA_PROBE_RATIO = 8

#: The predictor whose maximum over the admissible points is the evidence-backed pick, shown
#: beside I-SPLIT's (CUI's) pick; computed by default.
EVIDENCE_PREDICTOR = "pca-probe"
#: Why the evidence-backed pick: one sentence with the measured numbers (docs/experiments.md),
#: which come from isplit's own demo networks, never from the model analysed, and says so.
#: The only copy: the command line, ``curves.json`` and the report all read it from here.
EVIDENCE_REASON = (
    "in isplit's retraining sweeps of its demo networks (docs/experiments.md; not measured on "
    "this model), pca-probe is the only analysis-time signal that stays good where depth fails: "
    "Spearman with the post-split accuracy 0.87 / 0.94 on demo-mobilenet, 0.83 / 0.95 on "
    "demo-convnext and 0.50 / 0.82 on demo-vit, where CUI is anti-correlated (-0.53 / -0.85); "
    "CUI -0.85 to 0.79 across ten sweeps; isplit validate measures it on this model"
)
#: What an analysis computes when ``--predictors`` is not given (``--predictors cui``: CUI alone).
DEFAULT_PREDICTORS = ("cui", EVIDENCE_PREDICTOR)


@dataclass(frozen=True)
class PredictorInfo:
    """One predictor: its name, one line for ``--help`` and tables, its label in figures and
    the report (``{ratio}``: pca-probe's bottleneck ratio), and where its class is
    (``package.module:Class``; None for ``cui``, which the analysis's curve accumulator keeps)."""

    name: str
    description: str
    label: str
    implementation: str | None = None

    def label_for(self, probe_ratio: int = PCA_PROBE_RATIO) -> str:
        """The label, with pca-probe's ``probe_ratio`` where it shows one."""
        return self.label.format(ratio=probe_ratio)

    def load(self) -> type:
        """The class that computes this predictor (imports it)."""
        if self.implementation is None:
            raise ValueError(f"{self.name} is kept by the analysis itself, not by a class")
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


_HERE = "isplit.importance.predictors"
_PROBE = "isplit.importance.probe"

#: Every predictor by name, CUI first: the one list of them.
PREDICTORS: dict[str, PredictorInfo] = {
    p.name: p
    for p in (
        PredictorInfo("cui", "CUI, the Grad-CAM importance (I-SPLIT)", "CUI (I-SPLIT)"),
        PredictorInfo(
            "probe",
            "held-out accuracy of a linear probe on pooled activations",
            "probe (analysis, held-out images)",
            f"{_PROBE}:LinearProbe",
        ),
        PredictorInfo(
            "taylor",
            "first-order Taylor share of the target logit (gradient x activation / logit)",
            "Taylor share",
            f"{_HERE}:TaylorShare",
        ),
        PredictorInfo(
            "cam-share",
            "share of the Grad-CAM map's mass that survives the ReLU (scale-free CUI)",
            "Grad-CAM share",
            f"{_HERE}:CamShare",
        ),
        PredictorInfo(
            "pca-probe",
            "the probe on the top channels/ratio principal components (a linear bottleneck; "
            "--probe-ratio, default 8)",
            "probe on channels / {ratio} principal components",
            f"{_PROBE}:PcaProbe",
        ),
    )
}


def predictor_names(include_cui: bool = True) -> list[str]:
    """The names of the predictors, CUI first."""
    return [n for n in PREDICTORS if include_cui or n != "cui"]


def predictor_class(name: str) -> type:
    """The class that computes predictor ``name`` (not ``cui``)."""
    return PREDICTORS[name].load()


def predictor_label(name: str, probe_ratio: int = PCA_PROBE_RATIO) -> str:
    """``name``'s label in figures and the report (the name itself when it is not a predictor
    of the analysis)."""
    info = PREDICTORS.get(name)
    return info.label_for(probe_ratio) if info else name


def parse_predictors(spec: str | Iterable[str] | None) -> list[str]:
    """The predictor names of ``--predictors`` (comma-separated or a list), CUI always first;
    None: :data:`DEFAULT_PREDICTORS`."""
    if spec is None:
        return list(DEFAULT_PREDICTORS)
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in PREDICTORS]
    if unknown:
        raise IsplitError(
            f"unknown predictor {', '.join(repr(n) for n in unknown)} in --predictors; "
            f"choose from {', '.join(PREDICTORS)}"
        )
    return ["cui", *dict.fromkeys(n for n in names if n != "cui")]


#: The CAM method an analysis uses unless told (recorded in ``curves.json`` only when another).
DEFAULT_CAM = "gradcam"
#: Every CAM method by name (``--cam``, ``analyze(cam=...)``, ``curves.json``): where its class is.
#: A method is a :class:`~isplit.importance.gradcam.GradCAM` subclass that overrides one step
#: (``channel_weights`` or ``layout``); a user's own class is passed as the class itself.
CAMS: dict[str, str] = {
    "gradcam": "isplit.importance.gradcam:GradCAM",
    "gradcam++": "isplit.importance.gradcampp:GradCAMPlusPlus",
}


def cam_names() -> list[str]:
    """The names of the CAM methods, the default first."""
    return list(CAMS)


def _load(implementation: str) -> type:
    module, _, name = implementation.partition(":")
    return getattr(importlib.import_module(module), name)


def cam_class(cam: str | type) -> type:
    """The class of CAM method ``cam``: a name of :data:`CAMS`, or a subclass of ``GradCAM``
    itself (imports it)."""
    from isplit.importance.gradcam import GradCAM

    if isinstance(cam, str):
        if cam not in CAMS:
            raise IsplitError(
                f"unknown CAM method {cam!r} in --cam; choose from {', '.join(CAMS)} (or pass "
                "a GradCAM subclass to isplit.analyze)"
            )
        return _load(CAMS[cam])
    if not (isinstance(cam, type) and issubclass(cam, GradCAM)):
        raise IsplitError(f"cam must be a name ({', '.join(CAMS)}) or a GradCAM subclass: {cam!r}")
    return cam


def cam_name(cam: str | type) -> str:
    """How CAM method ``cam`` is recorded: its name in :data:`CAMS`, or a user's class's
    qualified name ``package.module.Class``."""
    if isinstance(cam, str):
        return cam
    for name, implementation in CAMS.items():
        module, _, attr = implementation.partition(":")
        if cam.__module__ == module and cam.__qualname__ == attr:
            return name
    return f"{cam.__module__}.{cam.__qualname__}"


def recorded_cam(name: str | None) -> tuple[type, str | None]:
    """The class of the CAM method an analysis recorded (``settings["cam"]``; None: the
    default), and a note where it cannot be had: a user's class that does not import here
    gives plain Grad-CAM, and the note says so."""
    if name is None or name in CAMS:
        return cam_class(name or DEFAULT_CAM), None
    from isplit.importance.gradcam import GradCAM

    module, _, attr = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError, ValueError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, GradCAM):
        return cls, None
    return GradCAM, (
        f"the analysis used the CAM class {name}, which does not import here: these maps are "
        "plain Grad-CAM's, not that class's"
    )
