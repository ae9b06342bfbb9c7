"""`fairhead finetune-full` on a tiny configuration: end to end through the CLI, rows written beside the
last-layer heads, a run killed with SIGKILL after its first checkpoint resumes to the uninterrupted result,
the relaxed gaps equal the constraint's own, and bad input fails in one line."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import torch

from fairhead import full_network
from support.cli import read_rows, run_cli, start_cli

#: columns that measure the machine (time, memory) or the run's story (resumed or not), not the model
MACHINE_COLUMNS = {"wall_s", "peak_rss_mb", "added_rss_mb", "peak_cuda_mb", "notes"}
#: the relaxation's batch estimates average to the full gap exactly up to float32 rounding
RELAX_ATOL = 1e-5
#: seconds the killed run sleeps after each checkpoint, so the kill lands between its epochs
EPOCH_DELAY = "30"
STARTUP_TIMEOUT = 240.0
#: the CLI subprocesses run on one thread, as the in-process run does (--threads 1)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
#: a tiny configuration: 32 px images, batches of 8, few rows, one thread, no bars
TINY = ["--image-size", "32", "--batch-size", "8", "--n-eps", "2", "--min-group-size", "2", "--threads", "1",
        "--no-progress"]


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory):
    """A real cache of 60 generated images (EfficientNet-Lite0, offline ImageNet weights): 36 train, 12 valid, 12 test."""
    import embedcache

    out = tmp_path_factory.mktemp("full") / "tiny.h5"
    source = embedcache.SyntheticSource(60, seed=3, correlation=0.6, minority_fraction=0.45)
    embedcache.extract(source, embedcache.build_backbone("efficientnet_lite0"), out, batch_size=32, num_workers=0,
                       progress=False)
    return out


def model_rows(path):
    """The rows without the machine's columns, keyed by (model, split)."""
    return {(r["model"], r["split"]): {k: v for k, v in r.items() if k not in MACHINE_COLUMNS}
            for r in read_rows(path)}


#: one configuration for the end-to-end run and the killed one: Lagrangian first (its weights, AdamW state and
#: multipliers are what a kill after its first epoch must restore), then the penalty network from the start
RUN = ["--constraint", "dp", "--eps", "0.1", "--methods", "lagrangian", "penalty", "--epochs", "2",
       "--patience", "2", *TINY]


@pytest.fixture(scope="module")
def whole_run(image_cache, tmp_path_factory):
    """One uninterrupted `fairhead finetune-full` through the CLI, in this process (same thread count as the
    subprocesses: --threads 1)."""
    import contextlib
    import io

    from fairhead.cli import main

    out = tmp_path_factory.mktemp("whole") / "full"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["finetune-full", str(image_cache), *RUN, "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_finetune_full_end_to_end_writes_rows_beside_the_heads(whole_run, image_cache, capsys):
    from fairhead.cli import main

    out, printed = whole_run
    rows = read_rows(out / "full_network.csv")
    models = {(r["family"], r["method"]) for r in rows}
    assert {("last-layer", p) for p in ("B1", "B2", "B3", "M1", "M2", "eps path")} <= models
    assert {("full-network", "penalty"), ("full-network", "lagrangian")} <= models
    for r in rows:  # the same metrics as the sweep rows, on every split, with what each fit cost
        assert r["split"] in ("train", "valid", "test")
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and 0.0 <= float(r["demographic_parity_difference"]) <= 1.0
        assert float(r["wall_s"]) > 0 and float(r["peak_rss_mb"]) > 0, r["model"]
    full = [r for r in rows if r["family"] == "full-network"]
    assert {(r["split"], r["n"]) for r in full} == {("train", "36"), ("valid", "12"), ("test", "12")}
    assert all(r["epochs_run"] == "2" and r["best_epoch"] in ("1", "2") for r in full)
    payload = json.loads((out / "full_network.json").read_text())
    assert [line["model"] for line in payload["side_by_side"]][-2:] == ["full lagrangian eps=0.1", "full penalty alpha=2"]
    assert len(payload["training"]["lagrangian"]["history"]) == 2
    report = (out / "report.md").read_text()
    assert "Full network vs last layer" in report and "full lagrangian eps=0.1" in report and "CelebA" in report
    assert (out / "gaps.png").stat().st_size > 5_000 and (out / "eps-path" / "sweep.csv").exists()
    assert "full penalty alpha=2" in printed and "== what this shows ==" in printed
    state = torch.load(out / "checkpoints" / "lagrangian.pt", weights_only=True)
    assert state["epoch"] == 2 and state["multipliers"].shape == (4,)  # +/- the gap of each of the 2 groups

    # another configuration on the same checkpoints is refused in one line, before any work
    code = main(["finetune-full", str(image_cache), *RUN, "--lr", "0.001", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and "--restart" in err and "Traceback" not in err
    assert "lr 0.0001 -> 0.001" in err  # names what changed


@pytest.mark.slow
@pytest.mark.fault
def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_result(whole_run, image_cache, tmp_path):
    """Killed (SIGKILL) after the Lagrangian's first epoch, the rerun resumes it and then trains the penalty
    network: both end bit for bit as in the uninterrupted run."""
    whole, _ = whole_run
    args = ["finetune-full", image_cache, *RUN, "--no-plots"]
    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "lagrangian.pt"
    proc = start_cli(*args, "--out", killed, env_extra={**ONE_THREAD, full_network.EPOCH_DELAY_ENV: EPOCH_DELAY})
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while not checkpoint.exists():  # written whole (tmp + rename) after the first epoch
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert not (killed / "full_network.csv").exists()

    code, _, err = run_cli(*args, "--out", killed, env_extra=ONE_THREAD, timeout=STARTUP_TIMEOUT)
    assert code == 0, err[-2000:]
    assert model_rows(killed / "full_network.csv") == model_rows(whole / "full_network.csv")
    training = json.loads((killed / "full_network.json").read_text())["training"]
    assert training["lagrangian"]["resumed_at_epoch"] == 1 and training["penalty"]["resumed_at_epoch"] == 0
    for method in ("penalty", "lagrangian"):  # the kept weights are bit for bit the uninterrupted run's
        a = torch.load(whole / "checkpoints" / f"{method}.pt", weights_only=True)
        b = torch.load(killed / "checkpoints" / f"{method}.pt", weights_only=True)
        assert a["epoch"] == b["epoch"] == 2
        assert all(torch.equal(a["best_model"][k], b["best_model"][k]) for k in a["best_model"])
        assert torch.equal(a["multipliers"], b["multipliers"])


@pytest.mark.parametrize("constraint", ["dp", "eo", "error-rate", "dp-score", "eo-score", "cov", "group-loss"])
def test_the_relaxed_gaps_are_the_constraints_own_and_batches_average_to_them(constraint):
    """Rate constraints: the gaps of the probabilities sigmoid(z) (hard predictions relaxed); score constraints:
    exactly the bounded quantities of the scores; group-loss: each group's mean loss. Summed over the batches of a
    partition (each weighted by its share of the rows), the unbiased batch estimates give the full gap."""
    from solvers.constraints import GroupLoss, LinearScoreConstraint, make_constraint

    from fairhead.full_objectives import ConstraintRelaxation

    rng = np.random.default_rng(0)
    n = 64
    groups = rng.integers(0, 3, n)
    y = (rng.random(n) < 0.5).astype(np.int64)
    z = rng.normal(size=n)
    labels = ("a", "b", "c")
    relax = ConstraintRelaxation(constraint, y=y, groups=groups, labels=labels, eps=0.1)
    zt, yt = torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    full = relax.full_gaps(zt, yt).double().numpy()
    cons = make_constraint(constraint)
    sw = np.ones(n)
    if isinstance(cons, LinearScoreConstraint):
        expected = cons.values(z, y.astype(float), groups, sw, labels)
    elif isinstance(cons, GroupLoss):
        loss = np.logaddexp(0.0, -np.where(y == 1, z, -z))
        expected = np.array([loss[groups == g].mean() for g in range(3)])
    else:
        expected = cons.moments(y.astype(float), groups, sw, labels).gaps(1.0 / (1.0 + np.exp(-z)))
    np.testing.assert_allclose(full, expected, atol=RELAX_ATOL)
    parts = np.array_split(rng.permutation(n), 4)
    summed = sum(len(b) / n * relax.gaps(zt[b], yt[b], torch.as_tensor(b)).double().numpy() for b in parts)
    np.testing.assert_allclose(summed, full, atol=RELAX_ATOL)
    assert relax.n_multipliers == (len(expected) if constraint == "group-loss" else 2 * len(expected))


def test_the_seed_penalty_on_a_batch_with_one_group_is_zero_and_keeps_the_graph():
    from fairhead.full_objectives import batch_penalty

    z = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    value = batch_penalty("EO", z, y, torch.tensor([2, 2, 2]))
    value.backward()
    assert float(value.detach()) == 0.0 and torch.equal(z.grad, torch.zeros(3))
    two = batch_penalty("EO", z, y, torch.tensor([0, 2, 2]))  # codes 0 and 2: two groups present
    assert torch.isfinite(two) and float(two.detach()) > 0


def test_epochs_are_reproducible_batches_from_the_seed():
    a = full_network.epoch_batches(17, 8, seed=0, epoch=2)
    assert [len(b) for b in a] == [8, 9]  # a last batch of one joins the one before (batch norm)
    assert all(np.array_equal(x, y) for x, y in zip(a, full_network.epoch_batches(17, 8, seed=0, epoch=2)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(full_network.epoch_batches(17, 8, seed=0, epoch=3)))
    assert sorted(np.concatenate(a)) == list(range(17))


def test_a_cache_without_images_is_refused_in_one_line(cache_path, tmp_path, capsys):
    from fairhead.cli import main

    code = main(["finetune-full", str(cache_path), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and "fairhead extract" in err and "features table" in err


@pytest.mark.slow
def test_an_efficientnet_size_it_cannot_pad_is_refused(image_cache, tmp_path, capsys):
    from fairhead.cli import main

    code = main(["finetune-full", str(image_cache), "--image-size", "48", "--out", str(tmp_path / "x"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "--image-size 64" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("extra, words", [
    (["--constraint", "none"], "pass --constraint"),
    (["--constraint", "minimax"], "no Lagrangian"),
    (["--balance", "group"], "drop --balance"),
    (["--device", "cuda:7"], "--device"),
], ids=["no-constraint", "minimax-lagrangian", "balance", "device"])
def test_options_that_cannot_run_are_refused_before_the_cache_is_read(tmp_path, capsys, extra, words):
    from fairhead.cli import main

    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["finetune-full", str(tmp_path / "absent.h5"), *extra, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and words in err, err


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_with_the_fix(image_cache, tmp_path, capsys):
    from fairhead.cli import main

    (tmp_path / "x" / "checkpoints").mkdir(parents=True)
    (tmp_path / "x" / "checkpoints" / "penalty.pt").write_bytes(b"PK\x03\x04 torn by a full disk")
    code = main(["finetune-full", str(image_cache), "--methods", "penalty", "--out", str(tmp_path / "x"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 3 and len(err.splitlines()) == 1 and "cannot be read" in err and "--restart" in err, err
