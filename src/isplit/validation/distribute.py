"""A sweep's points as files, so that it resumes and shares out: each finished point is written
to ``validation_points/<name>.json`` in the output folder (its trained bottleneck beside it as
``<name>.safetensors``), an interrupted sweep resumes at the first unfinished point, and under
torchrun the points still to do are shared out among the processes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from isplit import distributed
from isplit.errors import IsplitError
from isplit.io import atomic_write_json, read_json
from isplit.runfolder import RunFolder

log = logging.getLogger("isplit")


def point_file(out: str | Path, name: str, suffix: str = ".json") -> Path:
    """Where a validation run in ``out`` keeps what it found at point ``name``."""
    return RunFolder(out) / RunFolder.VALIDATION_POINTS / f"{name.replace('/', '_')}{suffix}"


def bottleneck_file(run: str | Path, name: str) -> Path:
    """Where a validation run keeps the trained bottleneck of point ``name``."""
    return point_file(run, name, ".safetensors")


def finished_points(out: Path, names: Sequence[str], fingerprint: str) -> set[str]:
    """The points whose validation is already in ``out`` (made with these settings)."""
    done = set()
    for name in names:
        file = point_file(out, name)
        if not file.exists():
            continue
        if read_json(file).get("fingerprint") != fingerprint:
            raise IsplitError(
                f"{file} was made with other validation settings or another "
                "model; use another output folder or delete validation_points/"
            )
        log.info("validation of %s already done (%s)", name, file)
        done.add(name)
    return done


def validate_shared(
    out: Path,
    names: Sequence[str],
    fingerprint: str,
    validate_points: Callable[[list[str]], Iterator[tuple[str, dict]]],
) -> None:
    """The points of ``names`` not yet finished in ``out``, shared out among the processes:
    ``validate_points(mine)`` yields ``(name, result)`` for this process's share (it is not
    called when the share is empty), and each result is written to its file as it comes. A
    mistake found by one process stops them all."""
    done = finished_points(out, names, fingerprint)
    distributed.barrier()  # every process has seen the same finished points
    todo = [n for n in names if n not in done]
    mine = todo[distributed.rank() :: distributed.world_size()]

    def validate_mine() -> None:
        if not mine:
            return
        for name, result in validate_points(mine):
            atomic_write_json(point_file(out, name), result)

    distributed.agree(validate_mine)


def read_results(out: Path, names: Sequence[str]) -> list[dict]:
    """Every point's result, in ``names``' order (once every process wrote its own)."""
    return [read_json(point_file(out, n)) for n in names]
