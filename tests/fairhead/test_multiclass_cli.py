"""K-class labels through the app: `fairhead import` of a 3-class table, fit, sweep, protocols, saved heads,
predictions on images, and the one-line refusals (--pos-label, --compare, binary-only constraints)."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from support.cli import assert_fit_metrics_match_head, main_cli, read_rows

CLASSES = ("cat", "dog", "emu")


def _write_table(path, n=1500, d=6, seed=0):
    """Three classes whose shares and separability differ by sex (so every per-class gap is active)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[(a * 2) % 3]
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    X = rng.normal(size=(n, d))
    X[:, :3] += 1.5 * np.eye(3)[y] * (1.0 - 0.3 * a)[:, None]
    X[:, 3] += 0.8 * a
    split = np.where(np.arange(n) < n // 2, "train", np.where(np.arange(n) < 3 * n // 4, "valid", "test"))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *[f"f{j}" for j in range(d)], "animal", "sex", "split"])
        for i in range(n):
            writer.writerow([f"r{i}", *[f"{v:.9g}" for v in X[i]], CLASSES[y[i]], "FM"[a[i]], split[i]])
    return path


@pytest.fixture(scope="module")
def mc_cache(tmp_path_factory):
    from fairhead.cli import main

    tmp = tmp_path_factory.mktemp("multiclass")
    table = _write_table(tmp / "animals.csv")
    out = tmp / "animals.h5"
    assert main(["import", str(table), "--label", "animal", "--sensitive", "sex", "--split", "split", "--id-col", "id",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_import_writes_k_label_categories(mc_cache):
    with h5py.File(mc_cache) as f:
        assert [c.decode() if isinstance(c, bytes) else c for c in f["labels"].attrs["categories"]] == list(CLASSES)
        assert set(np.unique(f["labels"][()])) == {0, 1, 2}


@pytest.mark.parametrize("constraint,eps", [("dp", 0.05), ("eo-score", 0.05)])
def test_fit_a_three_class_head_and_reload_it(mc_cache, tmp_path, capsys, constraint, eps):
    from solvers import load_head

    from fairhead import pipeline

    head_path = tmp_path / "head.json"
    code, out, err = main_cli(capsys, "fit", mc_cache, "--constraint", constraint, "--eps", eps, "--save", head_path)
    assert code == 0, err
    assert "met: True" in out and "3 classes" in out and "max over classes k" in out
    head = load_head(head_path)
    assert head.coef_.shape == (3, 6) and head.intercept_.shape == (3,)
    doc = json.loads(head_path.read_text())
    assert doc["extra"]["label"]["class_names"] == list(CLASSES) and doc["extra"]["label"]["positive"] is None
    import embedcache

    with embedcache.open(mc_cache) as cache:
        train = pipeline.load_arrays(cache, "train")
    assert train.n_classes == 3 and pipeline.evaluate_head(head, train, bounded=True)["constraint_value"] <= eps + 1e-6


def test_sweep_and_protocols_run_on_three_classes(mc_cache, tmp_path, capsys):
    code, out, err = main_cli(capsys, "sweep", mc_cache, "--constraint", "dp", "--eps-grid", "0.1", "0.05",
                              "--no-plots", "--out", tmp_path / "sweep")
    assert code == 0, err
    rows = read_rows(tmp_path / "sweep" / "sweep.csv")
    heads = [r for r in rows if r["method"] == "fairhead" and r["split"] == "train"]
    assert len(heads) == 2 and all(float(r["constraint_value"]) <= float(r["eps"]) for r in heads)
    assert all(float(r["demographic_parity_difference_high"]) >= float(r["demographic_parity_difference"])
               >= float(r["demographic_parity_difference_low"]) for r in rows)
    assert (tmp_path / "sweep" / "report.md").exists() and len(list((tmp_path / "sweep" / "heads").glob("*.json"))) == 3
    code, out, err = main_cli(capsys, "protocols", mc_cache, "--constraint", "eo", "--eps", "0.1",
                              "--out", tmp_path / "protocols")
    assert code == 0, err
    assert "M2" in out and "K classes: each gap is the largest over classes" in out


@pytest.mark.parametrize("args,needle", [
    (("fit", "{cache}", "--pos-label", "dog"), "has 3 classes (fitted as one multinomial head, fairness per class); "
                                               "drop --pos-label"),
    (("sweep", "{cache}", "--constraint", "dp", "--compare", "expgrad", "--out", "{tmp}/s"), "drop --compare"),
    (("fit", "{cache}", "--constraint", "cov"), "'cov' is defined for binary labels only"),
    (("sweep", "{cache}", "--constraint", "minimax", "--out", "{tmp}/m"), "'minimax' is defined for binary labels"),
], ids=["pos-label", "compare", "cov", "minimax"])
def test_binary_only_options_are_refused_in_one_line(mc_cache, tmp_path, capsys, args, needle):
    code, out, err = main_cli(capsys, *(a.format(cache=mc_cache, tmp=tmp_path) for a in args))
    assert code == 3 and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_predict_on_images_with_a_three_class_head(tmp_path, capsys):
    """A manifest whose label has 3 classes, extracted by a real (random) resnet18, a K-class head, and
    `fairhead predict` on the same images: the same classes and probabilities as the head on the cache."""
    import embedcache
    import torch
    import torchvision
    from embedcache import ManifestSource, write_synthetic_dataset
    from solvers import load_head

    from fairhead import pipeline

    manifest = write_synthetic_dataset(tmp_path / "data", n=90, seed=3, image_size=32)
    rows = read_rows(manifest)
    for i, row in enumerate(rows):  # a third class: every third image is a "blob"
        row["shape"] = "blob" if i % 3 == 0 else row["shape"]
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    cols = dict(label_col="shape", sensitive_cols=("background",), split_col="split", id_col="id")
    cache = tmp_path / "c.h5"
    embedcache.extract(ManifestSource(manifest, **cols),
                       embedcache.build_backbone("resnet18", weights_file=tmp_path / "r18.pt", image_size=32), cache,
                       batch_size=16, num_workers=0, progress=False)
    head_path = tmp_path / "head.json"
    pipeline.fit_on_cache(cache, constraint="dp-score", eps=0.5, save=head_path, min_group_size=2)
    out = tmp_path / "preds.csv"
    code, stdout, err = main_cli(capsys, "predict", "--head", head_path, "--manifest", manifest, "--root",
                                 manifest.parent, "--image-col", "path", "--target", "shape", "--sensitive",
                                 "background", "--split-col", "split", "--id-col", "id", "--weights-file",
                                 tmp_path / "r18.pt", "--out", out)
    assert code == 0, err
    head = load_head(head_path)
    with embedcache.open(cache) as c:
        data = c.load(None)
        proba = head.predict_proba(np.asarray(data.features))
        ids = list(map(str, data.sample_ids))
        # predict runs the backbone in batches of 64, the cache was written in batches of 16: float32 rounding of
        # the features moves each score by at most float32_score_tolerance, and a softmax probability by at most
        # half the largest score move (its gradient's absolute row sum is 2 p (1 - p) <= 1/2)
        from fairhead.export import float32_score_tolerance

        proba_tol = 0.5 * float32_score_tolerance(head.coef_, np.asarray(data.features))
    got = {r["id"]: r for r in read_rows(out)}
    names = ["blob", "circle", "square"]
    for i, sample in enumerate(ids):
        k = int(np.argmax(proba[i]))
        assert got[sample]["predicted_label"] == names[k] and int(got[sample]["prediction"]) == k
        assert abs(float(got[sample]["probability"]) - proba[i, k]) <= proba_tol[i]
    assert "'blob'" in stdout and json.loads(out.with_suffix(".metrics.json").read_text())["all"]["accuracy"] > 0



@pytest.mark.parametrize("constraint", ["dp", "eo-score"])
def test_fit_metrics_from_one_product_equal_the_heads_own_predictions(mc_cache, tmp_path, constraint):
    assert_fit_metrics_match_head(mc_cache, tmp_path, constraint)
