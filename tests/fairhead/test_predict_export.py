"""After training: `fairhead predict` on new images and the head's exports, checked against the head itself.

One real pipeline per session: generated PNG files plus a CSV manifest, a torchvision resnet18 (seeded random
init, saved as a local weights file so the cache records a sha256) at 32 px, a real cache, a fitted head.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support.cli import main_cli, read_rows, run_cli

#: exports of the head alone on the same float64 features: only float64 rounding of the head remains
SCORE_ATOL = 1e-6
MANIFEST_COLUMNS = dict(label_col="shape", sensitive_cols=("background",), split_col="split", id_col="id")


def _save_resnet18(path, seed):
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Images + manifest, a cache from a resnet18 weights file, and a head fit on it (with --pos-label)."""
    import embedcache
    from embedcache import ManifestSource, write_synthetic_dataset

    from fairhead import pipeline

    tmp = tmp_path_factory.mktemp("predict")
    manifest = write_synthetic_dataset(tmp / "data", n=120, seed=3, image_size=32)
    weights = _save_resnet18(tmp / "resnet18.pt", seed=0)
    source = ManifestSource(manifest, **MANIFEST_COLUMNS)
    cache = tmp / "cache.h5"
    embedcache.extract(source, embedcache.build_backbone("resnet18", weights_file=weights, image_size=32), cache,
                       batch_size=16, num_workers=0, progress=False)
    head_path = tmp / "head.json"
    result = pipeline.fit_on_cache(cache, constraint="dp-score", eps=0.05, save=head_path, min_group_size=2)
    return {"tmp": tmp, "manifest": manifest, "weights": weights, "cache": cache, "head": head_path,
            "result": result, "source": source}


def _cache_scores(trained):
    import embedcache
    from solvers import load_head

    head = load_head(trained["head"])
    with embedcache.open(trained["cache"]) as cache:
        data = cache.load(None)
        return dict(zip(map(str, data.sample_ids), head.decision_function(np.asarray(data.features))))


def _score_tolerances(trained):
    """Per id: how far a score may move when the backbone runs again in float32 with another batch size or
    runtime (another order of the same sums): ``fairhead.export.float32_score_tolerance``, which the README
    states. Batches of 1, 8, 16 and 64 images hit different convolution kernels on some CPUs."""
    import embedcache
    from fairhead.export import float32_score_tolerance
    from solvers import load_head

    head = load_head(trained["head"])
    with embedcache.open(trained["cache"]) as cache:
        data = cache.load(None)
        return dict(zip(map(str, data.sample_ids), float32_score_tolerance(head.coef_, np.asarray(data.features))))


def assert_scores_close(got, expected, tolerance):
    got, expected, tolerance = (np.asarray(a, dtype=np.float64) for a in (got, expected, tolerance))
    excess = np.abs(got - expected) - tolerance
    assert excess.max() <= 0, (f"score differs by {np.abs(got - expected).max():.3g}, more than float32 "
                               f"rounding of the backbone allows ({tolerance[np.argmax(excess)]:.3g})")


@pytest.mark.slow
def test_the_float32_tolerance_is_tight_enough_to_see_a_wrong_score(trained):
    """The bound is a few ulps of the features, far below a score's size: a real error still shows."""
    scores, tolerances = _cache_scores(trained), _score_tolerances(trained)
    ids = list(scores)
    assert max(tolerances.values()) < 1e-3 * float(np.median(np.abs([scores[i] for i in ids])))


@pytest.mark.slow
def test_the_head_file_records_the_backbone_and_the_label(trained):
    doc = json.loads(trained["head"].read_text())
    backbone = doc["extra"]["backbone"]
    assert backbone["arch"] == "resnet18" and backbone["weights"] == "file"
    assert len(backbone["weights_sha256"]) == 64 and "crop_size=[32]" in backbone["preprocessing"]
    assert backbone["feature_dim"] == 512 and backbone["feature_dtype"] == "float32"
    assert doc["extra"]["label"]["name"] == "shape" and doc["extra"]["label"]["class_names"] == ["circle", "square"]


@pytest.mark.slow
def test_predict_gives_the_heads_scores_on_the_cache_images(trained):
    from fairhead import predict

    result = predict.predict_images(trained["head"], trained["source"], weights_file=trained["weights"],
                                    batch_size=16, progress=False)
    expected = _cache_scores(trained)
    got = dict(zip(map(str, result.ids), result.scores))
    assert got.keys() == expected.keys()
    tol = _score_tolerances(trained)
    assert_scores_close([got[k] for k in expected], list(expected.values()), [tol[k] for k in expected])
    np.testing.assert_allclose(result.probabilities, 1 / (1 + np.exp(-result.scores)), rtol=1e-12)
    assert np.array_equal(result.predictions, (result.scores > 0).astype(int))
    # labels are present, so the group metrics are too: all rows, and each split
    assert set(result.metrics) == {"all", "train", "valid", "test"}
    train_acc = trained["result"].metrics["train"]["accuracy"]
    assert result.metrics["train"]["accuracy"] == pytest.approx(train_acc, abs=1e-12)


@pytest.mark.slow
def test_predict_cli_on_an_image_folder_and_on_a_manifest(trained, tmp_path, capsys):
    expected, tol = _cache_scores(trained), _score_tolerances(trained)
    out = tmp_path / "folder.csv"
    code, stdout, err = main_cli(capsys, "predict", "--head", trained["head"], "--images", trained["tmp"] / "data" / "images",
                                "--weights-file", trained["weights"], "--batch-size", 16, "--no-progress", "--out", out)
    assert code == 0, err
    rows = read_rows(out)
    assert len(rows) == len(expected) and set(rows[0]) == {"id", "score", "probability", "prediction",
                                                           "predicted_label"}
    for row in rows:  # ids are file names relative to the folder: <id>.png
        key = row["id"].removesuffix(".png")
        assert_scores_close([float(row["score"])], [expected[key]], [tol[key]])
        assert row["predicted_label"] == ("square" if row["prediction"] == "1" else "circle")

    out = tmp_path / "test.csv"
    code, stdout, err = main_cli(capsys, "predict", "--head", trained["head"], "--manifest", trained["manifest"],
                                "--image-col", "path", "--id-col", "id", "--split-col", "split", "--split", "test",
                                "--weights-file", trained["weights"], "--no-progress", "--out", out)
    assert code == 0, err
    rows = read_rows(out)
    assert rows and {r["split"] for r in rows} == {"test"} and {"label", "background"} <= set(rows[0])
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert 0 <= metrics["all"]["accuracy"] <= 1 and "demographic_parity_difference" in metrics["all"]
    assert "dp_diff" in stdout
    # the group metrics carry their intervals, printed and saved
    m = metrics["all"]
    for key in ("accuracy", "demographic_parity_difference", "equalized_odds_difference", "worst_group_accuracy"):
        assert m[f"{key}_low"] <= m[key] <= m[f"{key}_high"], key
    header = next(line for line in stdout.splitlines() if line.startswith("split"))
    assert "acc_ci" in header and "eo_diff_ci" in header


@pytest.mark.slow
def test_predict_refuses_other_weights_and_a_missing_weights_file(trained, tmp_path):
    from fairhead import predict
    from fairhead_errors import BackboneError

    other = _save_resnet18(tmp_path / "other.pt", seed=1)
    with pytest.raises(BackboneError, match="sha256"):
        predict.predict_images(trained["head"], trained["source"], weights_file=other, progress=False)
    code, _, err = run_cli("predict", "--head", trained["head"], "--images", trained["tmp"] / "data" / "images",
                           "--out", tmp_path / "p.csv")
    assert code == 3 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "--weights-file" in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_a_head_without_backbone_provenance_gets_a_one_line_error(trained, tmp_path):
    doc = json.loads(trained["head"].read_text())
    del doc["extra"]["backbone"]
    old = tmp_path / "old-head.json"
    old.write_text(json.dumps(doc))
    code, _, err = run_cli("predict", "--head", old, "--images", trained["tmp"] / "data" / "images",
                           "--out", tmp_path / "p.csv")
    assert code == 3 and len(err.strip().splitlines()) == 1 and "fairhead fit" in err


# --------------------------------------------------------------------------- exports
@pytest.mark.slow
def test_sklearn_and_linear_exports_give_the_heads_scores(trained):
    import embedcache
    from solvers import load_head
    from solvers.export import to_sklearn, to_torch_linear

    head = load_head(trained["head"])
    with embedcache.open(trained["cache"]) as cache:
        X = np.asarray(cache.load(None).features, dtype=np.float64)
    model = to_sklearn(head)
    np.testing.assert_allclose(model.decision_function(X), head.decision_function(X), rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(model.predict_proba(X), head.predict_proba(X), rtol=0, atol=SCORE_ATOL)
    assert np.array_equal(model.predict(X), head.predict(X))
    linear = to_torch_linear(head)
    np.testing.assert_allclose(linear(torch.from_numpy(X)).squeeze(-1).numpy(), head.decision_function(X),
                               rtol=0, atol=SCORE_ATOL)


@pytest.mark.slow
def test_export_cli_sklearn_and_linear_files(trained, tmp_path, capsys):
    import joblib

    import embedcache
    from solvers import load_head

    head = load_head(trained["head"])
    with embedcache.open(trained["cache"]) as cache:
        X = np.asarray(cache.load(None).features, dtype=np.float64)
    code, _, err = main_cli(capsys, "export", "--head", trained["head"], "--to", "sklearn", "--out", tmp_path / "h.joblib")
    assert code == 0, err
    np.testing.assert_allclose(joblib.load(tmp_path / "h.joblib").decision_function(X), head.decision_function(X),
                               rtol=0, atol=SCORE_ATOL)
    code, _, err = main_cli(capsys, "export", "--head", trained["head"], "--to", "linear", "--out", tmp_path / "h.pt")
    assert code == 0, err
    state = torch.load(tmp_path / "h.pt", weights_only=True)
    linear = torch.nn.Linear(X.shape[1], 1, dtype=torch.float64)
    linear.load_state_dict(state)
    with torch.no_grad():
        np.testing.assert_allclose(linear(torch.from_numpy(X)).squeeze(-1).numpy(), head.decision_function(X),
                                   rtol=0, atol=SCORE_ATOL)


def _preprocessed(trained, n=8):
    from fairhead.predict import head_backbone, rebuild_backbone
    from solvers import load_head

    head = load_head(trained["head"])
    backbone = rebuild_backbone(head_backbone(head, trained["head"]), path=trained["head"],
                                weights_file=trained["weights"])
    source = trained["source"]
    images = torch.stack([backbone.transform(source.load_image(i)) for i in range(n)])
    return images, [str(i) for i in source.ids[:n]]


@pytest.mark.slow
def test_backbone_plus_head_program_gives_the_heads_scores(trained, tmp_path):
    from fairhead.export import export_head

    path = export_head(trained["head"], tmp_path / "model.pt2", fmt="program", weights_file=trained["weights"])
    program = torch.export.load(str(path)).module()
    images, ids = _preprocessed(trained)
    expected, tol = _cache_scores(trained), _score_tolerances(trained)
    with torch.no_grad():
        scores = program(images).numpy()
        single = program(images[:1]).numpy()  # the batch dimension is dynamic
    assert_scores_close(scores, [expected[i] for i in ids], [tol[i] for i in ids])
    assert_scores_close(single, scores[:1], [tol[ids[0]]])


@pytest.mark.slow
def test_onnx_export_gives_the_heads_scores(trained, tmp_path):
    from fairhead.export import export_head, onnx_available

    if not onnx_available():
        pytest.skip("the optional onnx extra (onnx, onnxscript) is not installed: pip install 'fairhead[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported file")
    path = export_head(trained["head"], tmp_path / "model.onnx", fmt="onnx", weights_file=trained["weights"])
    images, ids = _preprocessed(trained)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"images": images.numpy()})
    expected, tol = _cache_scores(trained), _score_tolerances(trained)
    assert_scores_close(scores, [expected[i] for i in ids], [tol[i] for i in ids])


def test_export_docstring_example_runs():
    import doctest

    import solvers.export

    result = doctest.testmod(solvers.export)
    assert result.attempted > 0 and result.failed == 0


def test_solvers_export_needs_a_fitted_head():
    from fairhead_errors import DataError
    from solvers import FairLogisticRegression
    from solvers.export import to_sklearn, to_torch_linear

    for export in (to_sklearn, to_torch_linear):
        with pytest.raises(DataError, match="call fit"):
            export(FairLogisticRegression())


@pytest.mark.slow
def test_a_custom_module_backbone_predicts_through_the_python_api(trained, tmp_path):
    """Backbone.from_module: the head records the module's state_dict sha256; another module is refused."""
    import torchvision.transforms.v2 as T

    import embedcache
    from fairhead import pipeline, predict
    from fairhead_errors import BackboneError, DataError

    def tiny(seed):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten())
        transform = T.Compose([T.PILToTensor(), T.Resize((32, 32)), T.ToDtype(torch.float32, scale=True)])
        return embedcache.Backbone.from_module(net, transform, name="tiny-cnn")

    cache = tmp_path / "custom.h5"
    embedcache.extract(trained["source"], tiny(0), cache, batch_size=16, num_workers=0, progress=False)
    head = tmp_path / "custom-head.json"
    pipeline.fit_on_cache(cache, constraint=None, save=head, min_group_size=2)
    result = predict.predict_images(head, trained["source"], backbone=tiny(0), batch_size=16, progress=False)
    with embedcache.open(cache) as c:
        from fairhead.export import float32_score_tolerance
        from solvers import load_head

        features = np.asarray(c.load(None).features)
        expected = load_head(head).decision_function(features)
        tolerance = float32_score_tolerance(load_head(head).coef_, features)
    assert_scores_close(result.scores, expected, tolerance)
    with pytest.raises(BackboneError, match="sha256"):
        predict.predict_images(head, trained["source"], backbone=tiny(1), progress=False)
    with pytest.raises(DataError, match="Backbone.from_module"):
        predict.predict_images(head, trained["source"], progress=False)


@pytest.mark.slow
def test_onnx_export_without_the_extra_says_how_to_install_it(trained, tmp_path, capsys):
    from fairhead.export import onnx_available

    if onnx_available():
        pytest.skip("the onnx extra is installed here; this checks the message when it is not")
    code, _, err = main_cli(capsys, "export", "--head", trained["head"], "--to", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 3 and len(err.strip().splitlines()) == 1 and "fairhead[onnx]" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_onnx_export_carries_metadata_and_names_its_weights_file(trained, tmp_path, capsys):
    """A consumer without fairhead reads the preprocessing and the classes from the file; the CLI names
    every file it wrote (torch's exporter may put the weights in a sidecar beside the graph)."""
    import json

    from fairhead.export import export_sidecars, onnx_available

    if not onnx_available():
        pytest.skip("the optional onnx extra (onnx, onnxscript) is not installed: pip install 'fairhead[onnx]'")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported file")
    out = tmp_path / "model.onnx"
    code, stdout, _ = main_cli(capsys, "export", "--head", trained["head"], "--to", "onnx", "--out", out,
                               "--weights-file", trained["weights"])
    assert code == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    for name in written:  # every file in the folder is named on stdout
        assert name in stdout, (name, stdout)
    assert [p.name for p in export_sidecars(out)] == [n for n in written if n != "model.onnx"]
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    extra = json.loads(trained["head"].read_text())["extra"]
    assert json.loads(props["fairhead.class_names"]) == extra["label"]["class_names"]
    assert props["fairhead.positive_class"] == extra["label"]["positive"]
    assert props["fairhead.preprocessing"] == extra["backbone"]["preprocessing"]
    assert props["fairhead.constraint"] == "dp-score" and props["fairhead.eps"] == "0.05"
    images, ids = _preprocessed(trained)  # the metadata did not disturb the weights
    (scores,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})
    expected, tolerance = _cache_scores(trained), _score_tolerances(trained)
    assert_scores_close(scores, [expected[i] for i in ids], [tolerance[i] for i in ids])


@pytest.mark.slow
def test_program_export_prints_no_torch_warning(trained, tmp_path, capfd):
    code, _, err = run_cli("export", "--head", trained["head"], "--to", "program", "--out", tmp_path / "model.pt2",
                           "--weights-file", trained["weights"])
    assert code == 0 and "Warning" not in err and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]
