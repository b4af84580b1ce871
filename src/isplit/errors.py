"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class IsplitError(Exception):
    """A mistake in what the user asked for or supplied (not a bug).

    The message says what was wrong and what to do about it.
    """


class PeerFailed(Exception):
    """In a run on several processes (torchrun): a collective operation failed because another
    process stopped; that process's own message says why."""
