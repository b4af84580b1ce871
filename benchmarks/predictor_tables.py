"""Markdown tables for docs/experiments.md from the sweeps' validation.json files.

    python benchmarks/predictor_tables.py runs/predictors [--json summary.json] > tables.md

Reads every ``validation.json`` under the given folders (a folder holding one, or whose
sub-folders hold one, such as the OUT of ``benchmarks/predictors_sweep.sh``) and prints, per
sweep, the predictors' rank correlations with intervals, prediction errors and regret under each
budget, then one table across the sweeps: whose Spearman interval lies above depth's, and whose
regret stays within 1 pp under every budget. Only the standard library: it runs wherever the
sweep ran.

A folder ``<sweep>-seed<k>`` beside a sweep's folder holds the same bottlenecks trained with
``--bottleneck-seed k`` at a few of its points (paired: the same test images). Where there are
such runs, the sweep also gets the training noise: each seeded point's accuracy at every seed
beside the spread of accuracy over the points, Spearman intervals whose resamples draw the test
images and, per point, one of its seeds (beside the intervals over the images alone), and one
sentence comparing the two spreads.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path

REGRET_GOAL = 0.01  # 1 pp
SEED_RUN = re.compile(r"^(?P<sweep>.+)-seed(?P<seed>\d+)$")  # <sweep>-seed<k>


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


# --------------------------------------------------------------------------------------------
# Training noise: the same sweep with other bottleneck seeds at a few points
# --------------------------------------------------------------------------------------------


def seed_runs(
    name: str, folder: Path, main_doc: dict, seeded: list[tuple[Path, dict]]
) -> dict[int, Path]:
    """Seed -> the folder of sweep ``name``'s run with that bottleneck seed (0: the sweep
    itself), where it is paired with the sweep (the same model, seed and test images); empty
    without seed runs."""
    paired = ("seed", "test_images", "ratio", "halve", "epochs", "train_images")
    runs = {}
    for f, doc in seeded:
        m = SEED_RUN.match(f.name)
        if not m or m["sweep"] != name or f.parent != folder.parent:
            continue
        if doc["model"] != main_doc["model"] or any(
            doc["settings"].get(k) != main_doc["settings"].get(k) for k in paired
        ):
            print(f"{f} is not paired with {folder} (other settings): left out", file=sys.stderr)
            continue
        runs[int(doc["settings"]["bottleneck_seed"])] = f
    return {0: folder, **dict(sorted(runs.items()))} if runs else {}


def _point_correct(folder: Path, point: str) -> bytes:
    """Which test images the run in ``folder`` got right at ``point`` (0 / 1 per image)."""
    doc = json.loads((folder / "validation_points" / f"{point.replace('/', '_')}.json").read_text())
    return bytes(c == "1" for c in doc["correct"])


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties: average ranks); None where either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def _interval(values: list[float | None]) -> list[float | None]:
    """The 95 % percentile interval of the bootstrap values (linear interpolation)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return [None, None]

    def at(q: float) -> float:
        pos = q * (len(v) - 1)
        lo = math.floor(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)

    return [at(0.025), at(0.975)]


def seed_noise(doc: dict, runs: dict[int, Path]) -> dict:
    """The seeded points' accuracy at every seed, the spreads, and every predictor's Spearman
    at those points with intervals over the test images alone and over images and seeds."""
    rows = {p["name"]: p for p in doc["points"]}
    per_run = {k: json.loads((f / "validation.json").read_text()) for k, f in runs.items()}
    acc = {k: {p["name"]: p["accuracy"] for p in d["points"]} for k, d in per_run.items()}
    points = [n for n in rows if all(n in a for a in acc.values())]
    seeds = list(runs)
    table = {n: [acc[k][n] for k in seeds] for n in points}
    everywhere = [p["accuracy"] for p in doc["points"]]
    out = {
        "seeds": seeds,
        "points": {
            n: {"accuracy": a, "mean": statistics.fmean(a), "range": max(a) - min(a),
                "sd": statistics.stdev(a)}
            for n, a in table.items()
        },  # fmt: skip
        "pooled_sd": math.sqrt(statistics.fmean(statistics.variance(a) for a in table.values())),
        "between_points": {"points": len(everywhere), "range": max(everywhere) - min(everywhere),
                           "sd": statistics.stdev(everywhere) if len(everywhere) > 1 else None},
    }  # fmt: skip
    out["spearman"] = _seed_spearman(doc, runs, points, table)
    return out


def _seed_spearman(doc: dict, runs: dict[int, Path], points: list[str], table: dict) -> dict:
    """Per predictor: Spearman at the seeded points at seed 0 and at the mean over the seeds,
    with 95 % intervals from resamples of the test images alone (seed 0), and of the test
    images and, per point, one of its seeds (paired: the same images for every point)."""
    rows = {p["name"]: p for p in doc["points"]}
    scores = {}
    for name in doc["correlation"]:
        s = [rows[n].get("scores", {}).get(name) for n in points]
        if all(v is not None for v in s):
            scores[name] = s
    correct = [[_point_correct(f, n) for f in runs.values()] for n in points]
    n_images = len(correct[0][0]) if correct else 0
    rng = random.Random(doc["settings"].get("seed", 0))
    boot: dict[str, tuple[list, list]] = {name: ([], []) for name in scores}
    for _ in range(doc["settings"].get("n_boot", 1000) if n_images > 1 and len(points) > 2 else 0):
        take = itemgetter(*rng.choices(range(n_images), k=n_images))
        images = [sum(take(c[0])) / n_images for c in correct]
        mixed = [sum(take(c[rng.randrange(len(c))])) / n_images for c in correct]
        for name, s in scores.items():
            boot[name][0].append(spearman(s, images))
            boot[name][1].append(spearman(s, mixed))
    means = [statistics.fmean(table[n]) for n in points]
    return {
        name: {
            "seed0": spearman(s, [table[n][0] for n in points]),
            "seed_mean": spearman(s, means),
            "ci_images": _interval(boot[name][0]),
            "ci_images_and_seeds": _interval(boot[name][1]),
        }
        for name, s in scores.items()
    }


def seed_sentence(noise: dict) -> str:
    """How large the seed noise is beside the differences between the points, in one sentence."""
    sd, between = noise["pooled_sd"], noise["between_points"]
    worst = max(v["range"] for v in noise["points"].values())
    ratio = "n/a" if not between["sd"] else f"{sd / between['sd']:.2f} times"
    return (
        f"Training noise: the bottleneck's seed moves a point's accuracy by a pooled sd of "
        f"{_pp(sd)} (max-min up to {_pp(worst)} over {len(noise['seeds'])} seeds at "
        f"{len(noise['points'])} points), against a sd of {_pp(between['sd'])} (range "
        f"{_pp(between['range'])}) between all {between['points']} points: the seed noise is "
        f"{ratio} the spread between points, and two points closer than "
        f"{_pp(1.96 * math.sqrt(2) * sd)} (1.96 x √2 x the seed sd) in one run each are within "
        "training noise."
    )


def seed_tables(noise: dict) -> str:
    seeds = noise["seeds"]
    lines = [
        f"#### Training noise: bottleneck seeds {', '.join(map(str, seeds))} at "
        f"{len(noise['points'])} points",
        "",
        "| point | " + " | ".join(f"seed {k}" for k in seeds) + " | mean | max-min | sd |",
        "|---|" + "---|" * (len(seeds) + 3),
    ]
    for name, v in noise["points"].items():
        cells = [f"{100 * a:.2f} %" for a in v["accuracy"]]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {100 * v['mean']:.2f} % | "
            f"{_pp(v['range'])} | {_pp(v['sd'])} |"
        )
    between = noise["between_points"]
    blank = " |" * len(seeds)
    lines += [
        f"| seed sd, pooled over the points |{blank} | | {_pp(noise['pooled_sd'])} |",
        f"| between all {between['points']} points (seed 0) |{blank} | "
        f"{_pp(between['range'])} | {_pp(between['sd'])} |",
        "",
        "Spearman at the seeded points [95 % CI]: resampling the test images alone (seed 0), "
        "and the test images and, per point, one of its seeds (training noise included).",
        "",
        "| predictor | seed 0 | CI, images | CI, images and seeds | mean over seeds |",
        "|---|---|---|---|---|",
    ]
    for name, v in noise["spearman"].items():
        lo, hi = v["ci_images"]
        slo, shi = v["ci_images_and_seeds"]
        lines.append(
            f"| {name} | {_f(v['seed0'])} | [{_f(lo)}, {_f(hi)}] | [{_f(slo)}, {_f(shi)}] | "
            f"{_f(v['seed_mean'])} |"
        )
    lines += ["", seed_sentence(noise), ""]
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
    loaded = [(f.parent, json.loads(f.read_text())) for f in files]
    seeded = [(f, d) for f, d in loaded if d["settings"].get("bottleneck_seed")]
    loaded = [(f.name, d) for f, d in loaded if not d["settings"].get("bottleneck_seed")]
    # network by network, the stronger bottleneck (more channels kept) first
    loaded.sort(key=lambda d: (d[1]["model"], d[1]["settings"]["ratio"], d[1]["settings"]["halve"]))
    docs = dict(loaded)
    folders = {f.parent.name: f.parent for f in files}
    summaries = {name: summarise(doc) for name, doc in docs.items()}
    print("## Overview\n")
    print(overview(summaries, docs))
    print()
    noise = {}
    for name, doc in docs.items():
        print(sweep_tables(name, doc, summaries[name]))
        runs = seed_runs(name, folders[name], doc, seeded)
        if runs:
            noise[name] = seed_noise(doc, runs)
            print(seed_tables(noise[name]))
    result = {
        name: {"model": docs[name]["model"], "bottleneck": bottleneck(docs[name]), "predictors": s}
        | ({"seeds": noise[name]} if name in noise else {})
        for name, s in summaries.items()
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
