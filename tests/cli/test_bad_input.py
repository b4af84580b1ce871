"""Bad input to analyze / validate (and their --nproc launcher): one clear line, exit 2, checked
before any work, nothing half-written."""

import os

import pytest

ARGS = ["analyze", "--limit", "16", "--quiet"]


@pytest.fixture
def blocker(tmp_path):
    """A regular file where a folder would have to be."""
    path = tmp_path / "file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("nproc", [[], ["--nproc", "2"]])
def test_output_folder_that_cannot_be_created(blocker, cli_error, nproc):
    message = cli_error(*ARGS, *nproc, "--out", str(blocker / "run"))
    assert "cannot create the output folder" in message and "is a file" in message
    message = cli_error(*ARGS, *nproc, "--out", str(blocker))
    assert "is a file" in message
    assert blocker.read_text() == "not a folder"


def test_validate_into_a_file(blocker, cli_error):
    assert "is a file" in cli_error("validate", "--limit", "16", "--out", str(blocker / "v"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, cli_error):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "permission denied" in cli_error(*ARGS, "--out", str(locked / "run"))
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_launcher_checks_before_starting_processes(tmp_path, cli_error):
    out = tmp_path / "run"
    assert "fp16 needs a CUDA GPU" in cli_error(
        *ARGS, "--nproc", "2", "--precision", "fp16", "--out", str(out)
    )
    assert "--nproc must be at least 1" in cli_error(*ARGS, "--nproc", "-1", "--out", str(out))
    assert not out.exists()


def test_only_analyze_and_validate_run_distributed(monkeypatch, cli_error):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert "only analyze and validate run on several processes" in cli_error("models")
