"""Shared test fixtures."""

import pytest

from helpers import user_error
from isplit.cli import main


@pytest.fixture
def cli_error(capsys):
    """Run the CLI in this process and check it failed as a user mistake (exit 2, one line on
    stderr: :func:`helpers.user_error`); that line."""

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        return user_error(code, capsys.readouterr().err)

    return run
