"""The command line's option formats, help texts and start-up cost (what a first-time user meets
before any analysis runs)."""

import argparse
import json
import subprocess
import sys

import pytest

from isplit.cli import build_parser, main


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"isplit": parser, **sub.choices}


# -- list options: commas or spaces ---------------------------------------------------------


def test_list_options_take_commas_and_spaces_alike():
    for option, values in (
        ("--mean", [0.5, 0.4, 0.3]),
        ("--std", [0.2, 0.25, 0.3]),
    ):
        dest = option[2:]
        commas = getattr(parse("analyze", option, ",".join(map(str, values))), dest)
        spaces = getattr(parse("analyze", option, *map(str, values)), dest)
        mixed = getattr(parse("analyze", option, f"{values[0]},{values[1]}", str(values[2])), dest)
        assert commas == spaces == mixed == values
    for argv in (("--flop-shares", "0.1,0.3"), ("--flop-shares", "0.1", "0.3")):
        assert parse("validate", *argv).flop_shares == [0.1, 0.3]
    for argv in (("--byte-budgets", "1e4,20000"), ("--byte-budgets", "10000", "2e4")):
        assert parse("validate", *argv).byte_budgets == [10000, 20000]
    assert (
        parse("validate", "--points", "a,b").points
        == parse("validate", "--points", "a", "b").points
    )
    assert parse("validate").points == ["auto"] and parse("validate").flop_shares == [0.25, 0.5]


def test_mean_with_commas_gives_the_same_preprocessing_as_with_spaces(capsys, tmp_path):
    docs = []
    for i, mean in enumerate((["0.5,0.4,0.3"], ["0.5", "0.4", "0.3"])):
        out = tmp_path / str(i)
        argv = ["analyze", "--model", "resnet18", "--weights", "none", "--data", "digits"]
        argv += ["--image-size", "32", "--limit", "4", "--quiet", "--out", str(out)]
        argv += ["--mean", *mean, "--std", "0.2", "0.2,0.2"]
        assert main(argv) == 0, capsys.readouterr().err
        docs.append(json.loads((out / "curves.json").read_text()))
    pp = [d["settings"]["preprocess"] for d in docs]
    assert pp[0] == pp[1]
    assert pp[0]["mean"] == [0.5, 0.4, 0.3] and pp[0]["std"] == [0.2, 0.2, 0.2]
    assert [p["cui"] for p in docs[0]["points"]] == [p["cui"] for p in docs[1]["points"]]


def test_byte_counts_in_float_notation(capsys):
    assert parse("analyze", "--max-bytes", "1e5").max_bytes == 100_000
    assert parse("classes", "run", "--max-bytes", "2.5e4").max_bytes == 25_000
    assert parse("validate", "--train-limit", "1e3").train_limit == 1000
    assert main(["points", "--max-bytes", "1e5", "--json"]) == 0
    float_notation = json.loads(capsys.readouterr().out)
    assert main(["points", "--max-bytes", "100000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == float_notation
    admissible = [p for p in float_notation["points"] if p["admissible"]]
    assert admissible and all(p["bytes"] <= 100_000 for p in admissible)
    assert len(admissible) < len(float_notation["points"])


@pytest.mark.parametrize(
    "argv,words",
    [
        (["analyze", "--max-bytes", "1.5"], "whole number"),
        (["analyze", "--max-bytes", "-3"], "whole number"),
        (["analyze", "--max-bytes", "lots"], "not a number"),
        (["analyze", "--max-head-flops=-1e6"], ">= 0"),
        (["validate", "--byte-budgets", "100,1.5"], "whole number"),
        (["analyze", "--mean", "0.5,x"], "'x'"),
    ],
)
def test_bad_numbers_are_argument_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("isplit ") and words in err, err
    assert "Traceback" not in err


def test_first_and_last_suggest_the_closest_point(cli_error):
    base = ["analyze", "--limit", "8", "--batch-size", "8", "--quiet"]
    for flag in ("--first", "--last"):
        message = cli_error(*base, flag, "features.4x")
        assert f"{flag} 'features.4x'" in message and "did you mean features.4" in message


# -- --quiet and help ------------------------------------------------------------------------


def test_quiet_hides_progress_bars_only(capsys, tmp_path):
    argv = ["analyze", "--limit", "16", "--batch-size", "16", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "curves.json").read_text())
    table = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert [p["name"] for p in doc["points"]] == [
        n for n in table if n in {p["name"] for p in doc["points"]}
    ]
    assert "log10 CUI" in out and f"best split: {doc['best']}" in out


def _option_blocks(help_text: str) -> dict[str, str]:
    """Each option's entry of a --help text, by its first option string, whitespace folded."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            current = stripped.split()[0].rstrip(",")
            blocks[current] = stripped
        elif current is not None and line.startswith("      ") and stripped:
            blocks[current] += " " + stripped
        else:
            current = None
    return blocks


@pytest.mark.parametrize("command", list(subcommands()))
def test_every_option_has_help_and_shows_its_default(command):
    parser = subcommands()[command]
    blocks = _option_blocks(parser.format_help())
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        block = blocks[action.option_strings[0]]
        assert action.help and action.help.strip(), f"{command} {action.option_strings[0]}"
        meaningful = action.default not in (None, False, argparse.SUPPRESS)
        if meaningful:
            assert "default" in block, f"{command}: {block}"


def test_help_names_the_defaults_a_user_asks_about():
    helps = {name: " ".join(p.format_help().split()) for name, p in subcommands().items()}
    assert "images per batch (default: 64)" in helps["analyze"]
    assert "(default: 4)" in helps["validate"] and "(default: 0.002)" in helps["validate"]
    assert "(default: auto)" in helps["analyze"]  # --device
    assert "(default: cpu)" in helps["report"]
    assert "(default: 0.25 0.5)" in helps["validate"]  # --flop-shares, a list


# -- start-up cost ---------------------------------------------------------------------------

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "scipy", "sklearn", "PIL")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["analyze", "--help"],
        ["validate", "--help"],
        ["classes", "--help"],
        ["analyze", "--max-bytes", "1.5"],
        ["no-such-command"],
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(argv):
    code = (
        "import sys\n"
        "from isplit.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_the_package_imports_its_api_on_first_use():
    code = (
        "import sys, isplit\n"
        "assert 'torch' not in sys.modules\n"
        "from isplit import Analysis, analyze, load_model, split_model, Preprocess\n"
        "assert analyze is isplit.analysis.analyze and load_model is isplit.models.load_model\n"
        "assert isplit.IsplitError is isplit.errors.IsplitError\n"
        "assert set(isplit.__all__) <= set(dir(isplit))\n"
        "try:\n"
        "    isplit.no_such_name\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_name' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_predictor_of_the_registry_is_offered_and_accepted(capsys):
    from isplit.importance.predictors import parse_predictors
    from isplit.importance.registry import predictor_names

    names = predictor_names(include_cui=False)
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    offered = " ".join(capsys.readouterr().out.split())  # the help's words, unwrapped
    assert f"same pass: {', '.join(names)} (a,b or a b; CUI always)" in offered
    args = build_parser().parse_args(["analyze", "--predictors", ",".join(names)])
    assert parse_predictors(args.predictors) == ["cui", *names]
