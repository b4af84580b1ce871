"""The parts of an export, their files and tensor names, and the optional packages they need:
what every deployment module shares, importable without torch (the tail server runs on
onnxruntime alone, and torch's import alone takes about 500 MB)."""

from __future__ import annotations

from isplit.deploy.manifest import ACTIVATION, INPUT, LOGITS, SCALE, ZERO_POINT
from isplit.errors import IsplitError

HEAD, TAIL, TAIL_INT8 = "head", "tail", "tail_int8"
#: part -> (ONNX file, input names, output names)
PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    HEAD: ("head.onnx", [INPUT], [ACTIVATION]),
    TAIL: ("tail.onnx", [ACTIVATION], [LOGITS]),
    TAIL_INT8: ("tail_int8.onnx", [ACTIVATION, SCALE, ZERO_POINT], [LOGITS]),
}
BOTTLENECK_FILE = "bottleneck.safetensors"


def require(*modules: str) -> None:
    """An IsplitError naming the install command when an optional package is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise IsplitError(
            f"this needs {', '.join(missing)}, part of isplit's deployment extra: "
            "pip install 'isplit[serve]'"
        )


def first_line(e: BaseException) -> str:
    """``e``'s type and the first line of its message (tool errors run to pages)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
