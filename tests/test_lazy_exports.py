"""The packages that import their public names on first use (:func:`isplit._lazy.lazy_exports`):
every name resolves to the object its module defines, ``dir()`` lists them, an unknown name is an
AttributeError naming the package, and importing the packages imports no torch (the tail server
runs on onnxruntime without it; ``import isplit`` and ``--help`` do not pay for it)."""

import importlib
import subprocess
import sys

import pytest

from isplit._lazy import lazy_exports

PACKAGES = ("isplit", "isplit.deploy", "isplit.importance")


def _names(package: str) -> list[tuple[str, str, str]]:
    module = importlib.import_module(package)
    return [(package, name, source) for name, source in sorted(module._LAZY.items())]


@pytest.mark.parametrize(
    "package, name, source",
    [row for p in PACKAGES for row in _names(p)],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_lazily_exported_name_resolves_to_its_module_s_object(package, name, source):
    module = importlib.import_module(package)
    expected = getattr(importlib.import_module(source), name)
    assert getattr(module, name) is expected
    assert getattr(module, name) is expected  # again, from the package's namespace
    assert name in dir(module)
    ns: dict = {}
    exec(f"from {package} import {name}", ns)
    assert ns[name] is expected


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_listed_by_dir_and_an_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'no_such'"):
        module.no_such  # noqa: B018
    assert not hasattr(module, "no_such")
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such", {})


def test_the_helper_on_a_module_of_its_own(tmp_path, monkeypatch):
    (tmp_path / "lazypkg.py").write_text(
        "from isplit._lazy import lazy_exports\n"
        "_LAZY = {'dumps': 'json', 'sqrt': 'math'}\n"
        "__getattr__, __dir__ = lazy_exports(__name__, _LAZY)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazypkg", raising=False)
    lazypkg = importlib.import_module("lazypkg")
    try:
        assert "dumps" not in vars(lazypkg) and {"dumps", "sqrt"} <= set(dir(lazypkg))
        import json

        assert lazypkg.dumps is json.dumps
        assert vars(lazypkg)["dumps"] is json.dumps  # kept: later look-ups skip __getattr__
        with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'loads'"):
            lazypkg.loads  # noqa: B018
    finally:
        sys.modules.pop("lazypkg", None)
    assert callable(lazy_exports("x", {})[0])


def test_importing_the_packages_imports_no_torch():
    code = (
        "import sys\n"
        "import isplit, isplit.deploy, isplit.importance\n"
        "import isplit.deploy.manifest, isplit.deploy.wire\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
