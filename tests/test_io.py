"""Result files are written whole or not at all, as ordinary files, and read back with errors
that say what to do."""

import json
import os
import stat

import numpy as np
import pytest

from isplit import io
from isplit.errors import IsplitError
from isplit.io import atomic_write_bytes, atomic_write_json, atomic_write_npz, read_json


def test_json_and_npz_round_trip_into_new_folders(tmp_path):
    path = tmp_path / "a" / "b" / "result.json"
    atomic_write_json(path, {"best": "features.4", "cui": [0.5, 0.25]})
    assert read_json(path) == {"best": "features.4", "cui": [0.5, 0.25]}
    assert path.read_text().startswith("{\n  ")  # indented: people read these files

    arrays = tmp_path / "per_image.npz"
    atomic_write_npz(arrays, cui=np.arange(6.0).reshape(2, 3), labels=np.array([1, 2]))
    with np.load(arrays) as f:
        np.testing.assert_array_equal(f["cui"], np.arange(6.0).reshape(2, 3))
        np.testing.assert_array_equal(f["labels"], [1, 2])


def test_a_written_file_has_ordinary_permissions(tmp_path):
    atomic_write_bytes(tmp_path / "x.bin", b"x")
    mode = stat.S_IMODE((tmp_path / "x.bin").stat().st_mode)
    assert mode == 0o666 & ~io._UMASK  # as open() makes them, not mkstemp's 0600


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "curves.json"
    atomic_write_json(path, {"version": "old"})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"version": "new", "bad": Unserialisable()})
    assert read_json(path) == {"version": "old"}

    def interrupted(f):
        f.write(b'{"version": "ne')
        raise KeyboardInterrupt  # Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        io._atomic(path, interrupted)
    assert read_json(path) == {"version": "old"}
    assert os.listdir(tmp_path) == ["curves.json"]


def test_read_json_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(IsplitError) as missing:
        read_json(tmp_path / "run" / "curves.json", what="analysis run")
    message = str(missing.value)
    assert "curves.json not found" in message and "isplit analysis run folder" in message
    assert str(tmp_path / "run") in message

    broken = tmp_path / "validation.json"
    broken.write_text('{"points": [1, 2')  # truncated
    with pytest.raises(IsplitError, match=r"validation\.json is not valid JSON"):
        read_json(broken)

    binary = tmp_path / "plan.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IsplitError, match="not valid JSON"):
        read_json(binary)


def test_read_json_reads_what_json_wrote(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"a": [1, None, "é"]}))
    assert read_json(path) == {"a": [1, None, "é"]}
