"""The report's sections about the analysis: summary, curves, split points, classes, the latency
plan and the Grad-CAM maps (validation has a module of its own)."""

from __future__ import annotations

from collections.abc import Sequence

from isplit import checks
from isplit.analysis import Analysis
from isplit.analysis.picks import agree
from isplit.checks import Check
from isplit.data.preprocess import Preprocess, describe_preprocess
from isplit.importance.registry import EVIDENCE_REASON
from isplit.report.maps import SampleMaps
from isplit.report.markup import (
    Section,
    esc,
    img,
    log10_cui,
    num,
    pct,
    png_from,
    section,
    shape_text,
    table,
)
from isplit.report.validation_section import found_best
from isplit.runfolder import RunFolder

#: Failed checks that say the model's accuracy on these images is not to be trusted: the first
#: screen's accuracy carries their flag.
ACCURACY_CHECKS = (
    "accuracy_vs_chance",
    "accuracy_vs_recorded",
    "class_names",
    "reused_analysis_accuracy",
)


def report_checks(
    a: Analysis, validation: dict | None = None, others: Sequence[dict] = ()
) -> list[Check]:
    """Every self-check the report shows: the analysis's (``curves.json``'s ``checks``), the
    validation's (``validation.json``'s), those of the ``others`` (the run's further results,
    e.g. ``plan.json``, ``classes.json``), and the report's own: the unsplit accuracy that the
    validation measured against the analysis's accuracy (a gap beyond sampling: the two were not
    made on the same model, data or preprocessing), unless the validation recorded that one."""
    found = [c if isinstance(c, Check) else Check.from_json(c) for c in getattr(a, "checks", [])]
    v = validation or {}
    found += checks.from_json(v.get("checks"))
    for doc in others:
        found += checks.from_json(doc.get("checks"))
    own = checks.reused_accuracy(
        "validate",
        a.accuracy,
        a.dataset.get("images"),
        v.get("unsplit_accuracy"),
        (v.get("settings") or {}).get("test_images"),
    )
    if own is not None and not any(_same(c, own) for c in found):
        found.append(own)
    return found


def _same(c: Check, other: Check) -> bool:
    """Whether ``c`` is the check ``other`` (the same name and command)."""
    return c.name == other.name and c.values.get("command") == other.values.get("command")


def checks_block(found: list[Check]) -> str:
    """The failed checks, each its message, in a warning box (first on the page); '' if none."""
    bad = checks.failed(found)
    if not bad:
        return ""
    items = "".join(
        f"<li>{esc(c.message or c.name)} <code>({esc(c.name)})</code></li>" for c in bad
    )
    return (
        f'<div class="warn checks"><p><b>{len(bad)} self-check(s) failed: the numbers below '
        f"may be wrong.</b></p><ul>{items}</ul></div>\n"
    )


def _flag(found: list[Check], names: tuple[str, ...] | None = None) -> str:
    """The mark of a number that failed checks qualify (``names``: those checks; None: any)."""
    bad = list(
        dict.fromkeys(c.name for c in checks.failed(found) if names is None or c.name in names)
    )
    if not bad:
        return ""
    return f' <span class="flag">⚠ not to be trusted: see {esc(", ".join(bad))} above</span>'


def preprocess_text(pp: dict | None) -> str:
    """The preprocessing the run used (``settings.preprocess``), in the words ``analyze`` and
    ``train`` print it (escaped HTML)."""
    if not pp:
        return "not recorded"
    return esc(describe_preprocess(Preprocess.from_json(pp)))


def summary(
    a: Analysis, validation: dict | None = None, found: list[Check] | None = None
) -> Section:
    """The first screen: the failed self-checks first, then the picks, the facts (the accuracy
    and the validation flagged where a check or the validation's reliability qualifies them)
    and the recommendation. ``found``: the checks to show (default :func:`report_checks`)."""
    found = report_checks(a, validation) if found is None else found
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
        ("Model", f"<b>{esc(a.model)}</b> (weights: {esc(weights)})"),
        (
            "Data set",
            f"<b>{esc(d.get('name'))}</b>, split {esc(d.get('split'))}, "
            f"{esc(d.get('images'))} images analysed, {len(d.get('classes') or [])} classes",
        ),
        (
            "Model accuracy",
            f"{pct(a.accuracy)} on the analysed images" + _flag(found, ACCURACY_CHECKS),
        ),
        (
            "Settings",
            f"target <b>{esc(s.get('target'))}</b>, reduction <b>{esc(s.get('reduction'))}</b>, "
            f"protocol <b>{esc(s.get('protocol'))}</b>, granularity "
            f"<b>{esc(s.get('granularity', 'layer'))}</b>"
            + (f", input {esc('×'.join(map(str, shape)))}" if shape else ""),
        ),
        ("Preprocessing", preprocess_text(s.get("preprocess"))),
        (
            "Split points",
            f"{len(a.points)} analysed, {n_adm} admissible"
            + (f" ({esc(', '.join(budgets))})" if budgets else ""),
        ),
    ]
    if a.predictors:
        rows.append(
            (
                "Predictors",
                ", ".join(esc(n) for n in a.predictor_names)
                + f"; the best split is the maximum of <b>{esc(a.select_by)}</b>"
                + _flag([c for c in found if c.name not in ACCURACY_CHECKS]),
            )
        )
    said = found_best(a, validation)
    if said:
        unreliable = (validation.get("reliability") or {}).get("reliable") is False
        flag = '<span class="flag">⚠ not reliable (see Validation below)</span>: '
        rows.append(("Validation", (flag if unreliable else "") + said))
    items = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    body = (
        checks_block(found) + picks_block(a, found) + f'<table class="facts">{items}</table>\n'
        f'<p class="recommendation"><b>Recommendation:</b> '
        f"{esc(a.recommendation()).replace(chr(10), '<br>')}</p>"
    )
    return section("summary", "Summary", body)


def picks_block(a: Analysis, checked: list[Check] = ()) -> str:
    """The first screen's picks: I-SPLIT's and (when the run computed it) the evidence-backed
    one, each with its point, value and head cost (flagged where a failed check of ``checked``
    says its predictor cannot rank the points), and the measured reason for the second (or
    one line that they agree)."""
    found = a.picks
    if not found:
        return ""
    rows = [
        (
            "best" if p.point == a.best else "",
            [
                esc(p.title),
                f"<code>{esc(p.point)}</code>",
                f"{esc(p.predictor)} {num(p.value, '.4g')}"
                + _flag([c for c in checked if c.values.get("predictor") == p.predictor]),
                f"{p.head_flops / 1e6:.1f}",
                pct(p.head_flop_share),
                f"{p.bytes:,}",
            ],
        )
        for p in found.values()
    ]
    header = ["pick", "split point", "value", "head MFLOPs", "of the model's FLOPs", "bytes"]
    out = table(header, rows, "picks num")
    if "evidence" in found:
        said = (
            f"The two picks agree: <code>{esc(found['isplit'].point)}</code>. "
            if agree(found)
            else ""
        )
        out += f'<p class="note">{said}Why the evidence-backed pick: {esc(EVIDENCE_REASON)}.</p>'
    return out + "\n"


def curves(a: Analysis, run: RunFolder) -> Section:
    path = run / RunFolder.CURVES_PNG
    if not path.is_file():
        from isplit.report.figures import plot_curves

        plot_curves(a, path)
    body = (
        "<p>Top: the CUI curve, the Grad-CAM importance of each split point averaged over the "
        "images (log10). Its local maxima over the admissible points are the candidate split "
        "points (stars); the maximum is the best split (red). Bottom: the size of the tensor "
        "that crosses the link at each point (the CDE baseline).</p>\n"
        + img(path.read_bytes(), "CUI and CDE curves")
    )
    return section("curves", "CUI and CDE curves", body)


def points_table(a: Analysis) -> Section:
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
                    f"<code>{esc(p.name)}</code>",
                    esc(p.op),
                    shape_text(p.shape),
                    f"{p.bytes:,}",
                    f"{p.head_flops / 1e6:.2f}",
                    log10_cui(c),
                    *(num(v[i]) for v in a.predictors.values()),
                    mark,
                ],
            )
        )
    header = ["#", "point", "op", "shape (C×H×W)", "bytes", "head MFLOPs", "log10 CUI"]
    header += [esc(n) for n in a.predictors] + [""]
    body = (
        "<p>Bytes are those of the tensor crossing the link for one image (float32); head "
        "MFLOPs are the device's share of the work. Grey rows are not admissible.</p>\n"
        + table(header, rows, "points num")
    )
    return section("points", "Split points", body)


def classes(a: Analysis) -> Section:
    from isplit.classes import classes_report
    from isplit.report.figures import plot_classes

    rep = classes_report(a).to_json()
    png = png_from(lambda path: plot_classes(a, rep, path))
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
                    esc(c),
                    str(info.get("images", "")),
                    f"<code>{esc(best)}</code>" if best else "none",
                    where,
                ],
            )
        )
    notes = []
    md = rep.get("most_different")
    if md:
        x, y = md["classes"]
        notes.append(
            f"The two classes with the least alike curves: <b>{esc(x)}</b> and <b>{esc(y)}</b>."
        )
    if len(rep.get("groups") or []) > 1:
        groups = "; ".join(", ".join(esc(c) for c in g) for g in rep["groups"])
        notes.append(f"Classes with alike curves: {groups}.")
    body = (
        "<p>The CUI curve of each class's images (log10; colours span the admissible points). "
        "A star marks the class's own best split, the dashed line the global best split "
        f"(<code>{esc(rep['global_best'])}</code>). Use <code>isplit classes</code> for a subset "
        "of classes.</p>\n"
        + img(png, "per-class CUI heat map")
        + "\n"
        + table(["class", "images", "its best split", "compared with the global best"], rows)
        + "".join(f"\n<p>{n}</p>" for n in notes)
    )
    return section("classes", "Classes", body)


def plan(run: RunFolder) -> Section:
    """The latency plan (``isplit plan``) when the run has one."""
    if not run.plan.is_file():
        body = (
            '<p class="note">No latency plan yet. To see the end-to-end latency of every point '
            "over your link and the point to deploy under a budget, run <code>isplit plan "
            f"{esc(run.root)} --bandwidth 10Mbit/s --rtt 20ms --max-latency 50ms</code>.</p>"
        )
        return section("plan", "Latency plan", body)
    plan = run.read(RunFolder.PLAN)
    link = plan["link"]
    budget = plan["budgets"]
    limits = [f"latency ≤ {budget['max_latency_ms']:g} ms"] if budget["max_latency_ms"] else []
    limits += [f"≤ {budget['max_bytes']:,} bytes"] if budget["max_bytes"] else []
    rec = plan["recommended"]
    intro = (
        f"<p>One image over a link of {num(8 * link['bandwidth_bytes_per_s'] / 1e6, 'g')} Mbit/s "
        f"with a {num(link['rtt_ms'], 'g')} ms round trip, sending the "
        f"{'8-bit code' if plan['quantize'] else 'float32 tensor'} of the point (all on the "
        f"server: the 8-bit image); {esc(plan['times'])}. Score: "
        f"{esc(plan.get('score_source', plan['score']))}. Budget: "
        f"{esc(', '.join(limits) or 'none')}. "
        f"Recommended: <b>{esc(rec) if rec else 'none'}</b> ({esc(plan['reason'])}).</p>"
    )
    png = run / RunFolder.PLAN_PNG
    if not png.is_file():  # a plan the library wrote (make_plan(out=...)): the data only
        from isplit.report.figures import plot_plan

        plot_plan(plan, png)
    figure = img(png.read_bytes(), "latency per point, stacked by part")
    score = plan.get("score_label", plan["score"])
    rows = []
    for r in plan["points"]:
        if r["score"] is not None:
            shown = num(float(r["score"]), ".4g")
        else:  # a split not validated: its accuracy was not measured; not splitting loses nothing
            shown = "not measured" if r.get("not_measured") else "lossless"
        cls = "best" if r["name"] == rec else ("candidate" if r["pareto"] else "")
        marks = ", ".join(
            m
            for m, on in (
                ("Pareto", r["pareto"]),
                ("over budget", not r["within_budget"]),
                ("with its bottleneck", r.get("bottleneck")),
                ("did not learn", r.get("learned") is False),
            )
            if on
        )
        cells = [esc(r["name"]), f"{r['bytes']:,}"]
        cells += [num(r[f"{k}_ms"], ".2f") for k in ("head", "link", "rtt", "tail", "total")]
        rows.append((cls, [*cells, shown, esc(marks)]))
    header = ["point", "bytes", "head ms", "link ms", "RTT ms", "tail ms", "total ms", score, ""]
    outro = (
        "<p>All on the device sends nothing and waits for no round trip; all on the server "
        "sends the image. Not splitting loses nothing, so the plan recommends it whenever one "
        "of the two meets the budget.</p>"
    )
    return section("plan", "Latency plan", intro + figure + table(header, rows) + outro)


def gradcam(a: Analysis, maps: SampleMaps | None, samples: int | None) -> Section:
    from isplit.report.figures import plot_gradcam

    title = "Grad-CAM maps at the candidate points"
    if samples == 0:
        body = '<p class="note">Left out (<code>--samples 0</code>).</p>'
        return section("gradcam", title, body)
    if maps is None:
        body = '<p class="note">The run has no candidate split points to show.</p>'
        return section("gradcam", title, body)
    s = a.settings
    caption = (
        f"Grad-CAM of {a.model} at the candidate split points "
        f"(target={s.get('target')}, reduction={s.get('reduction')}"
        + (f", cam={s['cam']})" if s.get("cam") else ")")
    )
    png = png_from(lambda path: plot_gradcam(maps, caption, path))
    body = (
        "<p>Where the network looks at each candidate split point: the Grad-CAM map of each "
        "sample image (one row per image) at the point (one column per point), upsampled to the "
        "input size and overlaid on the image; each map is scaled to 0–1 on its own. Below each "
        "map: the image's CUI at the point.</p>\n" + img(png, "Grad-CAM maps of sample images")
    )
    return section("gradcam", title, body)
