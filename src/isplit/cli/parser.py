"""The argument parser of isplit and of each of its commands: defaults shown in ``--help``, and
a mistake on the command line answered in one line."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help unless the help already says it or there
    is no default worth showing (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """The parser of isplit and of each of its commands: defaults shown in --help; an argument
    error is one line on stderr, ``isplit COMMAND: error: ... (see isplit COMMAND --help)``,
    exit 2 (not argparse's usage block)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse's messages may span lines
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:  # type: ignore[override]
        """As argparse's, but an unknown argument is blamed on the command it was given to
        (``isplit analyze: error: unrecognized arguments: --bogus``), with the closest option
        of that command when one is near."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self._command_parser(parsed)
            message = f"unrecognized arguments: {' '.join(extras)}"
            near = _closest_option(owner, extras)
            owner.error(f"{message}; did you mean {near}?" if near else message)
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser of the command in ``parsed`` (this one when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = getattr(parsed, action.dest, None)
                return action.choices.get(chosen, self)
        return self


def _closest_option(parser: argparse.ArgumentParser, extras: list[str]) -> str | None:
    """The option of ``parser`` closest to the first unknown option in ``extras``, if any."""
    unknown = next((e.split("=", 1)[0] for e in extras if e.startswith("--")), None)
    if unknown is None:
        return None
    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    near = difflib.get_close_matches(unknown, known, n=1, cutoff=0.75)
    return near[0] if near else None
