"""Markdown tables for docs/experiments.md from the sweeps' validation.json files.

    python benchmarks/predictor_tables.py runs/predictors [--json summary.json] > tables.md

Reads every ``validation.json`` under the given folders (a folder holding one, or whose
sub-folders hold one, such as the OUT of ``benchmarks/predictors_sweep.sh``) and prints, per
sweep, the predictors' rank correlations with intervals, prediction errors and regret under each
budget, then one table across the sweeps: whose Spearman interval lies above depth's, and whose
regret stays within 1 pp under every budget. Only the standard library: it runs wherever the
sweep ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REGRET_GOAL = 0.01  # 1 pp


def find(folders: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for f in map(Path, folders):
        if (f / "validation.json").is_file():
            files.append(f / "validation.json")
        else:
            files += sorted(f.glob("*/validation.json"))
    return files


def _f(v, fmt=".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _pp(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} pp"


def _ci(c: dict, key: str) -> str:
    lo, hi = c[f"{key}_ci"]
    return f"{_f(c[key])} [{_f(lo)}, {_f(hi)}]"


def bottleneck(doc: dict) -> str:
    s = doc["settings"]
    return f"channels / {s['ratio']}" + (", H and W halved" if s.get("halve") else "")


def summarise(doc: dict) -> dict:
    """Per predictor: the numbers the tables show, and the two goals the predictors were
    set (an interval above depth's; regret within REGRET_GOAL)."""
    corr, cal = doc["correlation"], doc.get("calibration", {})
    mae = doc["prediction"]["mae"]
    depth_hi = corr.get("depth", {}).get("spearman_ci", [None, None])[1]
    versus = doc.get("versus_depth", {})  # validation.json files before it lack it
    out = {}
    for name, c in corr.items():
        regrets = {r["budget"]: r.get("regret_by", {}).get(name) for r in doc["regret"]}
        known = [v for v in regrets.values() if v is not None]
        lo = c["spearman_ci"][0]
        out[name] = {
            "spearman": c["spearman"],
            "spearman_ci": c["spearman_ci"],
            "kendall": c["kendall"],
            "kendall_ci": c["kendall_ci"],
            "mae_monotone": mae.get(name),
            "mae_line_loo": cal.get(name, {}).get("loo_mae"),
            "loo_coverage": cal.get(name, {}).get("loo_coverage"),
            "raw_mae": cal.get(name, {}).get("raw_mae"),
            "regret": regrets,
            "max_regret": max(known) if known else None,
            "interval_above_depth": (
                None if lo is None or depth_hi is None or name == "depth" else lo > depth_hi
            ),
            "regret_within_goal": (max(known) <= REGRET_GOAL + 1e-12) if known else None,
            # Spearman minus depth's, paired over the same bootstrap resamples of the test images
            "versus_depth": versus.get(name),
        }
    return out


def sweep_tables(name: str, doc: dict, summary: dict) -> str:
    s = doc["settings"]
    best = doc.get("best_predictor") or {}
    lines = [
        f"### {doc['model']}, {bottleneck(doc)} (`{name}`)",
        "",
        f"{len(doc['points'])} points validated; unsplit accuracy "
        f"{100 * doc['unsplit_accuracy']:.2f} % on {s['test_images']} test images; bottleneck "
        f"trained {s['epochs']} epoch(s) on {s['train_images']} images. Best predictor by "
        f"Spearman: **{best.get('by_spearman') or 'n/a'}**; by the error of its predicted "
        f"accuracy: **{best.get('by_loo_mae') or 'n/a'}**.",
        "",
        "| predictor | Spearman [95 % CI] | Kendall [95 % CI] | MAE, monotone map "
        f"(k={doc['prediction']['k']}) | MAE, line (leave-one-out) | 95 % intervals cover "
        "| MAE as is | worst regret |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, v in summary.items():
        c = doc["correlation"][p]
        cover = v["loo_coverage"]
        lines.append(
            f"| {p} | {_ci(c, 'spearman')} | {_ci(c, 'kendall')} | {_pp(v['mae_monotone'])} | "
            f"{_pp(v['mae_line_loo'])} | {'n/a' if cover is None else f'{100 * cover:.0f} %'} | "
            f"{_pp(v['raw_mae']) if v['raw_mae'] is not None else ''} | {_pp(v['max_regret'])} |"
        )
    names = list(summary)
    lines += [
        "",
        "| budget | validated within | best accuracy | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for r in doc["regret"]:
        cells = [_pp(r.get("regret_by", {}).get(n)) for n in names]
        best = r.get("best_accuracy")
        lines.append(
            f"| {r['budget']} | {r['validated_within']} | "
            f"{'n/a' if best is None else f'{100 * best:.2f} %'} | " + " | ".join(cells) + " |"
        )
    scored = [n for n in names if doc["points"] and n in doc["points"][0].get("scores", {})]
    lines += [
        "",
        "<details><summary>per point</summary>",
        "",
        "| point | bytes | accuracy | " + " | ".join(scored) + " |",
        "|---|---|---|" + "---|" * len(scored),
    ]
    for p in doc["points"]:
        cells = [_f(p["scores"].get(n), ".4g") for n in scored]
        lines.append(
            f"| {p['name']} | {p['bytes']} | {100 * p['accuracy']:.2f} % | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def overview(summaries: dict[str, dict], docs: dict[str, dict]) -> str:
    runs = list(summaries)
    names = list(dict.fromkeys(n for s in summaries.values() for n in s))
    head = [f"{docs[r]['model']}, {bottleneck(docs[r])}" for r in runs]
    lines = [
        "Spearman correlation with the measured accuracy [95 % CI]; ▲: the interval lies above "
        "depth's; ✓: regret within 1 pp under every budget.",
        "",
        "| predictor | " + " | ".join(head) + " | ▲ | ✓ |",
        "|---|" + "---|" * (len(runs) + 2),
    ]
    for n in names:
        cells, above, within = [], 0, 0
        for r in runs:
            v = summaries[r].get(n)
            if v is None:
                cells.append("")
                continue
            mark = ("▲" if v["interval_above_depth"] else "") + (
                "✓" if v["regret_within_goal"] else ""
            )
            lo, hi = v["spearman_ci"]
            cells.append(f"{_f(v['spearman'])} [{_f(lo)}, {_f(hi)}] {mark}".strip())
            above += bool(v["interval_above_depth"])
            within += bool(v["regret_within_goal"])
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {above} | {within} |")
    lines += [
        "",
        "Spearman minus depth's, paired: both computed on the same bootstrap resamples of the test "
        "images [95 % CI]; ★: the interval lies above 0 (the predictor ranks the points better "
        "than depth on this sweep's test images; the randomness of the bottleneck's training is "
        "not in the interval).",
        "",
        "| predictor | " + " | ".join(head) + " | ★ |",
        "|---|" + "---|" * (len(runs) + 1),
    ]
    for n in names:
        cells, better = [], 0
        for r in runs:
            d = (summaries[r].get(n) or {}).get("versus_depth")
            if d is None:
                cells.append("")
                continue
            lo, hi = d["ci"]
            cells.append(f"{_f(d['spearman_diff'], '+.2f')} [{_f(lo, '+.2f')}, {_f(hi, '+.2f')}]")
            cells[-1] += " ★" if d["above"] else ""
            better += bool(d["above"])
        if any(cells):
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {better} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--json", default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    files = find(args.folders)
    if not files:
        print(f"no validation.json under {', '.join(args.folders)}", file=sys.stderr)
        raise SystemExit(2)
    loaded = [(f.parent.name, json.loads(f.read_text())) for f in files]
    # network by network, the stronger bottleneck (more channels kept) first
    loaded.sort(key=lambda d: (d[1]["model"], d[1]["settings"]["ratio"], d[1]["settings"]["halve"]))
    docs = dict(loaded)
    summaries = {name: summarise(doc) for name, doc in docs.items()}
    print("## Overview\n")
    print(overview(summaries, docs))
    print()
    for name, doc in docs.items():
        print(sweep_tables(name, doc, summaries[name]))
    result = {
        name: {"model": docs[name]["model"], "bottleneck": bottleneck(docs[name]), "predictors": s}
        for name, s in summaries.items()
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
