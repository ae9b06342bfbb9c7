"""Issue 22, the user's path: help examples that survive a shell, arguments checked before the work,
the library found from ``fairhead``, and one name per quantity."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from fairhead.cli import build_parser, main
from support.cli import Terminal

REPO = Path(__file__).resolve().parents[2]


def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def _example_lines(text: str) -> list[str]:
    """Command lines starting with ``fairhead`` in ``text`` (backslash continuations joined)."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.startswith("fairhead "):
            lines.append(line)
    return lines


def _readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in _example_lines(block)]


def _help_examples() -> list[str]:
    return [line for command in _subcommands().values() for line in _example_lines(command.epilog or "")]


def _through_bash(line: str, cwd: Path) -> list[str]:
    """The argv bash hands ``fairhead`` for ``line`` (a function prints it), failing on a redirection."""
    script = 'fairhead() { printf "%s\\0" "$@"; }\n' + line
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, (line, done.stderr.decode())
    assert list(cwd.iterdir()) == [], f"{line!r} wrote a file in the shell: an unquoted > or <"
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("source", ["README", "help"])
def test_every_example_survives_a_shell_and_parses(tmp_path, source):
    lines = _readme_examples() if source == "README" else _help_examples()
    assert len(lines) >= (10 if source == "README" else 8)
    parser = build_parser()
    for k, line in enumerate(lines):
        cwd = tmp_path / str(k)
        cwd.mkdir()
        argv = _through_bash(line, cwd)
        parser.parse_args(argv)  # an unknown flag or a bad choice exits 2 here


def test_select_examples_use_a_target_the_parser_reads(tmp_path):
    from solvers.select import parse_target

    targets = []
    for line in _readme_examples() + _help_examples():
        argv = _through_bash(line, tmp_path)
        if argv[0] == "select":
            targets.append(argv[argv.index("--target") + 1])
    assert targets and all(parse_target(t)[1] == 0.05 for t in targets), targets


@pytest.mark.parametrize("text, expected", [("dp:0.05", ("dp", 0.05)), ("eo<=0.1", ("eo", 0.1)),
                                            (" eopp : 0 ", ("eopp", 0.0))])
def test_target_reads_with_or_without_less_than(text, expected):
    from solvers.select import parse_target

    assert parse_target(text) == expected


def test_the_library_is_found_from_fairhead_and_the_version_printed(capsys):
    import fairhead
    import solvers

    from fairhead import FairLogisticRegression, fit_path, select_head

    assert (FairLogisticRegression, fit_path, select_head) == (solvers.FairLogisticRegression, solvers.fit_path,
                                                                solvers.select_head)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fairhead {fairhead.__version__}"
    with pytest.raises(AttributeError):
        fairhead.no_such_name  # noqa: B018


def test_docstrings_state_their_version_and_the_default_constraint():
    import fairhead
    import solvers
    from solvers import metrics

    doc = solvers.FairLogisticRegression.__doc__
    major_minor = ".".join(fairhead.__version__.split(".")[:2])
    assert set(re.findall(r"versionadded:: (\S+)", doc)) == {major_minor}
    assert "fairhead fit" in doc and "--constraint dp" in doc  # the CLI's default differs: said in both
    assert "estimator's default is none" in " ".join(_subcommands()["fit"].format_help().split())
    for func in (solvers.fit_path, metrics.by_group):
        assert "Examples" in func.__doc__ and ".. math::" in func.__doc__


# --------------------------------------------------------------------------- arguments before the work
@pytest.fixture
def no_cache_reads(monkeypatch):
    """Fail the test if a command opens a cache."""
    import embedcache

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was read before the arguments were checked")

    monkeypatch.setattr(embedcache, "open", refuse)


@pytest.mark.parametrize("args, code, needles", [
    (["sweep", "{cache}", "--compare", "expgrid", "--out", "{tmp}/s"], 2, ["invalid choice: 'expgrid'", "expgrad"]),
    (["sweep", "{cache}", "--compare", "--out", "{tmp}/s"], 2, ["--compare", "expected at least one"]),
    (["protocols", "{cache}", "--eps", "-1"], 3, ["'eps'", "Got -1"]),
    (["fit", "{cache}", "--eps", "-0.5"], 3, ["'eps'", "Got -0.5"]),
    (["protocols", "{cache}", "--C", "0"], 3, ["'C'", "Got 0"]),
    (["fit", "{cache}", "--min-group-size", "0"], 3, ["'min_group_size'", "Got 0"]),
    (["finetune-full", "{cache}", "--eps", "-1", "--out", "{tmp}/f"], 3, ["'eps'", "Got -1"]),
], ids=["compare-typo", "compare-empty", "protocols-eps", "fit-eps", "protocols-C", "fit-min-group",
        "finetune-full-eps"])
def test_arguments_are_refused_before_the_cache_is_read(tmp_path, capsys, no_cache_reads, args, code, needles):
    cache = tmp_path / "never-read.h5"
    cache.write_bytes(b"")
    tmp = tmp_path / "out"
    tmp.mkdir()
    argv = [a.format(cache=cache, tmp=tmp) for a in args]
    try:
        got = main(argv)
    except SystemExit as done:  # argparse's usage errors
        got = done.code
    err = capsys.readouterr().err
    assert got == code, err
    last = err.strip().splitlines()[-1]
    assert all(n in last for n in needles), err
    assert list(tmp.iterdir()) == [], "a refused command wrote something"


# --------------------------------------------------------------------------- protocols: honest about bounds
def test_protocols_say_which_head_misses_its_bound(split_arrays, tmp_path, recwarn):
    import csv
    import json

    from fairhead import protocols

    table = protocols.run_protocols(None, constraint="dp", eps=0.0, data=split_arrays, out=tmp_path)
    fit = {r["protocol"]: r for r in table.rows if r["split"] == "fine-tune"}
    assert [fit[p]["eps_met"] for p in ("B1", "B2", "B3")] == [None] * 3  # unconstrained: nothing to meet
    m1 = fit["M1"]
    assert m1["eps_met"] is False and m1["constraint_value"] > 0.0
    assert not [w for w in recwarn if "ConvergenceWarning" in w.category.__name__], "the raw warning leaked"
    text = table.to_text()
    assert "eps_met" in text.splitlines()[0]
    assert any(line.startswith("M1 MISSES its bound") and "valid" in line for line in text.splitlines())
    with open(tmp_path / "protocols.csv", newline="") as f:
        cells = {(r["protocol"], r["split"]): r for r in csv.DictReader(f)}
    assert cells[("M1", "fine-tune")]["eps_met"] == "False" and cells[("B1", "test")]["eps_met"] == ""
    doc = json.loads((tmp_path / "protocols.json").read_text())
    assert next(r for r in doc["rows"] if (r["protocol"], r["split"]) == ("M1", "fine-tune"))["eps_met"] is False
    assert any(n.startswith("M1 MISSES") for n in doc["notes"])
    prov = doc["provenance"]
    assert (prov["constraint"], prov["eps"], prov["seed"]) == ("dp", 0.0, 0)
    assert "numpy" in prov["versions"] and "cache_fingerprint" in prov


def test_protocols_say_when_an_m_head_is_its_b_head(split_arrays):
    from fairhead import protocols

    table = protocols.run_protocols(None, constraint="dp", eps=0.9, data=split_arrays)
    fit = {r["protocol"]: r for r in table.rows if r["split"] == "fine-tune"}
    assert fit["M1"]["eps_met"] is True and fit["M2"]["eps_met"] is True
    assert [n.split(":")[0] for n in table.notes] == ["M1 = B2", "M2 = B3"]
    n_valid = len(split_arrays["valid"].y)
    assert f"of {n_valid} fine-tune rows" in table.notes[0] and "intercept chosen for accuracy" in table.notes[0]
    # the constraint is inactive: the M heads are the B heads' fits, each with the intercept most accurate on
    # its fine-tune rows (the rate heads' threshold search), so never less accurate there
    for m, b in (("M1", "B2"), ("M2", "B3")):
        assert fit[m]["acc"] >= fit[b]["acc"] - 1 / fit[m]["n"]


def test_protocols_cli_json_progress_and_provenance(cache_path, tmp_path, capsys):
    import json

    import sys

    terminal = Terminal()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        code = main(["protocols", str(cache_path), "--constraint", "dp", "--eps", "0.05", "--json",
                     "--out", str(tmp_path / "p")])
    captured = capsys.readouterr()
    assert code == 0, terminal.buffer.getvalue()
    doc = json.loads(captured.out)
    assert {"rows", "notes", "provenance", "overfitting", "columns"} <= set(doc)
    assert doc["provenance"]["cache_fingerprint"] and doc["provenance"]["cache"] == str(cache_path)
    assert "protocols" in terminal.buffer.getvalue() and "5/5" in terminal.buffer.getvalue()  # the five fits
    assert json.loads((tmp_path / "p" / "protocols.json").read_text())["rows"] == doc["rows"]


def test_fit_and_info_print_json_with_the_sweeps_names(cache_path, tmp_path, capsys):
    import json

    code = main(["fit", str(cache_path), "--constraint", "dp", "--eps", "0.05", "--json",
                 "--save", str(tmp_path / "head.json")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["eps_met"] is True and doc["constraint"] == "dp"
    for split in ("train", "valid", "test"):
        assert {"constraint_value", "worst_group_accuracy", "accuracy_low"} <= set(doc["metrics"][split])
    assert doc["certificate"]["constraint"] == "dp"
    assert main(["info", str(cache_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == ["train", "valid", "test"] and info["sensitive"] == ["group"]
    assert sum(c["n"] for c in info["counts"]) == info["rows"] == 2000


def test_one_name_per_quantity_in_every_printed_table(cache_path, tmp_path, capsys):
    """The constraint's own value is constraint_value and the worst group's accuracy worst_group_accuracy,
    in fit's table, protocols' table and the sweep's CSV alike."""
    from fairhead import protocols
    from fairhead.pipeline import METRIC_COLUMNS

    assert main(["fit", str(cache_path), "--constraint", "dp", "--save", str(tmp_path / "h.json")]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("split"))
    assert "constraint_value" in header and "worst_group_accuracy" in header
    names = set(dict(METRIC_COLUMNS).values()) | {h for _, h in protocols.PROTOCOL_METRICS}
    assert not names & {"mmf_acc", "maxmin_acc", "own_value", "bounded_gap"}


def test_scores_of_huge_logits_raise_no_overflow_warning(split_arrays):
    """A penalty baseline's logits can reach -1000: the probabilities are 0 and 1, without numpy's warning."""
    import warnings

    import numpy as np

    from fairhead.sweep import evaluate_predictor

    z = np.where(split_arrays["test"].y == 1, 800.0, -1000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = evaluate_predictor(lambda a: z, None, {"test": split_arrays["test"]}, "dp")
    assert values["test"]["accuracy"] == 1.0 and values["test"]["roc_auc"] == 1.0


def test_the_cli_and_the_python_source_make_the_same_generated_dataset():
    import inspect

    from embedcache.sources import SyntheticSource

    from fairhead.cli import MINORITY_FRACTION

    assert inspect.signature(SyntheticSource).parameters["minority_fraction"].default == MINORITY_FRACTION
    commands = _subcommands()
    for name in ("extract", "generate"):
        (action,) = [a for a in commands[name]._actions if "--minority-fraction" in a.option_strings]
        assert action.default == MINORITY_FRACTION
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    help_line = next(c.help for c in sub._choices_actions if c.dest == "generate")
    assert "PNG" in help_line and "JPEG" not in help_line


def test_protocols_on_an_imported_table_without_a_valid_split_say_how_to_import(tmp_path, capsys):
    import numpy as np

    import embedcache

    rng = np.random.default_rng(0)
    table = tmp_path / "t.csv"
    lines = ["f0,f1,label,group,split"]
    for i in range(80):
        lines.append(f"{rng.normal():.6f},{rng.normal():.6f},{i % 2},{'ab'[(i // 2) % 2]},{'train' if i < 60 else 'test'}")
    table.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "t.h5"
    embedcache.import_table(table, label="label", sensitive=["group"], split="split", out=cache)
    assert main(["protocols", str(cache), "--constraint", "dp"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has train, test" in err
    assert "re-import it with --split" in err and "re-extract" not in err


# --------------------------------------------------------------------------- reports a colleague can read
def test_the_sweep_report_ends_with_the_recommended_head_and_the_select_command(cache_path, tmp_path):
    import math
    import shlex

    from fairhead import sweep
    from solvers.select import parse_target

    result = sweep.run_sweep(cache_path, out=tmp_path / "s", constraint="dp", eps_grid=[0.2, 0.1, 0.05, 0.02],
                             plots=False, progress=False)
    text = result.files["report"].read_text()
    tail = text[text.index("## Recommended head and next step"):]
    assert "## " not in tail[3:], "the recommendation is the report's last section"
    command = next(line for line in tail.splitlines() if line.startswith("fairhead select "))
    argv = shlex.split(command)
    build_parser().parse_args(argv[1:])
    gap, target = parse_target(argv[argv.index("--target") + 1])
    over = result.overfitting()
    bounds = {r["eps"]: r["cert_bound"] for r in over["rows"] if r["method"] == "fairhead"}
    assert gap == "dp" and target == math.ceil(min(bounds.values()) * 100 - 1e-9) / 100
    eps = float(re.search(r"Recommended: the head at eps=([0-9.e-]+)", tail).group(1))
    chosen = min(bounds, key=lambda e: abs(e - eps))
    assert bounds[chosen] <= target
    valid_acc = {r["eps"]: r["accuracy"] for r in result.rows if r["method"] == "fairhead" and r["split"] == "valid"}
    assert valid_acc[chosen] == max(valid_acc[e] for e, b in bounds.items() if b <= target)


def test_a_score_constraint_that_leaves_the_rate_gap_is_explained():
    from fairhead.report import score_gap_note

    rows = [{"method": "unconstrained", "eps": float("nan"), "split": "test", "demographic_parity_difference": 0.74},
            {"method": "fairhead", "eps": 0.5, "split": "test", "demographic_parity_difference": 0.72},
            {"method": "fairhead", "eps": 0.0, "split": "test", "demographic_parity_difference": 0.70}]
    (note,) = score_gap_note("dp-score", rows)
    assert "0.700 at eps=0" in note and "mean logits" in note and "--constraint dp" in note
    assert score_gap_note("dp", rows) == []  # a rate constraint bounds the rate itself
    rows[-1]["demographic_parity_difference"] = 0.05
    assert score_gap_note("dp-score", rows) == []  # it did move the gap: nothing to explain


# --------------------------------------------------------------------------- progress on every long step
@pytest.mark.slow
def test_expgrad_shows_its_inner_fits(split_arrays, monkeypatch):
    import sys

    import numpy as np

    pytest.importorskip("fairlearn")
    from fairhead import compare
    from solvers.constraints import make_constraint

    fit, test = split_arrays["train"].take(np.arange(300)), split_arrays["test"].take(np.arange(100))
    grid = np.array([0.2, 0.1])  # one matched bound
    run = dict(constraint=make_constraint("dp"), grid=grid, C=1.0)
    terminal = Terminal()  # bars are drawn on a terminal only
    monkeypatch.setattr(sys, "stderr", terminal)
    records = list(compare.run_baselines(["expgrad"], fit, {"test": test}, progress=True, **run))
    err = terminal.buffer.getvalue()
    assert len(records) == 1 and "inner fit 1 of at most" in err and "s left" in err
    # the counting estimator is the same LogisticRegression: the same head without the bar
    quiet = list(compare.run_baselines(["expgrad"], fit, {"test": test}, progress=False, **run))
    assert [r.metrics for r in quiet] == [r.metrics for r in records]


def test_fit_shows_a_progress_bar_on_a_terminal_only(cache_path, tmp_path, capsys, monkeypatch):
    import sys

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["fit", str(cache_path), "--constraint", "dp", "--save", str(tmp_path / "h.json")]) == 0
    assert "fit:" in terminal.buffer.getvalue() and "5/5" in terminal.buffer.getvalue()  # read, fit, 3 splits
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["fit", str(cache_path), "--constraint", "dp", "--save", str(tmp_path / "h2.json"),
                 "--no-progress"]) == 0
    assert "fit:" not in terminal.buffer.getvalue()
    monkeypatch.undo()
    assert main(["fit", str(cache_path), "--constraint", "dp", "--save", str(tmp_path / "h3.json")]) == 0
    assert "fit:" not in capsys.readouterr().err  # not a terminal: a log gets no bar frames


def test_sweep_shows_its_progress_bar_on_a_terminal_only(cache_path, tmp_path, capsys, monkeypatch):
    """The sweep's bar follows the commands' one policy (fairhead.progress_bar): drawn on a terminal,
    hidden by --no-progress, and a log or a pipe gets no bar frames."""
    import sys

    argv = ["sweep", str(cache_path), "--constraint", "dp-score", "--eps-grid", "0.2", "0.1", "--no-plots"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "sweep dp-score" in terminal.buffer.getvalue() and "2/2" in terminal.buffer.getvalue()
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "sweep dp-score" not in terminal.buffer.getvalue()
    monkeypatch.undo()
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert "sweep dp-score" not in capsys.readouterr().err  # not a terminal: a log gets no bar frames


@pytest.mark.parametrize("args, needles", [
    (["fit", "{cache}", "--eval-split", "valid", "tset"], ["no split 'tset'", "train, valid, test"]),
    (["fit", "{cache}", "--fit-split", "trian"], ["no split 'trian'"]),
    (["fit", "{cache}", "--attributes", "sex"], ["'sex'"]),
    (["sweep", "{cache}", "--attributes", "sex", "--out", "{tmp}/s"], ["'sex'"]),
    (["protocols", "{cache}", "--attributes", "sex"], ["'sex'"]),
    (["fit", "{cache}", "--pos-label", "maybe"], ["'maybe'"]),
], ids=["eval-split", "fit-split", "fit-attribute", "sweep-attribute", "protocols-attribute", "pos-label"])
def test_names_are_checked_from_the_caches_metadata_before_any_features(cache_path, tmp_path, capsys, monkeypatch,
                                                                         args, needles):
    from fairhead import pipeline

    def refuse(*a, **k):
        raise AssertionError("features were read before the names were checked")

    monkeypatch.setattr(pipeline, "load_arrays", refuse)
    argv = [a.format(cache=cache_path, tmp=tmp_path) for a in args]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
