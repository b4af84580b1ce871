"""Public names of a package imported on first use (PEP 562), so that importing the package does
not import what defines them (torch, matplotlib, scipy, ...).

In the package's ``__init__``::

    _LAZY = {"analyze": "isplit.analysis", ...}  # public name -> the module that defines it
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY)

Only the standard library is imported here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    module_name: str, mapping: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``(__getattr__, __dir__)`` of the module ``module_name``, whose public
    names ``mapping`` (name -> the module that defines it) are imported on first access and then
    kept in the module's namespace (later look-ups skip ``__getattr__``). Another name raises
    AttributeError naming the module, as Python's own look-up does."""

    def __getattr__(name: str) -> Any:
        source = mapping.get(name)
        if source is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[module_name]), *mapping})

    return __getattr__, __dir__
