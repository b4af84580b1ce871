"""The typed results that the stages after the analysis write into a run folder
(:class:`~isplit.validation.ValidationReport`, :class:`~isplit.classes.ClassesReport`,
:class:`~isplit.deploy.plan.Plan`): one way to turn them into the JSON written (their fields in
order, with the format version first) and to read them back (through
:meth:`~isplit.runfolder.RunFolder.read`, which upgrades older layouts). They write data only;
drawing them is :mod:`isplit.report`'s."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import ClassVar, TypeVar

from isplit.runfolder import FORMAT, RunFolder

R = TypeVar("R", bound="RunResult")


class RunResult:
    """A dataclass written to the run folder's file :attr:`FILE`."""

    FILE: ClassVar[str]  # the file's name in the run folder (a RunFolder constant)
    WHAT: ClassVar[str]  # what the file holds, for error messages
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # fields left out of the file while they are None

    def to_json(self) -> dict:
        doc = {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}
        return {k: v for k, v in doc.items() if not (k in self.OPTIONAL and v is None)}

    @classmethod
    def from_json(cls: type[R], doc: dict) -> R:
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        """From a run folder, or from the file itself."""
        path = Path(path)
        folder, name = (path, cls.FILE) if path.is_dir() else (path.parent, path.name)
        return cls.from_json(RunFolder(folder).read(name, cls.WHAT))

    def save(self, out: str | os.PathLike) -> Path:
        """Write the JSON into the folder ``out`` (atomically); returns its path. The data only:
        the commands draw the figure beside it (:mod:`isplit.report.outputs`)."""
        from isplit.io import atomic_write_json

        path = RunFolder(out) / self.FILE
        atomic_write_json(path, self.to_json())
        return path
