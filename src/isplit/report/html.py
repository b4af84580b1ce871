"""One self-contained HTML page for a run folder (``isplit report RUN``).

The page reads the run (``curves.json``, ``per_image.npz``, ``curves.png`` and, when there,
``validation.json`` / ``validation.png``) and shows, in order: the model, data and settings with
the recommendation; the CUI and CDE curves; the table of split points; the per-class heat map;
the validation results; and Grad-CAM maps of a few sample images at the candidate points, as in
the I-SPLIT paper's teaser figure. Every figure is embedded as a base64 PNG and the style sheet is
inline, so the page needs nothing else (no network, no JavaScript).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from isplit.analysis import Analysis  # noqa: E402
from isplit.errors import IsplitError  # noqa: E402
from isplit.io import atomic_write_bytes, read_json  # noqa: E402

REPORT = "report.html"
MAX_DEFAULT_SAMPLES = 10  # one image per class by default, at most this many
MAX_MAP_POINTS = 10  # columns of the Grad-CAM figure (the highest-CUI candidates beyond this)

# Names of the accuracy predictors in validation.json, as a reader should see them.
PREDICTORS = {
    "cui": "CUI (I-SPLIT)",
    "probe": "probe (analysis, held-out images)",
    "taylor": "Taylor share",
    "cam-share": "Grad-CAM share",
    "pca-probe": "probe on channels / 8 principal components",
    "bytes": "− output bytes (CDE)",
    "depth": "depth",
    "logistic-probe": "logistic probe (validation's training images)",
    "combo": "combination: CUI, bytes, depth (leave-one-out)",
    "combo-probe": "combination: CUI, bytes, depth, probe (leave-one-out)",
    # validation.json files written before the predictors were added
    "probe_legacy": "linear probe",
}


def write_report(
    run_dir: str | os.PathLike,
    samples: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> Path:
    """Write ``RUN_DIR/report.html`` (atomically) and return its path.

    ``samples``: images in the Grad-CAM figure (default one per class, at most 10; 0 leaves the
    figure out, and with it the need for the model and data). ``data_root``: where the run's
    data set is, when not where the analysis found it (for an image-folder data set, the folder).
    """
    run = Path(run_dir)
    analysis = _load_run(run)
    if samples is not None and samples < 0:
        raise IsplitError(f"--samples must be 0 or more, not {samples}")
    # The Grad-CAM figure needs the model and the data: do it first, so a missing data set
    # stops the report before anything is written.
    maps = None if samples == 0 else gradcam_samples(analysis, samples, data_root, device)
    validation = read_json(run / "validation.json") if (run / "validation.json").is_file() else None

    sections = [
        _summary(analysis, validation),
        _curves(analysis, run),
        _points_table(analysis),
        _classes(analysis),
        _validation(analysis, validation, run, data_root),
        _plan(run),
        _gradcam(analysis, maps, samples),
    ]
    title = f"isplit report: {analysis.model} on {analysis.dataset.get('name')}"
    page = _page(title, sections)
    path = run / REPORT
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _load_run(run: Path) -> Analysis:
    if not run.is_dir():
        raise IsplitError(
            f"run folder {run} not found: pass the --out folder of an `isplit analyze` run"
        )
    for name in ("curves.json", "per_image.npz"):
        if not (run / name).is_file():
            raise IsplitError(
                f"{run} has no {name}: it is not a complete `isplit analyze` run folder; "
                f"run `isplit analyze --out {run}` first"
            )
    return Analysis.load(run)


# ---------------------------------------------------------------------------------------------
# Grad-CAM maps of sample images at the candidate points
# ---------------------------------------------------------------------------------------------


@dataclass
class SampleMaps:
    """Grad-CAM maps of a few images, upsampled to the input size and scaled to [0, 1]."""

    images: np.ndarray  # [N, H, W] grayscale or [N, H, W, 3] RGB, in [0, 1]
    labels: list[str]  # class name of each image
    predictions: list[str]  # predicted class name of each image
    points: list[str]  # the columns, in network order
    shapes: list[tuple[int, ...]]  # tensor shape at each point (batch 1)
    maps: np.ndarray  # [N, K, H, W] in [0, 1]
    empty: np.ndarray  # [N, K] True where the map is 0 everywhere
    cui: np.ndarray  # [N, K] the images' CUI at the points


def map_points(analysis: Analysis, limit: int = MAX_MAP_POINTS) -> list[str]:
    """The points the Grad-CAM figure shows: the candidates and the best split, in network
    order; beyond ``limit`` the best split and the highest-CUI candidates."""
    names = analysis.point_names
    chosen = set(analysis.candidates) | ({analysis.best} if analysis.best else set())
    idx = sorted(names.index(c) for c in chosen)
    if len(idx) > limit:
        keep = sorted(idx, key=lambda i: (names[i] != analysis.best, -analysis.cui[i]))[:limit]
        idx = sorted(keep)
    return [names[i] for i in idx]


def sample_indices(targets: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` images, class by class in turn: the first image of each class, then the
    second of each, and so on (deterministic)."""
    classes = np.unique(targets)
    per_class = [np.flatnonzero(targets == c) for c in classes]
    out: list[int] = []
    rank = 0
    while len(out) < n and any(rank < len(ix) for ix in per_class):
        out.extend(int(ix[rank]) for ix in per_class if rank < len(ix))
        rank += 1
    return out[:n]


def _open_data(analysis: Analysis, preprocess, data_root: str | None):
    from isplit.data import load_dataset

    name, split = analysis.dataset.get("name"), analysis.dataset.get("split")
    builtin = _builtin(name)
    if builtin and data_root is None:
        data_root = analysis.dataset.get("root")  # where the analysis found it
    spec, root = (name, data_root) if builtin or data_root is None else (data_root, None)
    try:
        return load_dataset(spec, split, preprocess, root=root)
    except IsplitError as e:
        raise IsplitError(
            f"the Grad-CAM figure needs the run's data set {name} ({split}), which was not "
            f"found ({e}); pass --data-root DIR where it is, or --samples 0 to leave the "
            "figure out"
        ) from None


def _builtin(data_name) -> bool:
    return data_name in ("fashion-mnist", "digits") or str(data_name).startswith("torchvision:")


def validate_command(
    analysis: Analysis, run: str | os.PathLike, data_root: str | None = None
) -> str | None:
    """The ``isplit validate`` command that validates this run: its folder (from which validate
    rebuilds the run's network), and the run's data set and split where they are not the
    defaults. ``data_root``: where the data set is now (as ``isplit report --data-root``).
    None when the command line cannot rebuild the run's model or data (a model or data set
    handed to :func:`isplit.analyze` from Python)."""
    d, s = analysis.dataset, analysis.settings
    name, split = d.get("name"), d.get("split")
    if not s.get("weights") or not name or split is None:
        return None
    argv = ["isplit", "validate", "--analysis", str(run)]
    builtin = _builtin(name)
    if not builtin and data_root is not None:
        name = data_root  # an image folder found elsewhere now
    if name != "fashion-mnist":
        argv += ["--data", str(name)]
    if split != "test":
        argv += ["--split", str(split)]
    root = (data_root or d.get("root")) if builtin else None
    if root is not None:
        argv += ["--data-root", str(root)]
    return shlex.join(argv)


def gradcam_samples(
    analysis: Analysis,
    samples: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> SampleMaps | None:
    """Rebuild the run's model and data and compute the Grad-CAM maps of ``samples`` images
    (default: the first image of each class, at most 10) at ``map_points``. None when the run
    has no candidate points."""
    from isplit.data import BadImage
    from isplit.graph import ModelGraph
    from isplit.importance import GradCAM
    from isplit.models import resolve_device

    points = map_points(analysis)
    if not points:
        return None
    settings = analysis.settings
    loaded = analysis.load_model()
    preprocess = loaded.preprocess
    data = _open_data(analysis, preprocess, data_root)
    n_classes = len(data.classes)
    n = min(n_classes, MAX_DEFAULT_SAMPLES) if samples is None else samples

    xs, ys = [], []
    for i in sample_indices(data.targets, len(data.targets)):
        if len(xs) == n:
            break
        x, y = data[i]
        if not isinstance(x, BadImage):  # unreadable files: take the next image
            xs.append(x)
            ys.append(int(y))
    if not xs:
        raise IsplitError(f"the data set {data.name} ({data.split}) has no readable images")

    dev = resolve_device(device)
    x = torch.stack(xs).to(dev)
    labels = torch.tensor(ys, device=dev)
    input_shape = settings.get("input_shape") or list(x.shape[1:])
    graph = ModelGraph(loaded.model.to(dev), input_shape, settings.get("granularity", "layer"))
    cam = GradCAM(graph, points, settings.get("reduction", "mean")).to(dev)
    result = cam(x, labels, target=settings.get("target", "label"), keep_maps=True)

    size = tuple(x.shape[-2:])
    maps, empty = [], []
    for m in result.maps:
        m = m.detach().float().cpu()
        if m.dim() == 1:  # a flat point: one value per image
            m = m[:, None, None]
        elif m.dim() == 2:  # a 1-d point: a row
            m = m[:, None, :]
        elif m.dim() > 3:  # a 3-d point: average the extra dimensions away
            m = m.flatten(3).mean(3)
        m = m[:, None]  # [N, 1, h, w]
        up = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
        up = up[:, 0]
        lo = up.amin((1, 2), keepdim=True)
        span = up.amax((1, 2), keepdim=True) - lo
        maps.append(torch.where(span > 0, (up - lo) / span.clamp_min(1e-30), 0.0))
        empty.append(m.flatten(1).amax(1) <= 0)

    mean = torch.tensor(preprocess.mean).view(-1, 1, 1)
    std = torch.tensor(preprocess.std).view(-1, 1, 1)
    images = (x.cpu() * std + mean).clamp(0, 1)
    images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    names = list(data.classes)
    preds = result.logits.argmax(1).cpu().tolist()
    shapes = {p.name: p.shape for p in analysis.points}
    return SampleMaps(
        images=images.numpy(),
        labels=[names[y] for y in ys],
        predictions=[names[p] if p < len(names) else str(p) for p in preds],
        points=points,
        shapes=[tuple(shapes[p]) for p in points],
        maps=torch.stack(maps, 1).numpy(),
        empty=torch.stack(empty, 1).numpy(),
        cui=result.cui.detach().cpu().numpy(),
    )


def plot_gradcam(s: SampleMaps, title: str) -> bytes:
    """The teaser figure as PNG bytes: one row per image, the image then its map at each point."""
    n, k = s.maps.shape[:2]
    cell = 1.45
    fig, axes = plt.subplots(
        n,
        k + 1,
        figsize=(cell * (k + 1) + 1.4, cell * n + 1.2),
        squeeze=False,
        layout="constrained",
    )
    gray = s.images.ndim == 3
    for r in range(n):
        img = s.images[r]
        show = {"cmap": "gray", "vmin": 0, "vmax": 1} if gray else {}
        ax = axes[r, 0]
        ax.imshow(img, interpolation="nearest", **show)
        wrong = s.predictions[r] != s.labels[r]
        ax.set_ylabel(s.labels[r], fontsize=9, rotation=0, ha="right", va="center")
        ax.set_xlabel(
            f"predicted: {s.predictions[r]}" if wrong else "correct",
            fontsize=7,
            color="tab:red" if wrong else "dimgray",
        )
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(img, interpolation="nearest", **show)
            ax.imshow(s.maps[r, c], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            v = s.cui[r, c]
            ax.set_xlabel(
                "map is 0 everywhere" if s.empty[r, c] else f"log10 CUI {np.log10(v):.2f}",
                fontsize=7,
                color="dimgray",
            )
    axes[0, 0].set_title("image", fontsize=9)
    for c, (p, shape) in enumerate(zip(s.points, s.shapes)):
        axes[0, c + 1].set_title(f"{p}\n{'×'.join(map(str, shape[1:]))}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    sm = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, shrink=min(1.0, 3.0 / n), label="importance (each map scaled to 0–1)")
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _e(v) -> str:
    return html.escape(str(v))


def _img(png: bytes, alt: str, cls: str = "fig") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _png_from(draw) -> bytes:
    """PNG bytes from a plotting function that writes to a path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def _shape(shape) -> str:
    return "×".join(map(str, shape[1:] if len(shape) > 1 else shape))


def _num(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _pp(v) -> str:
    """A difference of accuracies, in percentage points."""
    return "n/a" if v is None else f"{100 * v:.1f} pp"


def _section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _table(header: list[str], rows: list[tuple[str, list[str]]], cls: str = "") -> str:
    """rows: (css class of the row, cells already escaped)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join(
        f'<tr class="{c}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for c, cells in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _summary(a: Analysis, validation: dict | None = None) -> tuple[str, str, str]:
    s, d = a.settings, a.dataset
    weights = s.get("weights") or "unknown"
    if weights == "none":
        weights = f"random initialisation, seed {s.get('seed', 0)}"
    elif weights == "default":
        weights = f"as the factory builds it, seed {s.get('seed', 0)}"
    budgets = [
        f"{label} {s[key]}"
        for key, label in (
            ("max_bytes", "max bytes"),
            ("max_head_flops", "max head FLOPs"),
            ("first", "first"),
            ("last", "last"),
        )
        if s.get(key) is not None
    ]
    n_adm = sum(p.admissible for p in a.points)
    shape = s.get("input_shape")
    rows = [
        ("Model", f"<b>{_e(a.model)}</b> (weights: {_e(weights)})"),
        (
            "Data set",
            f"<b>{_e(d.get('name'))}</b>, split {_e(d.get('split'))}, "
            f"{_e(d.get('images'))} images analysed, {len(d.get('classes') or [])} classes",
        ),
        ("Model accuracy", f"{_pct(a.accuracy)} on the analysed images"),
        (
            "Settings",
            f"target <b>{_e(s.get('target'))}</b>, reduction <b>{_e(s.get('reduction'))}</b>, "
            f"protocol <b>{_e(s.get('protocol'))}</b>, granularity "
            f"<b>{_e(s.get('granularity', 'layer'))}</b>"
            + (f", input {_e('×'.join(map(str, shape)))}" if shape else ""),
        ),
        (
            "Split points",
            f"{len(a.points)} analysed, {n_adm} admissible"
            + (f" ({_e(', '.join(budgets))})" if budgets else ""),
        ),
    ]
    if a.predictors:
        rows.append(
            (
                "Predictors",
                ", ".join(_e(n) for n in a.predictor_names)
                + f"; the best split is the maximum of <b>{_e(a.select_by)}</b>",
            )
        )
    found = _found_best(validation)
    if found:
        rows.append(("Validation", found))
    items = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    body = (
        f'<table class="facts">{items}</table>\n'
        f'<p class="recommendation"><b>Recommendation:</b> '
        f"{_e(a.recommendation()).replace(chr(10), '<br>')}</p>"
    )
    return _section("summary", "Summary", body)


def _found_best(v: dict | None) -> str:
    """What the run's own validation says about the predictors (escaped HTML; '' without one)."""
    best = (v or {}).get("best_predictor") or {}
    name = best.get("by_spearman")
    if not name:
        return ""
    c = v["correlation"][name]
    lo, hi = c["spearman_ci"]
    text = (
        f"over the {len(v['points'])} validated points, the best predictor of post-split "
        f"accuracy was <b>{_e(PREDICTORS.get(name, name))}</b> (Spearman "
        f"{_num(c['spearman'], '.2f')} [{_num(lo, '.2f')}, {_num(hi, '.2f')}])"
    )
    versus = (v.get("versus_depth") or {}).get(name)
    if versus and versus["ci"][0] is not None:
        lo, hi = versus["ci"]
        verdict = (
            "ranks the points better than depth"
            if versus["above"]
            else "not distinguishable from depth"
        )
        text += (
            f"; against depth on the same test images its Spearman differs by "
            f"{_num(versus['spearman_diff'], '+.2f')} [{_num(lo, '+.2f')}, {_num(hi, '+.2f')}]: "
            f"{verdict}"
        )
    by_mae = best.get("by_loo_mae")
    if by_mae and by_mae != name:
        mae = v["calibration"][by_mae]["loo_mae"]
        text += (
            f"; the smallest error of a predicted accuracy came from "
            f"<b>{_e(PREDICTORS.get(by_mae, by_mae))}</b> ({_pp(mae)} leave-one-out)"
        )
    return text + "."


def _curves(a: Analysis, run: Path) -> tuple[str, str, str]:
    path = run / "curves.png"
    if not path.is_file():
        from isplit.report.figures import plot_curves

        plot_curves(a, path)
    body = (
        "<p>Top: the CUI curve, the Grad-CAM importance of each split point averaged over the "
        "images (log10). Its local maxima over the admissible points are the candidate split "
        "points (stars); the maximum is the best split (red). Bottom: the size of the tensor "
        "that crosses the link at each point (the CDE baseline).</p>\n"
        + _img(path.read_bytes(), "CUI and CDE curves")
    )
    return _section("curves", "CUI and CDE curves", body)


def _points_table(a: Analysis) -> tuple[str, str, str]:
    rows = []
    for i, (p, c) in enumerate(zip(a.points, a.cui)):
        if p.name == a.best:
            cls, mark = "best", "★ best split"
        elif p.name in a.candidates:
            cls, mark = "candidate", "☆ candidate"
        else:
            cls, mark = ("", "") if p.admissible else ("inadmissible", "not admissible")
        rows.append(
            (
                cls,
                [
                    str(i + 1),
                    f"<code>{_e(p.name)}</code>",
                    _e(p.op),
                    _shape(p.shape),
                    f"{p.bytes:,}",
                    f"{p.head_flops / 1e6:.2f}",
                    f"{np.log10(c):.3f}" if c > 0 else "−∞",
                    *(_num(v[i]) for v in a.predictors.values()),
                    mark,
                ],
            )
        )
    header = ["#", "point", "op", "shape (C×H×W)", "bytes", "head MFLOPs", "log10 CUI"]
    header += [_e(n) for n in a.predictors] + [""]
    body = (
        "<p>Bytes are those of the tensor crossing the link for one image (float32); head "
        "MFLOPs are the device's share of the work. Grey rows are not admissible.</p>\n"
        + _table(header, rows, "points num")
    )
    return _section("points", "Split points", body)


def _classes(a: Analysis) -> tuple[str, str, str]:
    from isplit.classes import classes_report
    from isplit.report.figures import plot_classes

    rep = classes_report(a).to_json()
    png = _png_from(lambda path: plot_classes(a, rep, path))
    rows = []
    for c, info in rep["per_class"].items():
        best = info.get("best")
        same = best == rep["global_best"]
        shift = info.get("shift")
        where = (
            "same as the global best"
            if same
            else (f"{abs(shift)} point(s) {'deeper' if shift > 0 else 'earlier'}" if shift else "")
        )
        rows.append(
            (
                "" if same else "differs",
                [
                    _e(c),
                    str(info.get("images", "")),
                    f"<code>{_e(best)}</code>" if best else "none",
                    where,
                ],
            )
        )
    notes = []
    md = rep.get("most_different")
    if md:
        x, y = md["classes"]
        notes.append(
            f"The two classes with the least alike curves: <b>{_e(x)}</b> and <b>{_e(y)}</b>."
        )
    if len(rep.get("groups") or []) > 1:
        groups = "; ".join(", ".join(_e(c) for c in g) for g in rep["groups"])
        notes.append(f"Classes with alike curves: {groups}.")
    body = (
        "<p>The CUI curve of each class's images (log10; colours span the admissible points). "
        "A star marks the class's own best split, the dashed line the global best split "
        f"(<code>{_e(rep['global_best'])}</code>). Use <code>isplit classes</code> for a subset "
        "of classes.</p>\n"
        + _img(png, "per-class CUI heat map")
        + "\n"
        + _table(["class", "images", "its best split", "compared with the global best"], rows)
        + "".join(f"\n<p>{n}</p>" for n in notes)
    )
    return _section("classes", "Classes", body)


def _validation(
    a: Analysis, v: dict | None, run: Path, data_root: str | None = None
) -> tuple[str, str, str]:
    if v is None:
        command = validate_command(a, run, data_root)
        how = (
            f"run <code>{_e(command)}</code>, then this report again"
            if command
            else "call <code>isplit.validation.validate(model, isplit.Analysis.load(RUN), "
            "train_data, test_data, RUN)</code> from Python (the command line cannot rebuild a "
            "model or data set that was handed to <code>isplit.analyze</code>), then run this "
            "report again"
        )
        body = (
            '<p class="note">Not validated yet. To cut the network for real at the candidate '
            "points (bottleneck, retraining, test accuracy) and see how well CUI predicts the "
            f"accuracy, {how}.</p>"
        )
        return _section("validation", "Validation", body)
    path = run / "validation.png"
    if not path.is_file():
        from isplit.report.figures import plot_validation

        plot_validation(a, v, path)
    s = v.get("settings", {})
    intro = (
        f"<p>Each point was cut for real: the head frozen, a bottleneck (channels ÷ "
        f"{_e(s.get('ratio'))}{', H and W halved' if s.get('halve') else ''}) trained for "
        f"{_e(s.get('epochs'))} epoch(s) on {_e(s.get('train_images'))} images, tested on "
        f"{_e(s.get('test_images'))}. Unsplit model accuracy: "
        f"<b>{_pct(v.get('unsplit_accuracy'))}</b>.</p>"
    )
    reliability = v.get("reliability") or {}
    if reliability.get("reliable") is False:
        intro += (
            '\n<p class="warn"><b>The statistics below are not reliable:</b> '
            f"{_e(reliability.get('reason'))}. Rows marked “did not learn” are within "
            f"{_e(reliability['thresholds']['chance_margin'])} of chance accuracy "
            f"({_pct(reliability.get('chance_accuracy'))}) or keep less than "
            f"{_pct(reliability['thresholds']['min_kept_margin'])} of the unsplit model's margin "
            "over chance.</p>"
        )
    prow = []
    for p in v["points"]:
        learned = p.get("learned", True)
        prow.append(
            (
                ("best " if p["name"] == a.best else "") + ("" if learned else "unlearned"),
                [
                    f"<code>{_e(p['name'])}</code>",
                    f"{np.log10(p['cui']):.3f}" if p["cui"] and p["cui"] > 0 else "−∞",
                    f"{p['bytes']:,}",
                    f"{p['encoded_bytes']:,}",
                    f"{p['encoded_bytes_int8']:,}" if "encoded_bytes_int8" in p else "n/a",
                    _pct(p["accuracy"]) + ("" if learned else " (did not learn)"),
                    _pp(p["accuracy_drop"]),
                    _pct(p.get("accuracy_int8")),
                    _pct(p["probe_accuracy"]),
                    f"{p['train_seconds']:.1f}" if "train_seconds" in p else "n/a",
                ],
            )
        )
    points = _table(
        [
            "point",
            "log10 CUI",
            "bytes",
            "encoded (float32)",
            "encoded (int8)",
            "accuracy",
            "drop",
            "accuracy, int8 code",
            "logistic probe accuracy",
            "train s",
        ],
        prow,
        "num",
    )
    mae = v.get("prediction", {}).get("mae", {})
    unreliable = reliability.get("reliable") is False
    cal = v.get("calibration", {})
    crow = []
    for key, c in v.get("correlation", {}).items():
        crow.append(
            (
                ("ours " if key == a.select_by else "") + ("unreliable" if unreliable else ""),
                [
                    _e(PREDICTORS.get("probe_legacy" if key == "probe" and not cal else key, key)),
                    f"{_num(c.get('spearman'), '.2f')} "
                    f"[{_num(c['spearman_ci'][0], '.2f')}, {_num(c['spearman_ci'][1], '.2f')}]",
                    f"{_num(c.get('kendall'), '.2f')} "
                    f"[{_num(c['kendall_ci'][0], '.2f')}, {_num(c['kendall_ci'][1], '.2f')}]",
                    _pp(mae.get(key)),
                    _pp(cal.get(key, {}).get("loo_mae")),
                    _pct(cal.get(key, {}).get("loo_coverage")),
                ],
            )
        )
    k = v.get("prediction", {}).get("k")
    corr = _table(
        [
            "predictor of accuracy",
            "Spearman [95 % CI]",
            "Kendall [95 % CI]",
            f"prediction MAE (monotone map fit on {_e(k)} points)",
            "accuracy predicted by a line: leave-one-out MAE",
            "its 95 % intervals cover",
        ],
        crow,
        "num",
    )
    rrow = []
    names = list(v.get("correlation", {})) if any("regret_by" in r for r in v["regret"]) else []
    for r in v.get("regret", []):
        if names:
            others = [_pp(r["regret_by"].get(n)) for n in names]
        else:  # written before every predictor's pick was scored
            others = [
                _pp(r.get(key))
                for key in ("regret_smallest_bytes", "regret_deepest", "regret_best_probe")
            ]
        rrow.append(
            (
                "" if r.get("reliable", True) else "unreliable",
                [
                    _e(r["budget"]) + ("" if r.get("reliable", True) else " (unreliable)"),
                    f"<code>{_e(r['pick'])}</code>" if r.get("pick") else "none",
                    _pct(r.get("best_accuracy")),
                    _pp(r.get("regret")),
                    *others,
                ],
            )
        )
    labels = [f"regret: {_e(n)}" for n in names] or [
        "regret: smallest bytes",
        "regret: deepest",
        "regret: best probe",
    ]
    regret = _table(
        ["budget", "isplit's pick", "best accuracy found", "regret of isplit", *labels],
        rrow,
        "num",
    )
    predicted = _predicted_accuracy(v)
    body = (
        intro
        + "\n"
        + _img(path.read_bytes(), "validation: CUI and accuracy over the points")
        + "\n<h3>Validated points</h3>\n"
        + points
        + "\n<h3>Does CUI predict accuracy?</h3>\n<p>Rank correlation of the measured accuracy "
        "with each predictor over the validated points (95 % bootstrap interval over test "
        "images); the mean absolute error of a monotone map fitted on a few retrained "
        "points and used to predict the others; and the error of an absolute prediction: a "
        "line fitted on all validated points but one predicts that one's accuracy, with a 95 % "
        "prediction interval (how often the intervals held the measured accuracy). The "
        "combinations are such leave-one-out predictions themselves. n/a: too few points.</p>\n"
        + corr
        + "\n<h3>Regret under budgets</h3>\n<p>The best accuracy among the validated points "
        "within each budget minus the accuracy of the pick (lower is better; n/a: no validated "
        "point within the budget).</p>\n" + regret + predicted
    )
    return _section("validation", "Validation", body)


def _plan(run: Path) -> tuple[str, str, str]:
    """The latency plan (``isplit plan``) when the run has one."""
    path = run / "plan.json"
    if not path.is_file():
        body = (
            '<p class="note">No latency plan yet. To see the end-to-end latency of every point '
            "over your link and the point to deploy under a budget, run <code>isplit plan "
            f"{_e(run)} --bandwidth 10Mbit/s --rtt 20ms --max-latency 50ms</code>.</p>"
        )
        return _section("plan", "Latency plan", body)
    plan = read_json(path)
    link = plan["link"]
    budget = plan["budgets"]
    limits = [f"latency ≤ {budget['max_latency_ms']:g} ms"] if budget["max_latency_ms"] else []
    limits += [f"≤ {budget['max_bytes']:,} bytes"] if budget["max_bytes"] else []
    rec = plan["recommended"]
    intro = (
        f"<p>One image over a link of {_num(8 * link['bandwidth_bytes_per_s'] / 1e6, 'g')} Mbit/s "
        f"with a {_num(link['rtt_ms'], 'g')} ms round trip, sending the "
        f"{'8-bit code' if plan['quantize'] else 'float32 tensor'} of the point; head and tail "
        f"times {_e(plan['times'])}. Budget: {_e(', '.join(limits) or 'none')}. "
        f"Recommended: <b>{_e(rec) if rec else 'none'}</b> ({_e(plan['reason'])}).</p>"
    )
    png = run / "plan.png"
    figure = _img(png.read_bytes(), "latency per point, stacked by part") if png.is_file() else ""
    score = "log10 CUI" if plan["score"] == "cui" else "probe accuracy"
    rows = []
    for r in plan["points"]:
        value = r["score"]
        shown = np.log10(value) if plan["score"] == "cui" and value > 0 else value
        cls = "best" if r["name"] == rec else ("candidate" if r["pareto"] else "")
        marks = ", ".join(
            m for m, on in (("Pareto", r["pareto"]), ("over budget", not r["within_budget"])) if on
        )
        cells = [_e(r["name"]), f"{r['bytes']:,}"]
        cells += [_num(r[f"{k}_ms"], ".2f") for k in ("head", "link", "rtt", "tail", "total")]
        rows.append((cls, [*cells, _num(float(shown)), _e(marks)]))
    header = ["point", "bytes", "head ms", "link ms", "RTT ms", "tail ms", "total ms", score, ""]
    b = plan["baselines"]
    outro = (
        f"<p>For reference: the whole network on the device {_num(b['device_only_ms'], '.2f')} "
        f"ms; on the server, sending the 8-bit image, {_num(b['server_only_ms'], '.2f')} ms.</p>"
    )
    return _section("plan", "Latency plan", intro + figure + _table(header, rows) + outro)


def _predicted_accuracy(v: dict) -> str:
    """The accuracy after a split predicted at every admissible point by the predictor whose
    prediction erred least (leave-one-out) over the validated points, with its interval."""
    cal = v.get("calibration") or {}
    usable = {k: c for k, c in cal.items() if c.get("predicted") and c.get("loo_mae") is not None}
    if not usable:
        return ""
    name = min(usable, key=lambda k: usable[k]["loo_mae"])
    measured = {p["name"]: p["accuracy"] for p in v["points"]}
    rows = [
        (
            "best" if point in measured else "",
            [
                f"<code>{_e(point)}</code>",
                _pct(pred),
                f"[{_pct(lo)}, {_pct(hi)}]",
                _pct(measured.get(point)),
            ],
        )
        for point, (pred, lo, hi) in usable[name]["predicted"].items()
    ]
    return (
        f"\n<h3>Predicted accuracy at every admissible point</h3>\n<p>A line fitted on the "
        f"validated points maps <b>{_e(PREDICTORS.get(name, name))}</b> (the predictor whose "
        f"predicted accuracy erred least, {_pp(usable[name]['loo_mae'])} leave-one-out) to the "
        "accuracy after a split, with a 95 % prediction interval; highlighted rows were "
        "retrained.</p>\n"
        + _table(["point", "predicted accuracy", "95 % interval", "measured"], rows, "num")
    )


def _gradcam(a: Analysis, maps: SampleMaps | None, samples: int | None) -> tuple[str, str, str]:
    title = "Grad-CAM maps at the candidate points"
    if samples == 0:
        body = '<p class="note">Left out (<code>--samples 0</code>).</p>'
        return _section("gradcam", title, body)
    if maps is None:
        body = '<p class="note">The run has no candidate split points to show.</p>'
        return _section("gradcam", title, body)
    s = a.settings
    png = plot_gradcam(
        maps,
        f"Grad-CAM of {a.model} at the candidate split points "
        f"(target={s.get('target')}, reduction={s.get('reduction')})",
    )
    body = (
        "<p>Where the network looks at each candidate split point: the Grad-CAM map of each "
        "sample image (one row per image) at the point (one column per point), upsampled to the "
        "input size and overlaid on the image; each map is scaled to 0–1 on its own. Below each "
        "map: the image's CUI at the point.</p>\n" + _img(png, "Grad-CAM maps of sample images")
    )
    return _section("gradcam", title, body)


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #dde; padding-bottom: .2rem;
     margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
nav { font-size: .9rem; margin: .5rem 0 1rem; }
nav a { margin-right: 1rem; color: #2457a6; text-decoration: none; }
.sub { color: #666; margin: 0; }
img.fig { display: block; max-width: 100%; height: auto; margin: .8rem 0;
          border: 1px solid #e3e3e8; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .88rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e6e6ea; text-align: left; }
thead th { background: #eef0f4; position: sticky; top: 0; }
table.num td { font-variant-numeric: tabular-nums; }
table.points td:nth-child(n+4):nth-child(-n+7) { text-align: right; }
table.facts th { width: 9rem; color: #555; font-weight: 600; vertical-align: top; }
tr.inadmissible td { color: #aaa; }
tr.candidate td { background: #fff7e0; }
tr.best td { background: #ffe3dc; font-weight: 600; }
tr.differs td { background: #f3f6ff; }
tr.ours td { background: #eef6ee; font-weight: 600; }
code { font: .85rem ui-monospace, SFMono-Regular, Menlo, monospace; }
.recommendation { font-size: 1.05rem; background: #eef6ee; border-left: 4px solid #3a9a3a;
                  padding: .6rem .9rem; }
.note { background: #f4f4f6; border-left: 4px solid #aab; padding: .5rem .8rem; }
.warn { background: #fff4e5; border-left: 4px solid #e08a00; padding: .5rem .8rem; }
tr.unlearned td, tr.unreliable td { color: #a05a00; font-style: italic; }
footer { color: #888; font-size: .8rem; margin-top: 2.5rem; }
"""


def _page(title: str, sections: list[tuple[str, str, str]]) -> str:
    from isplit import __version__

    nav = " ".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t, _ in sections)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(s for _, _, s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="sub">Where to cut the network for split computing (I-SPLIT: Grad-CAM importance of
every split point).</p>
<nav>{nav}</nav>
{body}
<footer>Generated by isplit {_e(__version__)} on {now}. I-SPLIT: Cunico, Capogrosso, Setti, Carra,
Fummi, Cristani, ICPR 2022.</footer>
</main>
</body>
</html>
"""
