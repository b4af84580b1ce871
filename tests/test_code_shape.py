"""The shape the code keeps: small modules and functions, so that a newcomer finds where a change
goes from the tree alone. A longer function is allowed where a comment on the line before its
``def`` starts with ``# long:`` and says why it reads better in one piece."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "isplit"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MODULES = sorted(SRC.rglob("*.py"))


def _rel(path: Path, root: Path = SRC.parent) -> str:
    return str(path.relative_to(root))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)}: {lines} lines (at most {MAX_MODULE_LINES})"


def _long_functions(path: Path, root: Path = SRC.parent) -> list[str]:
    text = path.read_text()
    source = text.splitlines()
    too_long = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        length = node.end_lineno - first + 1
        excused = first >= 2 and source[first - 2].strip().startswith("# long:")
        if length > MAX_FUNCTION_LINES and not excused:
            too_long.append(f"{_rel(path, root)}:{node.lineno} {node.name} ({length} lines)")
    return too_long


def test_functions_are_short():
    found = [f for path in MODULES for f in _long_functions(path)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(found)


def test_the_shape_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    probe = tmp_path / "probe.py"
    probe.write_text(f"def f():\n{body}\n\n\n# long: one table\ndef g():\n{body}\n")
    assert [f.split()[1] for f in _long_functions(probe, tmp_path)] == ["f"]
