"""Imports follow the data: the report imports the results, never the reverse. A result saves its
data (JSON, NPZ) without the drawing code; the figures are drawn by :mod:`isplit.report` from the
saved results, called by the commands. Every import counts, also one inside a function or under
``TYPE_CHECKING``, and so does a module named in a string (the lazy ``__getattr__`` loaders)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "isplit"
#: the packages that compute and hold results: none of them may reach the report
RESULTS = ("analysis", "classes", "validation", "deploy")
#: the modules that hold the results written to a run folder
RESULT_MODULES = (
    "isplit.analysis.result",
    "isplit.classes.report",
    "isplit.validation.result",
    "isplit.deploy.plan",
    "isplit.results",
)


def _module(path: Path, src: Path) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, src: Path = SRC) -> set[str]:
    """Every module ``path`` imports anywhere in its body (relative imports resolved), and every
    string constant that names an isplit module."""
    module = _module(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("isplit."):
                names.add(node.value)
    return names


def _reaches(names: set[str], package: str) -> list[str]:
    return sorted(n for n in names if n == package or n.startswith(package + "."))


def test_the_parser_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "isplit" / "validation"
    pkg.mkdir(parents=True)
    (pkg / "result.py").write_text(
        "def save():\n    from isplit.report.figures import plot\n"
        "    from ..report import outputs\n"
        "    import matplotlib.pyplot\n"
        "LAZY = {'x': 'isplit.report.html'}\n"
    )
    names = imported(pkg / "result.py", tmp_path / "isplit")
    assert _reaches(names, "isplit.report") == [
        "isplit.report",
        "isplit.report.figures",
        "isplit.report.figures.plot",
        "isplit.report.html",
        "isplit.report.outputs",
    ]
    assert _reaches(names, "matplotlib") == ["matplotlib.pyplot"]


@pytest.mark.parametrize(
    "path",
    sorted(p for stage in RESULTS for p in (SRC / stage).rglob("*.py")) + [SRC / "results.py"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_results_and_computation_do_not_import_the_report(path):
    names = imported(path)
    assert not _reaches(names, "isplit.report"), f"{path.relative_to(SRC)} imports the report"
    assert not _reaches(names, "matplotlib"), f"{path.relative_to(SRC)} imports matplotlib"


def test_only_the_report_draws_and_only_the_report_and_commands_call_it():
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC).parts[0]
        names = imported(path)
        if where != "report":
            assert not _reaches(names, "matplotlib"), f"{path.relative_to(SRC)} draws"
        if where not in ("report", "cli"):
            assert not _reaches(names, "isplit.report"), f"{path.relative_to(SRC)} calls report"


SAVE_WITHOUT_DRAWING = """
import dataclasses, json, sys
from pathlib import Path
import isplit.analysis.result, isplit.classes.report, isplit.validation.result, isplit.deploy.plan
from isplit.analysis import Analysis
from isplit.classes import classes_report
from isplit.deploy.plan import Plan
from isplit.validation import ValidationReport

def drawing():
    return [m for m in sys.modules if m.split(".")[0] == "matplotlib" or m.startswith("isplit.rep")]

run, out = Path(sys.argv[1]), Path(sys.argv[2])
imported = drawing()
analysis = Analysis.load(run)
analysis.save(out / "analysis")
classes_report(analysis, out=out / "classes")
for cls in (ValidationReport, Plan):
    cls(**{f.name: None for f in dataclasses.fields(cls)}).save(out / cls.__name__)
saved = drawing()
files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
print(json.dumps({"imported": imported, "saved": saved, "files": files}))
"""


def test_results_import_and_save_without_matplotlib(demo_run, tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", SAVE_WITHOUT_DRAWING, str(demo_run), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["imported"] == [] and seen["saved"] == []
    assert seen["files"] == [
        "Plan/plan.json",
        "ValidationReport/validation.json",
        "analysis/curves.json",
        "analysis/per_image.npz",
        "classes/classes.json",
    ]  # the data only: the figures are the commands' (tests/report/test_outputs.py)
