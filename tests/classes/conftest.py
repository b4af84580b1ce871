"""A demo run shared by the classes tests."""

import pytest

from isplit.cli import main


@pytest.fixture(scope="package")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["analyze", "--limit", "300", "--out", str(out), "--quiet"]) == 0
    return out
