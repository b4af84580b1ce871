"""A full disk, a read-only file system, no permission: every command says so on one line and
exits 2 (never a traceback), and leaves no run folder with some outputs and not others."""

import errno
import json
import os
import subprocess

import pytest

from helpers import disk_listing
from isplit.cli import main
from isplit.errors import write_error
from isplit.io import atomic_write_json, staged

PLAN = ["--bandwidth", "10Mbit/s", "--rtt", "20ms", "--device-speed", "2", "--server-speed", "50"]


def test_analyze_on_a_full_disk_leaves_no_run_folder(small_disk, cli_error):
    out = small_disk / "run"
    err = cli_error("analyze", "--limit", "32", "--quiet", "--out", str(out))
    assert "No space left on device" in err and str(out) in err
    assert disk_listing(small_disk) == []  # not per_image.npz without curves.json


def test_plan_on_a_full_disk_writes_neither_file(demo_run, small_disk, cli_error):
    out = small_disk / "plan"
    err = cli_error("plan", str(demo_run), *PLAN, "--out", str(out))
    assert "No space left on device" in err and "--out" in err
    assert disk_listing(small_disk) in ([], ["plan"])  # not plan.json without plan.png


def test_plan_over_an_earlier_plan_keeps_both_old_files(demo_run_copy, monkeypatch, cli_error):
    """The second file failing leaves the first one's old version, not a mix of two plans."""
    assert main(["plan", str(demo_run_copy), *PLAN]) == 0
    before = {n: (demo_run_copy / n).read_bytes() for n in ("plan.json", "plan.png")}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(demo_run_copy / "plan.png"))

    monkeypatch.setattr("isplit.report.figures.plot_plan", full)
    err = cli_error("plan", str(demo_run_copy), *PLAN, "--rtt", "40ms")
    assert err.startswith(f"isplit: error: cannot write {demo_run_copy / 'plan.png'}: No space")
    assert {n: (demo_run_copy / n).read_bytes() for n in before} == before
    assert not [p for p in demo_run_copy.iterdir() if p.name.endswith(".tmp")]


def test_a_read_only_file_system_is_one_line(demo_run, tmp_path, cli_error):
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (not root)")
    try:
        err = cli_error("plan", str(demo_run), *PLAN, "--out", str(ro / "plan"))
        assert "Read-only file system" in err and "write somewhere else" in err
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "free some space there"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "write somewhere else"),
        (errno.EACCES, "change the permissions"),
    ],
)
def test_write_errors_say_what_to_do(code, words):
    message = write_error(OSError(code, os.strerror(code), "/data/run/curves.json"))
    assert message.startswith(f"cannot write /data/run/curves.json: {os.strerror(code)}; ")
    assert words in message and "\n" not in message


def test_other_os_errors_are_bugs_not_user_mistakes(monkeypatch):
    assert write_error(OSError(errno.EBADF, "Bad file descriptor")) is None

    def broken(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    from isplit.cli import points

    monkeypatch.setattr(points, "run", broken)
    with pytest.raises(OSError):  # a traceback: it is ours to fix
        main(["points", "--model", "demo-vgg16"])


def test_staged_writes_land_together_or_not_at_all(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(OSError), staged():
        atomic_write_json(tmp_path / "a.json", {"v": 2})
        atomic_write_json(tmp_path / "b.json", {"v": 2})
        assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1}  # not yet renamed
        raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporaries either
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1}
    with staged(), staged():  # nested: one group
        atomic_write_json(tmp_path / "a.json", {"v": 3})
        atomic_write_json(tmp_path / "b.json", {"v": 3})
    assert [json.loads((tmp_path / n).read_text())["v"] for n in ("a.json", "b.json")] == [3, 3]
