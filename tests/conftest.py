"""Shared test helpers."""

import pytest

from isplit.cli import main


@pytest.fixture
def cli_error(capsys):
    """Run the CLI and check it failed as a user mistake: exit 2, one line on stderr."""

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("isplit: error:"), err
        return err[0]

    return run
