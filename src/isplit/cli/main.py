"""The command line: the parser of every command, and :func:`main`. Thin: each command's module
(``isplit.cli.analyze``, ...) parses, calls the library and prints.

Only the standard library is imported at the top of the command modules: each command imports
what it needs (torch, matplotlib, scipy, ...) when it runs, so that ``--help`` and argument errors
answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from isplit.cli import (
    analyze,
    classes,
    export,
    infer,
    models,
    plan,
    points,
    report,
    serve,
    train,
    validate,
)
from isplit.cli.options import check_output_folder
from isplit.cli.parser import Parser
from isplit.errors import IsplitError, PeerFailed, write_error

#: The commands, in the order ``--help`` lists them: each module's ``add_parser`` adds its parser.
COMMANDS = (analyze, validate, classes, points, report, models, train, export, serve, infer, plan)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``isplit`` and of all its commands."""
    parser = Parser(prog="isplit", description="Where to cut a CNN for split computing (I-SPLIT).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what isplit does")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """``--nproc K`` (analyze, validate): the output folder is checked before any process starts."""
    from isplit import distributed

    out = {"analyze": analyze, "validate": validate}[args.command].output_folder(args)
    return distributed.start(
        args.nproc,
        args.device,
        args.precision,
        argv,
        run=lambda: args.func(args),
        check=lambda: check_output_folder(out),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); the exit code: 0, 2 for a
    user mistake (one line on stderr), 1 when another process of a distributed run failed, 130
    when interrupted, 141 when the program reading its output stopped reading. A write the user
    can fix (a full disk, a read-only folder, no permission) fails like a user mistake: one
    line, exit 2."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="isplit: %(levelname)s: %(message)s",
    )
    try:
        if "LOCAL_RANK" in os.environ:  # perhaps torchrun's (isplit.distributed imports torch)
            from isplit.distributed import launched, run_rank

            if launched():
                device = getattr(args, "device", None)  # commands without one cannot run launched
                return run_rank(args.command, device, lambda: args.func(args))
        if getattr(args, "nproc", None) is not None:
            return _launch(args, argv)
        return args.func(args)
    except BrokenPipeError:  # an OSError, but not a write the user can fix
        return _reader_gone()
    except (IsplitError, OSError) as e:
        from isplit.distributed import report_error

        message = str(e) if isinstance(e, IsplitError) else write_error(e)
        if message is None:
            raise  # not a write error: a bug
        if not report_error(message):
            print(f"isplit: error: {message}", file=sys.stderr)
        return 2
    except PeerFailed as e:
        from isplit.distributed import ERROR_FILE_ENV

        if ERROR_FILE_ENV not in os.environ:  # the launcher prints the failed process's error
            print(f"isplit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"isplit: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


def _reader_gone() -> int:
    """The program reading the output stopped (``isplit points | head``): stop without a
    traceback, as a tool stopped by SIGPIPE does (exit 141); stdout goes to /dev/null so that
    Python's last flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a stdout without a file (captured)
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
