"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2;
and the write errors (a full disk, no permission) it reports the same way."""

from __future__ import annotations

import errno
import os

#: What to do about a failed write, by its errno: a user's to fix, not a bug.
_WRITE_FIXES = {
    errno.ENOSPC: "free some space there or write somewhere else (--out)",
    errno.EDQUOT: "free some of your quota or write somewhere else (--out)",
    errno.EFBIG: "write somewhere else (--out)",
    errno.EROFS: "write somewhere else (--out)",
    errno.EACCES: "write somewhere you may write (--out), or change the permissions",
    errno.EPERM: "write somewhere you may write (--out), or change the permissions",
}


class IsplitError(Exception):
    """A mistake in what the user asked for or supplied (not a bug).

    The message says what was wrong and what to do about it.
    """


def did_you_mean(name: str, choices, n: int = 3) -> str:
    """`` (did you mean a, b?)`` with the choices closest to ``name``, or ``""`` when none is
    close: the hint every "unknown ..." message carries."""
    import difflib

    close = difflib.get_close_matches(name, [str(c) for c in choices], n=n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


class PeerFailed(Exception):
    """In a run on several processes (torchrun): a collective operation failed because another
    process stopped; that process's own message says why."""


def write_error(e: OSError, where: str | os.PathLike | None = None) -> str | None:
    """The one line a failed write gives (``cannot write PLACE: No space left on device; free
    some space ...``), or None when ``e`` is not a write error the user can fix (a bug then).
    ``where``: the place to name, by default the file of ``e``."""
    fix = _WRITE_FIXES.get(e.errno)
    if fix is None:
        return None
    place = where if where is not None else e.filename
    what = f"cannot write {os.fspath(place)}" if place is not None else "cannot write"
    return f"{what}: {e.strerror or os.strerror(e.errno)}; {fix}"
