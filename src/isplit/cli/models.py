"""`isplit models`: the model names isplit knows."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model names isplit knows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isplit.models import list_model_names

    print("\n".join(list_model_names()))
    return 0
