"""The report's validation section (``validation.json``: the network cut for real at some
points, and how well each predictor foretold the accuracy), and the command that makes one."""

from __future__ import annotations

import os
import shlex

from isplit.analysis import Analysis
from isplit.importance.registry import PCA_PROBE_RATIO, predictor_label
from isplit.report.markup import Section, esc, img, log10_cui, num, pct, pp, section, table
from isplit.runfolder import RunFolder
from isplit.validation.labels import BASELINE_LABELS
from isplit.validation.picks import picks_line
from isplit.validation.scoring import why_no_best, why_no_regret


def label(a: Analysis, name: str) -> str:
    """How the report calls predictor or baseline ``name`` (with the run's pca-probe ratio)."""
    if name in BASELINE_LABELS:
        return BASELINE_LABELS[name]
    return predictor_label(name, a.settings.get("probe_ratio", PCA_PROBE_RATIO))


def validate_command(
    analysis: Analysis, run: str | os.PathLike, data_root: str | None = None
) -> str | None:
    """The ``isplit validate`` command that validates this run: its folder (from which validate
    rebuilds the run's network), and the run's data set and split where they are not the
    defaults. ``data_root``: where the data set is now (as ``isplit report --data-root``).
    None when the command line cannot rebuild the run's model or data (a model or data set
    handed to :func:`isplit.analyze` from Python)."""
    from isplit.data.load import is_builtin

    d, s = analysis.dataset, analysis.settings
    name, split = d.get("name"), d.get("split")
    if not s.get("weights") or not name or split is None:
        return None
    argv = ["isplit", "validate", "--analysis", os.fspath(run)]
    builtin = is_builtin(name)
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


def found_best(a: Analysis, v: dict | None) -> str:
    """What the run's own validation says about the predictors (escaped HTML; '' without one):
    the best predictor, or why the validated points cannot name one."""
    if not v:
        return ""
    why = why_no_best(v)
    if why is not None:
        return f"no best predictor of post-split accuracy: {esc(why)}."
    best = v.get("best_predictor") or {}
    name = best.get("by_spearman")
    if not name:
        return ""
    c = v["correlation"][name]
    lo, hi = c["spearman_ci"]
    text = (
        f"over the {len(v['points'])} validated points, the best predictor of post-split "
        f"accuracy was <b>{esc(label(a, name))}</b> (Spearman "
        f"{num(c['spearman'], '.2f')} [{num(lo, '.2f')}, {num(hi, '.2f')}])"
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
            f"{num(versus['spearman_diff'], '+.2f')} [{num(lo, '+.2f')}, {num(hi, '+.2f')}]: "
            f"{verdict}"
        )
    by_mae = best.get("by_loo_mae")
    if by_mae and by_mae != name:
        mae = v["calibration"][by_mae]["loo_mae"]
        text += (
            f"; the smallest error of a predicted accuracy came from "
            f"<b>{esc(label(a, by_mae))}</b> ({pp(mae)} leave-one-out)"
        )
    return text + "."


def validation(
    a: Analysis, v: dict | None, run: RunFolder, data_root: str | None = None
) -> Section:
    """The validation section: how to get one, or the validated points, how well each
    predictor ranked and predicted their accuracy, and the regret of each one's pick."""
    if v is None:
        return section("validation", "Validation", _not_validated(a, run, data_root))
    path = run / RunFolder.VALIDATION_PNG
    if not path.is_file():
        from isplit.report.figures import plot_validation

        plot_validation(a, v, path)
    body = (
        _intro(v)
        + _picks(v)
        + "\n"
        + img(path.read_bytes(), "validation: CUI and accuracy over the points")
        + "\n<h3>Validated points</h3>\n"
        + _points(a, v)
        + "\n<h3>Does CUI predict accuracy?</h3>\n<p>Rank correlation of the measured accuracy "
        "with each predictor over the validated points (95 % bootstrap interval over test "
        "images); the mean absolute error of a monotone map fitted on a few retrained "
        "points and used to predict the others; and the error of an absolute prediction: a "
        "line fitted on all validated points but one predicts that one's accuracy, with a 95 % "
        "prediction interval (how often the intervals held the measured accuracy). The "
        "combinations are such leave-one-out predictions themselves. n/a: too few points.</p>\n"
        + _correlations(a, v)
        + _no_best(v)
        + "\n<h3>Regret under budgets</h3>\n<p>The best accuracy among the validated points "
        "within each budget minus the accuracy of isplit's pick (lower is better; n/a: no "
        "validated point within the budget, or isplit's pick was not validated), and of each "
        "predictor's own pick among the validated points.</p>\n"
        + _regrets(v)
        + _predicted_accuracy(a, v)
    )
    return section("validation", "Validation", body)


def _not_validated(a: Analysis, run: RunFolder, data_root: str | None) -> str:
    command = validate_command(a, run.root, data_root)
    how = (
        f"run <code>{esc(command)}</code>, then this report again"
        if command
        else "call <code>isplit.validation.validate(model, isplit.Analysis.load(RUN), "
        "train_data, test_data, RUN)</code> from Python (the command line cannot rebuild a "
        "model or data set that was handed to <code>isplit.analyze</code>), then run this "
        "report again"
    )
    return (
        '<p class="note">Not validated yet. To cut the network for real at the candidate '
        "points (bottleneck, retraining, test accuracy) and see how well CUI predicts the "
        f"accuracy, {how}.</p>"
    )


def _intro(v: dict) -> str:
    """How the points were validated, and a warning when the statistics are not reliable."""
    s = v.get("settings", {})
    intro = (
        f"<p>Each point was cut for real: the head frozen, a bottleneck (channels ÷ "
        f"{esc(s.get('ratio'))}{', H and W halved' if s.get('halve') else ''}) trained for "
        f"{esc(s.get('epochs'))} epoch(s) on {esc(s.get('train_images'))} images, tested on "
        f"{esc(s.get('test_images'))}. Unsplit model accuracy: "
        f"<b>{pct(v.get('unsplit_accuracy'))}</b>.</p>"
    )
    reliability = v.get("reliability") or {}
    if reliability.get("reliable") is False:
        intro += (
            '\n<p class="warn"><b>The statistics below are not reliable:</b> '
            f"{esc(reliability.get('reason'))}. Rows marked “did not learn” are within "
            f"{esc(reliability['thresholds']['chance_margin'])} of chance accuracy "
            f"({pct(reliability.get('chance_accuracy'))}) or keep less than "
            f"{pct(reliability['thresholds']['min_kept_margin'])} of the unsplit model's margin "
            "over chance.</p>"
        )
    return intro


def _picks(v: dict) -> str:
    """How the analysis's picks did, measured (as ``isplit validate`` prints it); '' for a
    validation written before it recorded the picks."""
    line = picks_line(v.get("picks"))
    if line is None:
        return ""
    unreliable = " (unreliable)" if (v.get("reliability") or {}).get("reliable") is False else ""
    return f'\n<p class="picks"><b>The picks, measured:</b> {esc(line)}{unreliable}.</p>'


def _points(a: Analysis, v: dict) -> str:
    """The table of validated points: sizes, accuracies, the logistic probe, training time."""
    rows = []
    for p in v["points"]:
        learned = p.get("learned", True)
        cells = [
            f"<code>{esc(p['name'])}</code>",
            log10_cui(p["cui"]),
            f"{p['bytes']:,}",
            f"{p['encoded_bytes']:,}",
            f"{p['encoded_bytes_int8']:,}" if "encoded_bytes_int8" in p else "n/a",
            pct(p["accuracy"]) + ("" if learned else " (did not learn)"),
            pp(p["accuracy_drop"]),
            pct(p.get("accuracy_int8")),
            pct(p["probe_accuracy"]),
            f"{p['train_seconds']:.1f}" if "train_seconds" in p else "n/a",
        ]
        rows.append(
            (("best " if p["name"] == a.best else "") + ("" if learned else "unlearned"), cells)
        )
    header = ["point", "log10 CUI", "bytes", "encoded (float32)", "encoded (int8)", "accuracy"]
    header += ["drop", "accuracy, int8 code", "logistic probe accuracy", "train s"]
    return table(header, rows, "num")


def _correlations(a: Analysis, v: dict) -> str:
    """Each predictor's rank correlation with the accuracy, and the error of its predictions."""
    mae = v.get("prediction", {}).get("mae", {})
    unreliable = (v.get("reliability") or {}).get("reliable") is False
    cal = v.get("calibration", {})
    rows = []
    for key, c in v.get("correlation", {}).items():
        cells = [
            esc(label(a, key)),
            f"{num(c.get('spearman'), '.2f')} "
            f"[{num(c['spearman_ci'][0], '.2f')}, {num(c['spearman_ci'][1], '.2f')}]",
            f"{num(c.get('kendall'), '.2f')} "
            f"[{num(c['kendall_ci'][0], '.2f')}, {num(c['kendall_ci'][1], '.2f')}]",
            pp(mae.get(key)),
            pp(cal.get(key, {}).get("loo_mae")),
            pct(cal.get(key, {}).get("loo_coverage")),
        ]
        rows.append(
            (("ours " if key == a.select_by else "") + ("unreliable" if unreliable else ""), cells)
        )
    k = v.get("prediction", {}).get("k")
    header = [
        "predictor of accuracy",
        "Spearman [95 % CI]",
        "Kendall [95 % CI]",
        f"prediction MAE (monotone map fit on {esc(k)} points)",
        "accuracy predicted by a line: leave-one-out MAE",
        "its 95 % intervals cover",
    ]
    return table(header, rows, "num")


def _no_best(v: dict) -> str:
    """Why the validated points name no best predictor, under the correlations; '' if they do."""
    why = why_no_best(v)
    return "" if why is None else f'\n<p class="warn"><b>No best predictor:</b> {esc(why)}.</p>'


def _regrets(v: dict) -> str:
    """Under each budget: isplit's pick, the best accuracy found, and each predictor's regret."""
    names = list(v.get("correlation", {}))
    validated = [p["name"] for p in v.get("points", [])]
    rows = []
    for r in v.get("regret", []):
        reliable = r.get("reliable", True)
        why = why_no_regret(r, validated)
        pick = f"<code>{esc(r['pick'])}</code>" if r.get("pick") else "none"
        if r.get("pick") and r["pick"] not in validated:
            pick += " (not validated)"
        cells = [
            esc(r["budget"]) + ("" if reliable else " (unreliable)"),
            pick,
            pct(r.get("best_accuracy")),
            pp(r.get("regret")) + ("" if why is None else f" ({esc(why)})"),
            *(pp(r["regret_by"].get(n)) for n in names),
        ]
        rows.append(("" if reliable else "unreliable", cells))
    header = ["budget", "isplit's pick", "best accuracy found", "regret of isplit"]
    return table(header + [f"regret: {esc(n)}" for n in names], rows, "num")


def _predicted_accuracy(a: Analysis, v: dict) -> str:
    """The accuracy after a split predicted at every admissible point by the predictor whose
    prediction erred least (leave-one-out) over the validated points, with its interval."""
    cal = v.get("calibration") or {}
    if why_no_best(v) is not None:  # it would name the predictor that erred least
        return ""
    usable = {k: c for k, c in cal.items() if c.get("predicted") and c.get("loo_mae") is not None}
    if not usable:
        return ""
    name = min(usable, key=lambda k: usable[k]["loo_mae"])
    measured = {p["name"]: p["accuracy"] for p in v["points"]}
    rows = [
        (
            "best" if point in measured else "",
            [
                f"<code>{esc(point)}</code>",
                pct(pred),
                f"[{pct(lo)}, {pct(hi)}]",
                pct(measured.get(point)),
            ],
        )
        for point, (pred, lo, hi) in usable[name]["predicted"].items()
    ]
    return (
        f"\n<h3>Predicted accuracy at every admissible point</h3>\n<p>A line fitted on the "
        f"validated points maps <b>{esc(label(a, name))}</b> (the predictor whose "
        f"predicted accuracy erred least, {pp(usable[name]['loo_mae'])} leave-one-out) to the "
        "accuracy after a split, with a 95 % prediction interval; highlighted rows were "
        "retrained.</p>\n"
        + table(["point", "predicted accuracy", "95 % interval", "measured"], rows, "num")
    )
