"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


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
