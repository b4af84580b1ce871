"""Quantities written with units on the command line: sizes, bandwidths, durations, speeds
(``64MiB``, ``10Mbit/s``, ``20ms``, ``5GFLOPS``). Plain Python: the server reads its sizes
without importing torch."""

from __future__ import annotations

import math
import re

from isplit.errors import IsplitError

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_PREFIX.update({"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4})
_BANDWIDTH = re.compile(rf"^{_NUMBER}\s*(?P<prefix>[kKMGT]i?)?(?P<unit>bit|b|B|byte)(?:/s|ps)$")
_DURATION = re.compile(rf"^{_NUMBER}\s*(?P<unit>ns|us|µs|ms|s|min)$")
_DURATIONS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_SIZE = re.compile(rf"^{_NUMBER}\s*(?:(?P<prefix>[kKMGT]i?)?(?P<unit>B|bytes?))?$")
_SPEED = re.compile(rf"^{_NUMBER}\s*(?:(?P<prefix>[kKMGT])?(?P<unit>FLOPS|FLOP/s|flops|flop/s))?$")


def _match(pattern: re.Pattern, text, what: str, examples: str) -> re.Match:
    m = pattern.match(str(text).strip())
    if m is None:
        raise IsplitError(f"{what} {text!r} is not understood; write it like {examples}")
    return m


def parse_bandwidth(text: str) -> float:
    """Bytes per second from ``10Mbit/s``, ``10 Mbps``, ``1.5MB/s``, ``100kB/s``, ``1GiB/s``
    (``b``/``bit``: bits, ``B``: bytes; k, M, G decimal, Ki, Mi, Gi binary)."""
    m = _match(_BANDWIDTH, text, "bandwidth", "10Mbit/s, 10Mbps, 1.5MB/s or 100kB/s")
    value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    value /= 8.0 if m["unit"] in ("bit", "b") else 1.0
    if not value > 0 or not math.isfinite(value):
        raise IsplitError(f"bandwidth {text!r} must be more than 0")
    return value


def parse_duration(text: str) -> float:
    """Seconds from ``20ms``, ``1.5 s``, ``300us``, ``0.5min``."""
    m = _match(_DURATION, text, "duration", "20ms, 1.5s or 300us")
    value = float(m["num"]) * _DURATIONS[m["unit"]]
    if not math.isfinite(value):
        raise IsplitError(f"duration {text!r} is too large")
    return value


def parse_size(text: str | int) -> int:
    """Bytes from ``4096``, ``64kB``, ``1.5MB``, ``2MiB``."""
    m = _match(_SIZE, text, "size", "4096, 64kB, 1.5MB or 2MiB")
    value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    if not math.isfinite(value) or value < 1:
        raise IsplitError(f"size {text!r} must be at least 1 byte")
    return int(round(value))


def parse_speed(text: str) -> float | None:
    """FLOP/s from ``5GFLOPS``, ``500 MFLOPS``, ``1.2TFLOPS`` or a bare number of GFLOPS;
    None for ``measured`` (time the parts on this machine)."""
    if str(text).strip().lower() == "measured":
        return None
    m = _match(_SPEED, text, "speed", "measured, 5GFLOPS, 500MFLOPS or 5 (GFLOPS)")
    if m["unit"] is None:  # a bare number: GFLOPS
        value = float(m["num"]) * 1e9
    else:
        value = float(m["num"]) * _PREFIX[m["prefix"] or ""]
    if not value > 0 or not math.isfinite(value):
        raise IsplitError(f"speed {text!r} must be more than 0")
    return value
