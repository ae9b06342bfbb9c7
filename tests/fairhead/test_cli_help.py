"""The CLI explains itself: defaults and examples in every --help, messages that suggest only real flags,
small-group errors in the user's words, a loud warning for random weights, the positive class by name."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

from fairhead.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
#: flags a message may suggest that are not fairhead's own (other programs' options)
FOREIGN_FLAGS = {"--no-deps", "--no-build-isolation", "--nnodes", "--nproc-per-node"}  # pip's, torchrun's


def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return parser, sub.choices


def test_every_command_shows_its_defaults_and_an_example():
    _, commands = _subcommands()
    for name, command in commands.items():
        text = " ".join(command.format_help().split())  # argparse wraps "(default: 0.8)" across lines
        assert "example" in text, name
        defaults = [a for a in command._actions if a.default not in (None, False) and a.help and a.option_strings
                    and a.dest != "help"]
        for action in defaults:
            assert "default" in (action.help or "") or f"(default: {action.default})" in text, (name, action.dest)


def test_protocols_help_explains_b1_to_m2():
    _, commands = _subcommands()
    text = commands["protocols"].format_help()
    for name, words in {"B1": "train split", "B2": "validation split", "B3": "down-sampled",
                        "M1": "B2's data with the fairness constraint", "M2": "B3's data"}.items():
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        assert words in line or words in text, name


def _string_literals(path: Path):
    with open(path, "rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.STRING:
                yield tok.start[0], tok.string


def test_every_flag_a_message_suggests_exists():
    parser, commands = _subcommands()
    known = {opt for p in (parser, *commands.values()) for a in p._actions for opt in a.option_strings}
    suggested = []
    for package in ("embedcache", "solvers", "fairhead"):
        for path in (REPO / package).rglob("*.py"):
            for line, literal in _string_literals(path):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", literal):
                    suggested.append((flag, f"{path.relative_to(REPO)}:{line}"))
    assert suggested
    missing = sorted({(flag, where) for flag, where in suggested if flag not in known | FOREIGN_FLAGS})
    assert not missing, missing


def test_a_small_group_error_names_the_group_the_split_and_a_real_flag(cache_path, capsys):
    from fairhead.cli import main

    code = main(["fit", str(cache_path), "--constraint", "dp", "--min-group-size", "100000", "--save",
                 str(cache_path.parent / "never.json")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1, err
    assert "'group=a'" in err and "'train'" in err and "--min-group-size" in err
    assert not (cache_path.parent / "never.json").exists()


def test_random_torchvision_weights_warn_on_one_line(tmp_path, capsys):
    from embedcache import SyntheticSource

    from fairhead import pipeline

    source = SyntheticSource(12, seed=0, image_size=32)
    pipeline.extract_cache(source, backbone="resnet18", image_size=32, out=tmp_path / "a.h5", batch_size=12,
                           num_workers=0, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RANDOM weights" in err[0] and "--weights NAME" in err[0] and "--weights-file" in err[0]
    # asked for by name: the same network, no warning
    pipeline.extract_cache(source, backbone="resnet18", weights="none", image_size=32, out=tmp_path / "b.h5",
                           batch_size=12, num_workers=0, progress=False)
    assert capsys.readouterr().err == ""


def test_pos_label_chooses_the_positive_class(cache_path, tmp_path):
    from fairhead import pipeline
    from fairhead_errors import DataError

    default = pipeline.fit_on_cache(cache_path, constraint=None, save=tmp_path / "one.json")
    flipped = pipeline.fit_on_cache(cache_path, constraint=None, save=tmp_path / "zero.json", pos_label="0")
    # logistic loss + L2 is symmetric in the label: the other positive class negates the head
    np.testing.assert_allclose(flipped.head.coef_, -default.head.coef_, atol=1e-5)
    assert flipped.metrics["test"]["accuracy"] == pytest.approx(default.metrics["test"]["accuracy"], abs=0.01)
    from solvers import load_head

    assert load_head(tmp_path / "zero.json").extra_["label"]["class_names"] == ["1", "0"]
    with pytest.raises(DataError, match="--pos-label 'maybe'.*0, 1"):
        pipeline.fit_on_cache(cache_path, constraint=None, save=tmp_path / "x.json", pos_label="maybe")


def test_info_lists_only_nonempty_groups_and_caps_them():
    from embedcache.store.reader import CountTable

    from fairhead.pipeline import format_counts

    counts = np.zeros((2, 60, 2), dtype=int)
    counts[0, :45, 0] = np.arange(1, 46)  # 45 ages in train, 15 never seen
    counts[1, 3, 1] = 5
    table = CountTable(splits=["train", "test"], groups=[f"age={i}" for i in range(60)], label_name="y",
                       label_categories=["0", "1"], counts=counts)
    capped = format_counts(table, max_groups=4).splitlines()
    assert len(capped) == 2 + 6 + 2 + 1  # header, train: 4 largest + rest + all, test: 1 + all, overall
    assert "age=44" in capped[2 + 3] and "41 more groups" in capped[2 + 4]
    full = format_counts(table, max_groups=None)
    assert "age=50" not in full and full.count("age=") == 46  # only groups with rows


@pytest.mark.slow
def test_baselines_show_a_progress_bar_whose_clock_runs_during_a_fit(monkeypatch):
    import time

    from fairhead import compare
    from fairhead.sweep import HeadRecord
    from solvers.constraints import make_constraint

    def slow_penalty(fit, arrays, **_):  # stands in for a long fit: one record every 1.2 s
        for alpha in compare.PENALTY_ALPHAS:
            time.sleep(1.2)
            yield HeadRecord(method="penalty", eps=float("nan"), coef=[], intercept=0.0, certificate={},
                             metrics={}, wall_time=1.2, notes=f"alpha={alpha}")

    monkeypatch.setitem(compare.RUNNERS, "penalty", slow_penalty)
    from fairhead.pipeline import SplitArrays

    tiny = SplitArrays(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), groups=np.array([[0], [0], [1], [1]]),
                       attributes=("g",), categories={"g": ("a", "b")}, sample_ids=np.arange(4).astype(str))
    import sys

    from support.cli import Terminal

    terminal = Terminal()  # bars are drawn on a terminal only
    monkeypatch.setattr(sys, "stderr", terminal)
    records = list(compare.run_baselines(["penalty"], tiny, {"train": tiny}, constraint=make_constraint("dp"),
                                         grid=np.array([0.1]), C=1.0, progress=True))
    err = terminal.buffer.getvalue()
    n = len(compare.PENALTY_ALPHAS)
    assert len(records) == n and "baseline penalty" in err and f"{n}/{n}" in err
    assert f"0/{n} [00:01" in err  # redrawn while the first fit was still running


def test_pos_label_reaches_sweep_and_protocols(cache_path, tmp_path, capsys):
    from fairhead.cli import main

    code = main(["protocols", str(cache_path), "--constraint", "dp-score", "--pos-label", "0"])
    assert code == 0, capsys.readouterr().err
    code = main(["sweep", str(cache_path), "--constraint", "dp-score", "--eps-grid", "0.5", "--pos-label", "nope",
                 "--no-plots", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 3 and "--pos-label 'nope'" in err


def test_a_command_builds_only_its_own_options():
    """``main`` gives only the command it runs its options (``sweep``'s and ``finetune-full``'s import their
    modules for choices and defaults); every command is still listed, and its options are its own."""
    import subprocess
    import sys

    from fairhead.cli import _command_in

    assert _command_in(["--debug", "fit", "cache.h5"]) == "fit" and _command_in(["fitt"]) is None
    assert _command_in([]) is None and _command_in(["--version"]) is None
    _, full = _subcommands()
    (sub,) = [a for a in build_parser("fit")._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert list(sub.choices) == list(full)
    assert sub.choices["fit"].format_help() == full["fit"].format_help()
    assert not [a for a in sub.choices["sweep"]._actions if a.dest != "help"]
    code = ("import sys; from fairhead.cli import main; main(['fit', '--help'])")
    out = subprocess.run([sys.executable, "-c", code + "\n"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "--constraint" in out.stdout
    code = ("import sys\nfrom fairhead.cli import build_parser\nbuild_parser('fit')\n"
            "print(*[m for m in ('fairhead.full_compare', 'fairhead.compare') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == [], out.stdout + out.stderr
