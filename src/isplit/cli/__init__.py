"""The command line: one module per command (its parser and its handler)."""

from isplit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
