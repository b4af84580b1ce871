"""A run on several processes prints and records the whole run's images and pace, not rank 0's
share (issue 27, item 8)."""

import json

from helpers import isplit_process
from isplit.analysis.loop import run_timing


def test_run_timing_sums_the_images_in_the_slowest_processs_time():
    ranks = [
        {"setup_seconds": 1.0, "seconds": 2.0, "images": 10, "data_wait_seconds": 0.2},
        {"setup_seconds": 1.5, "seconds": 4.0, "images": 11, "data_wait_seconds": 0.6},
    ]
    t = run_timing(ranks)
    assert t["images"] == 21 and t["seconds"] == 4.0 and t["images_per_s"] == 5.2
    assert t["setup_seconds"] == 1.5 and t["processes"] == 2
    assert t["data_wait_seconds"] == 0.4 and t["data_wait_share"] == 0.1


def test_two_processes_print_and_record_every_image(tmp_path):
    argv = [
        "analyze",
        "--data",
        "digits",
        "--match-classes",
        "position",
        "--limit",
        "41",
        "--batch-size",
        "8",
        "--quiet",
    ]
    argv += ["--workers", "0", "--predictors", "cui", "--nproc", "2", "--out", str(tmp_path)]
    proc = isplit_process(*argv)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "analysed 41 images in" in out  # rank 0 has 20 of them
    timing = json.loads((tmp_path / "curves.json").read_text())["timing"]
    assert timing["images"] == 41 and timing["processes"] == 2
