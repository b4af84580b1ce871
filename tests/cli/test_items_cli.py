"""What the command line answers before and after a run: argument errors in one line, options
that do what their help says (or are not offered), and tables whose columns never run into each
other (issue 27, items 10, 11, 12, 15)."""

import argparse
import os
import re
import subprocess
import sys
import types
from contextlib import contextmanager

import pytest

from isplit.cli import build_parser, main


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def argument_error(capsys, *argv: str) -> str:
    """Run the command line on ``argv``, check it stopped on an argument error (exit 2, one line
    on stderr, no usage block); that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1, err
    assert "usage:" not in err and "Traceback" not in err
    return lines[0]


# -- item 12: an argument error is one line ---------------------------------------------------


@pytest.mark.parametrize(
    "argv,start,words",
    [
        ([], "isplit: error:", "required: command"),
        (["bogus"], "isplit: error:", "invalid choice: 'bogus'"),
        (["serve", "x", "--port", "abc"], "isplit serve: error:", "'abc' is not a port"),
        (["analyze", "--max-bytes", "1.5"], "isplit analyze: error:", "whole number"),
        (["classes"], "isplit classes: error:", "required: run"),
        (["infer", "x", "y.png"], "isplit infer: error:", "--server"),
    ],
)
def test_argument_errors_are_one_line(capsys, argv, start, words):
    line = argument_error(capsys, *argv)
    assert line.startswith(start) and words in line, line
    assert line.endswith(f"(see {start.split(':')[0]} --help)"), line


@pytest.mark.parametrize("command", list(subcommands()))
def test_an_unknown_option_is_blamed_on_its_command_in_one_line(capsys, command):
    required = {"classes": ["run"], "report": ["run"], "serve": ["d"], "export": ["--out", "e"]}
    required |= {"train": ["--epochs", "1", "--out", "w.pth"]}
    required |= {"infer": ["d", "i.png", "--server", "http://h:1"]}
    required |= {"plan": ["run", "--bandwidth", "1", "--rtt", "1"]}
    line = argument_error(capsys, command, *required.get(command, []), "--no-such-option")
    assert line == (
        f"isplit {command}: error: unrecognized arguments: --no-such-option "
        f"(see isplit {command} --help)"
    )


def test_a_misspelt_option_gets_the_closest_one(capsys):
    line = argument_error(capsys, "analyze", "--limt", "3")
    assert "unrecognized arguments: --limt 3; did you mean --limit?" in line


# -- item 12: serve's port ---------------------------------------------------------------------


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_serve_refuses_a_port_out_of_range(capsys, port):
    line = argument_error(capsys, "serve", "d", "--port", port)
    assert line.startswith("isplit serve: error: argument --port:") and "0 to 65535" in line


def test_serve_takes_every_port_in_range():
    parser = build_parser()
    for port in (0, 1, 8000, 65535):
        assert parser.parse_args(["serve", "d", "--port", str(port)]).port == port


# -- item 10: train's --weights default is what train does -------------------------------------


def test_train_help_states_the_weights_train_starts_from(monkeypatch, tmp_path):
    words = " ".join(subcommands()["train"].format_help().split())
    weights_help = re.search(r"--weights WEIGHTS (.*?) --seed", words).group(1)
    assert "(default: none, random init" in weights_help
    assert "pretrained weights for a timm model" not in weights_help
    assert "packaged weights" not in weights_help
    # ... and that is what training starts from, for a demo network and a timm model alike
    import isplit.models.train as training

    asked = []

    def load_model(model, weights, **kwargs):
        asked.append((model, weights))
        raise KeyboardInterrupt("stop here")

    monkeypatch.setattr(training, "load_model", load_model)
    for model in ("demo-vgg16", "timm:resnet10t"):
        out = tmp_path / f"{len(asked)}.safetensors"
        assert main(["train", "--model", model, "--epochs", "1", "--out", str(out)]) == 130
    assert asked == [("demo-vgg16", "none"), ("timm:resnet10t", "none")]


# -- item 11: options that did nothing are not offered ----------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["points", "--device", "cpu"],
        ["points", "--mean", "0.5"],
        ["points", "--std", "0.5"],
        ["export", "--out", "e", "--device", "cuda"],
    ],
)
def test_options_that_changed_nothing_are_refused(capsys, argv):
    line = argument_error(capsys, *argv)
    assert "unrecognized arguments: " + " ".join(argv[-2:]) in line, line


def test_the_options_that_matter_stay():
    parser = build_parser()
    args = parser.parse_args(["points", "--image-size", "48", "--weights", "none"])
    assert args.image_size == 48 and not hasattr(args, "mean") and not hasattr(args, "device")
    args = parser.parse_args(["export", "--out", "e", "--mean", "0.5", "--std", "0.25"])
    assert args.mean == [0.5] and args.std == [0.25] and not hasattr(args, "device")


def test_points_runs_without_the_options_it_dropped(capsys):
    assert main(["points", "--image-size", "48", "--json"]) == 0
    assert '"input_shape": [\n    1,\n    48,\n    48\n  ]' in capsys.readouterr().out


# -- item 15: tables whose columns never run together -----------------------------------------


def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_infer_table_keeps_long_paths_apart_from_the_class(monkeypatch, capsys):
    from isplit.deploy import client as client_module
    from isplit.deploy.client import Prediction

    long = "/data/some/rather/deep/folder/of/images/0001.png"  # 49 characters
    classes = ["T-shirt/top", "a class with a long name, 30 c"]
    answers = [
        Prediction(long, classes[1], 1, 1029, 1.5, 3.25, 0.75),
        Prediction("a.png", classes[0], 0, 1029, 12.5, 130.0, None),
        Prediction.failed(long + "x", "cannot read image"),
    ]

    class FakeClient:
        def __init__(self, folder, server, **kwargs):
            self.manifest = types.SimpleNamespace(classes=classes)

        def predict_files(self, paths):
            assert list(paths) == [a.image for a in answers]
            return iter(answers)

    @contextmanager
    def fake(*args, **kwargs):
        yield FakeClient(*args, **kwargs)

    monkeypatch.setattr(client_module, "Client", fake)
    images = [a.image for a in answers]
    assert main(["infer", "exported", *images, "--server", "http://h:1"]) == 1
    header, first, second, failed = capsys.readouterr().out.splitlines()
    assert _columns(header) == ["image", "class", "bytes", "head ms", "rtt ms", "tail ms"]
    assert _columns(first) == [long, classes[1], "1029", "1.50", "3.25", "0.75"]
    assert _columns(second) == ["a.png", classes[0], "1029", "12.50", "130.00", "n/a"]
    assert _columns(failed) == [long + "x", "error: cannot read image"]
    # the columns line up: the class starts, the numbers end at the same place on every line
    assert header.index("class") == first.index(classes[1]) == second.index(classes[0])
    assert len(header) == len(first) == len(second)


def _report(per_class: dict, pulling: list[str]):
    from isplit.classes import ClassesReport

    return ClassesReport(
        subset=list(per_class),
        images=sum(v["images"] for v in per_class.values()),
        points=[],
        cui=[],
        candidates=["p"],
        best="p",
        global_best="p",
        best_detail=None,
        global_best_detail=None,
        shift=0,
        per_class=per_class,
        ranking=list(per_class),
        pulling=pulling,
        most_different=None,
        groups=[list(per_class)],
        settings={"select_by": "cui"},
    )


def test_classes_table_with_wide_point_names_and_many_pulling_classes():
    wide = "stages.3.blocks.2.conv_dw.attention.proj"  # 40 characters
    per_class = {
        f"class {i}": {
            "images": 100 * (i + 1),
            "best": wide if i else "p",
            "shift": i,
            "candidates": [wide, "p"],
        }
        for i in range(6)
    }
    pulling = [f"class {i}" for i in range(5, 0, -1)]
    lines = _report(per_class, pulling).table().splitlines()
    header, rows = lines[0], lines[1:7]
    assert _columns(header) == ["class", "best split", "images", "shift", "candidates"]
    for i, row in enumerate(rows):
        best = wide if i else "p"
        assert _columns(row) == [f"class {i}", best, str(100 * (i + 1)), f"+{i}", f"{wide}, p"]
        assert row.index(best) == header.index("best split")
        assert row.index(f"{wide}, p") == header.index("candidates")
    line = next(s for s in lines if s.startswith("classes pulling the split furthest"))
    assert line.endswith(": class 5, class 4, class 3, ... (2 more; all 5 in classes.json)")
    three = _report(per_class, pulling[:3]).table()
    assert "furthest: class 5, class 4, class 3\n" in three  # all shown: no ellipsis


# -- a reader that stops early (isplit points | head) ------------------------------------------


def test_a_reader_that_stops_early_gets_no_traceback():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before isplit writes a line
    proc = subprocess.run(
        [sys.executable, "-m", "isplit", "points"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
