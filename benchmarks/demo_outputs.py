"""Run every result-writing command of isplit on the demo (small, CPU) into one folder, or
compare two such folders: the check that a restructuring changed no answer.

    python benchmarks/demo_outputs.py run OUT            # analyze, validate, classes, plan, export
    python benchmarks/demo_outputs.py compare OLD NEW    # every JSON number within --rtol

Run it with one version of isplit, then another (``PYTHONPATH=/path/to/other/src``), and compare.
Fields that measure time, name paths or versions are ignored; everything else must agree (numbers
within ``--rtol``). Prints one JSON object: the files compared and each difference found.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

#: Keys whose values depend on the run (time, paths, machine, version), not on the answer.
IGNORED = {
    "timing",
    "format",
    "isplit_version",
    "seconds",
    "elapsed_s",
    "wall_s",
    "created",
    "path",
    "out",
    "analysis",
    "command",
    "latency_ms",
    "head_ms",
    "tail_ms",
    "device_ms",
    "server_ms",
    "timings",
    "measured",
    "run",
}
#: The files compared (relative to OUT).
FILES = (
    "run/curves.json",
    "run/validation.json",
    "run/classes.json",
    "run/plan.json",
    "export/manifest.json",
)


def _isplit(*argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("+ isplit", " ".join(argv), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "isplit", *argv], check=True, env=env)


def run(out: Path) -> None:
    run_dir, cpu = str(out / "run"), ("--device", "cpu")
    _isplit("analyze", "--limit", "400", "--batch-size", "50", "--workers", "0", "--quiet",
            "--predictors", "probe,taylor,cam-share,pca-probe", *cpu, "--out", run_dir)  # fmt: skip
    # validate's --batch-size is left at its default: it reaches the bottleneck training only
    # since the restructuring (a fixed bug), and the default is what both versions share
    _isplit("validate", "--analysis", run_dir, "--points", "features.9", "features.23",
            "--epochs", "1", "--train-limit", "600", "--test-limit", "300", *cpu,
            "--workers", "0", "--quiet", "--bootstrap", "50")  # fmt: skip
    _isplit("classes", run_dir, "--classes", "T-shirt/top,Trouser,Sandal", "--quiet")
    speeds = ("--device-speed", "2GFLOPS", "--server-speed", "20TFLOPS")
    _isplit("plan", run_dir, "--bandwidth", "10Mbit/s", "--rtt", "20ms", *speeds, "--repeats", "1")
    _isplit("export", "--analysis", run_dir, "--out", str(out / "export"),
            "--check-images", "16", *cpu)  # fmt: skip


def _diff(a, b, where: str, rtol: float, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED or k.endswith(("_ms", "_s", "_seconds")):
                continue
            if k not in a or k not in b:
                found.append(f"{where}.{k}: only in {'new' if k in b else 'old'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", rtol, found)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{where}: {len(a)} items, now {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", rtol, found)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12) or (a != a and b != b)):
            found.append(f"{where}: {a} -> {b}")
    elif a != b:
        found.append(f"{where}: {a!r} -> {b!r}")


def compare(old: Path, new: Path, rtol: float) -> dict:
    result: dict = {"compared": [], "missing": [], "differences": {}}
    for name in FILES:
        a, b = old / name, new / name
        if not (a.is_file() and b.is_file()):
            result["missing"].append(name)
            continue
        found: list[str] = []
        _diff(json.loads(a.read_text()), json.loads(b.read_text()), name, rtol, found)
        result["compared"].append(name)
        if found:
            result["differences"][name] = found
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("old", type=Path)
    cmp.add_argument("new", type=Path)
    cmp.add_argument("--rtol", type=float, default=1e-5)
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.out)
        return 0
    result = compare(args.old, args.new, args.rtol)
    print(json.dumps(result, indent=2))
    return 1 if result["differences"] or result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
