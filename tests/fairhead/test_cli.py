"""The CLI end to end on a real cache: output, saved heads, and one-line errors with exit codes."""

from __future__ import annotations

import json

import pytest

from fairhead.cli import main
from support.cli import assert_fit_metrics_match_head, main_cli, run_cli


@pytest.fixture(params=["in-process", pytest.param("subprocess", marks=pytest.mark.slow)])
def cli(request, capsys):
    """``fairhead ARGS`` -> (exit code, stdout, stderr): in this process, and in a subprocess as a user runs it
    (that one pays an interpreter and torch start-up per call, so `make test` leaves it to `make test-all`)."""
    if request.param == "subprocess":
        return run_cli
    return lambda *args: main_cli(capsys, *args)


def test_info_prints_provenance_and_counts(cache_path, cli):
    code, out, err = cli("info", cache_path)
    assert code == 0, err
    assert "imported" in out and "train" in out and "test" in out


def test_fit_prints_metrics_per_split_and_saves_the_head(cache_path, tmp_path, cli):
    head_path = tmp_path / "head.json"
    code, out, err = cli("fit", cache_path, "--constraint", "eo", "--eps", "0.05", "--fit-split", "train",
                         "--eval-split", "valid", "test", "--save", head_path)
    assert code == 0, err
    assert "valid" in out and "test" in out and "eo_diff" in out
    saved = json.loads(head_path.read_text())
    assert json.dumps(saved).count("eo") >= 1
    from solvers import load_head

    head = load_head(head_path)
    assert head.coef_.shape[1] == 6



@pytest.mark.parametrize("constraint", ["dp", "dp-score"])
def test_fit_metrics_from_one_product_equal_the_heads_own_predictions(cache_path, tmp_path, constraint):
    assert_fit_metrics_match_head(cache_path, tmp_path, constraint)

def test_fit_shows_the_bounded_gap_and_the_between_groups_gap_labelled(cache_path, tmp_path, cli):
    """eps bounds each group against the overall rate (under the balance weights); the tables report
    fairlearn's max - min between groups. The output shows both, each named, and they match the head."""
    import re

    from solvers import load_head

    head_path = tmp_path / "head.json"
    code, out, err = cli("fit", cache_path, "--constraint", "dp", "--eps", "0.05", "--balance", "group",
                         "--eval-split", "test", "--save", head_path)
    assert code == 0, err
    head = load_head(head_path)
    bounded = float(re.search(r"constraint_value on 'train': ([0-9.]+) \(eps 0.05; eps_met: True\)", out).group(1))
    assert bounded == pytest.approx(head.certificate_.achieved_gap, abs=1e-4)
    assert "measured with balance='group' weights" in out
    between = float(re.search(r"between-groups difference on 'train': dp_diff ([0-9.]+)", out).group(1))
    assert between > bounded  # the two quantities differ; neither is printed under the other's name
    assert any(line.startswith("split") and "constraint_value" in line for line in out.splitlines())


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["info", "{missing}"], 3, "missing.h5"),
        (["fit", "{cache}", "--attributes", "age"], 3, "'age'"),
        (["fit", "{cache}", "--fit-split", "holdout"], 3, "holdout"),
        (["sweep", "{cache}", "--eps-grid", "0.1", "-1", "--out", "{tmp}"], 3, "eps grid"),
        (["fit", "{cache}", "--constraint", "group-loss", "--eps", "0.0001", "--backend", "cvxpy"], 4, "eps"),
        (["import", "{missing}", "--label", "y", "--sensitive", "s", "--out", "{tmp}/x.h5"], 3, "missing.h5"),
    ],
    ids=["missing-cache", "unknown-attribute", "unknown-split", "negative-eps", "infeasible", "missing-table"],
)
def test_errors_are_one_line_with_a_family_exit_code(cache_path, tmp_path, cli, args, code, needle):
    args = [a.format(cache=cache_path, missing=tmp_path / "missing.h5", tmp=tmp_path) for a in args]
    got, out, err = cli(*args)
    assert got == code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("fairhead: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_debug_shows_the_traceback(tmp_path):
    code, _, err = run_cli("--debug", "info", tmp_path / "missing.h5")
    assert code == 3 and "Traceback" in err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["fit"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_extract_then_info_from_the_cli(tmp_path):
    """A real extraction through the CLI: generated images, torchvision resnet18 (random init) at 32 px."""
    cache = tmp_path / "synthetic.h5"
    code, out, err = run_cli("extract", "--synthetic", "--n", 60, "--seed", 1, "--backbone", "resnet18",
                             "--image-size", 32, "--batch-size", 16, "--no-progress", "--out", cache)
    assert code == 0, err
    assert cache.exists() and "background" in out
    # the same command again is a no-op on the finished cache, never a silent mix
    code, _, err = run_cli("extract", "--synthetic", "--n", 60, "--seed", 1, "--backbone", "resnet18",
                           "--image-size", 32, "--batch-size", 16, "--no-progress", "--out", cache)
    assert code == 0, err
    code, _, err = run_cli("extract", "--synthetic", "--n", 60, "--seed", 2, "--backbone", "resnet18",
                           "--image-size", 32, "--no-progress", "--out", cache)
    assert code == 3 and "Traceback" not in err and "--overwrite" in err


def test_generate_writes_images_and_a_manifest(tmp_path, cli):
    code, out, err = cli("generate", "--out", tmp_path / "data", "--n", 30)
    assert code == 0, err
    manifest = tmp_path / "data" / "manifest.csv"
    assert manifest.exists() and len(manifest.read_text().splitlines()) == 31


def test_presets_list_the_celeba_task(cli):
    code, out, _ = cli("presets")
    assert code == 0 and "celeba-blond-male" in out and "Blond_Hair" in out
