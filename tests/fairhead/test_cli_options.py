"""Issue 24: the CLI declares each shared option once (one type, one check, one command table), library errors
name Python parameters, and the CLI prints them as its flags; one helper quotes another error in one line."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import pytest

from fairhead import cli
from fairhead_errors import DataError, one_line
from support.cli import main_cli
from support.files import write_feature_table

REPO = Path(__file__).resolve().parents[2]


def _commands() -> dict:
    (sub,) = [a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def _option(command, flag: str):
    (action,) = [a for a in command._actions if flag in a.option_strings]
    return action


# --------------------------------------------------------------------------- one definition per shared option
def test_the_command_table_is_the_parser():
    commands = _commands()
    assert list(commands) == [c.name for c in cli.COMMANDS]
    for row in cli.COMMANDS:
        assert commands[row.name].get_default("handler") is row.handler, row.name


@pytest.mark.parametrize("flag, type_", [("--n", cli.POSITIVE_INT), ("--seed", cli.SEED), ("--n-eps", cli.GRID_SIZE),
                                         ("--confidence", float), ("--batch-size", int)])
def test_a_shared_option_has_one_type_everywhere(flag, type_):
    takers = {name: _option(c, flag) for name, c in _commands().items() if flag in c._option_string_actions}
    assert len(takers) >= 2, takers  # shared
    assert {name: a.type for name, a in takers.items()} == {name: type_ for name in takers}


@pytest.mark.parametrize("flag, where", [("--device", {"extract", "predict", "finetune-full"}),
                                         ("--batch-size", {"extract", "predict", "finetune-full"}),
                                         ("--confidence", {"fit", "sweep", "select", "protocols", "finetune-full"}),
                                         ("--solver-device", {"fit", "sweep", "protocols", "finetune-full"})])
def test_a_shared_option_is_checked_before_the_work_by_fairhead_options(flag, where):
    dest = flag.removeprefix("--").replace("-", "_")
    checked = {name for name, c in _commands().items() if dest in dict(c.get_default("option_checks") or ())}
    assert checked == where


@pytest.mark.parametrize("argv, needles", [
    (["generate", "--out", "{tmp}/g", "--n", "0"], ["--n", "an integer >= 1", "got 0"]),
    (["generate", "--out", "{tmp}/g", "--seed", "-1"], ["--seed", "an integer >= 0"]),
    (["extract", "--synthetic", "--n", "-5", "--out", "{tmp}/x.h5"], ["--n", "an integer >= 1"]),
    (["extract", "--synthetic", "--seed", "x", "--out", "{tmp}/x.h5"], ["--seed", "an integer >= 0", "got 'x'"]),
], ids=["generate-n", "generate-seed", "extract-n", "extract-seed"])
def test_counts_are_usage_errors_in_every_command(tmp_path, capsys, argv, needles):
    """``generate`` and ``extract`` took a plain int for ``--n`` and ``--seed``; now they check as ``demo`` does."""
    with pytest.raises(SystemExit) as stop:
        cli.main([a.format(tmp=tmp_path) for a in argv])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and all(n in line for n in needles), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, needle", [
    (["select", "{tmp}/no-sweep", "--target", "dp:0.05", "--confidence", "1.5"],
     "--confidence must be a number strictly between 0 and 1, e.g. 0.95; got 1.5"),
    (["fit", "{tmp}/no.h5", "--confidence", "0"], "--confidence must be a number strictly between 0 and 1"),
    (["extract", "--synthetic", "--batch-size", "0", "--out", "{tmp}/x.h5"], "--batch-size must be an integer >= 1"),
    (["finetune-full", "{tmp}/no.h5", "--batch-size", "1", "--out", "{tmp}/f"], "--batch-size must be an integer >= 2"),
    (["fit", "{tmp}/no.h5", "--solver-device", "tpu"], "--solver-device 'tpu' is not a torch device"),
], ids=["select-confidence", "fit-confidence", "extract-batch-size", "finetune-batch-size", "solver-device"])
def test_shared_checks_run_before_any_input_is_read(tmp_path, capsys, argv, needle):
    code, out, err = main_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 3 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- parameters in the API, flags in the CLI
def test_as_flags_writes_parameters_as_flags():
    assert cli.as_flags("`batch_size=0` must be positive; pass e.g. `batch_size=64`") == \
        "--batch-size 0 must be positive; pass e.g. --batch-size 64"
    assert cli.as_flags("pass `overwrite=True`, `merge=False` or `device='cpu'`") == \
        "pass --overwrite, --no-merge or --device cpu"
    assert cli.as_flags("lower `min_group_size`; `out` 'x.h5' is a folder") == \
        "lower --min-group-size; --out 'x.h5' is a folder"
    untouched = "rerun `fairhead extract`, or launch `torchrun --nproc-per-node N ...`; `not_a_parameter`"
    assert cli.as_flags(untouched) == untouched


def test_every_flag_of_the_table_exists():
    known = {opt for c in _commands().values() for a in c._actions for opt in a.option_strings}
    assert set(cli.PARAMETER_FLAGS.values()) <= known


def _library_parameters():
    """Every `name` or `name=value` in backticks in the string literals of solvers/ and embedcache/."""
    for package in ("solvers", "embedcache"):
        for path in (REPO / package).rglob("*.py"):
            with open(path, "rb") as fh:
                for tok in tokenize.tokenize(fh.readline):
                    if tok.type == tokenize.STRING and not tok.string.lstrip("rbuf").startswith(('"""', "'''")):
                        for name, value in re.findall(r"(?<!`)`([a-z][a-z0-9_]*)(?:=([^`]*))?`(?!`)", tok.string):
                            yield name, value, f"{path.relative_to(REPO)}:{tok.start[0]}"


def test_every_parameter_a_library_message_names_has_a_flag():
    found = list(_library_parameters())
    assert len(found) >= 20
    missing = [(name, where) for name, value, where in found
               if name not in cli.PARAMETER_FLAGS and f"{name}={value}" not in cli.PARAMETER_FLAGS]
    assert not missing, missing


@pytest.fixture(scope="module")
def feature_table(tmp_path_factory):
    return write_feature_table(tmp_path_factory.mktemp("options") / "t.csv", n=60, d=3)


def test_a_library_error_names_the_parameter_and_the_cli_the_flag(feature_table, tmp_path, capsys):
    import embedcache

    with pytest.raises(DataError) as err:  # the label listed as a feature
        embedcache.import_table(feature_table, label="label", sensitive=["group"], features=["f0", "label"],
                                out=tmp_path / "x.h5", progress=False)
    assert "remove it from `features`" in str(err.value) and "--features" not in str(err.value)
    code, _, line = main_cli(capsys, "import", feature_table, "--label", "label", "--sensitive", "group",
                             "--features", "f0", "label", "--out", tmp_path / "x.h5")
    assert code == 3 and line.strip() == f"fairhead: error: {cli.as_flags(str(err.value))}"
    assert "remove it from --features" in line and "`" not in line


def test_the_shared_checks_name_the_parameter_in_python():
    from fairhead_options import check_batch_size, check_confidence, check_device

    for check, bad, words in ((check_batch_size, 0, "`batch_size` must be an integer >= 1; got 0"),
                              (check_confidence, 2, "`confidence` must be a number strictly between 0 and 1"),
                              (check_device, "tpu", "`device` 'tpu' is not a torch device")):
        with pytest.raises(DataError) as err:
            check(bad)
        assert words in str(err.value) and "--" not in str(err.value)
        assert cli.as_flags(str(err.value)).startswith("--")


# --------------------------------------------------------------------------- one line
def test_one_line_quotes_another_error_short_and_flat():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(OSError(2, "No such file or directory", "/x"), with_type=True) == \
        "FileNotFoundError: No such file or directory"
    assert len(one_line(RuntimeError("x" * 1000))) == 200 and len(one_line("y" * 50, limit=10)) == 10


def test_no_copy_of_the_one_line_helper_is_left():
    copies = []
    for package in ("embedcache", "solvers", "fairhead"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            cut = re.findall(r'" "\.join\(str\(err\)\.split\(\)\)\[:', text)
            copies += [f"{path.relative_to(REPO)}: {m}" for m in cut]
            copies += [f"{path.relative_to(REPO)}: def {m}" for m in re.findall(r"def (_one_line|_short)\(err", text)]
    assert not copies, copies
