"""Round 3 (issue 20): one regression test per silent result, traceback and unclear message the probe found
(the output policy's cases are in test_conformance.py and test_output_policy.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from fairhead_errors import DataError
from support.files import write_csv, write_feature_table


def one_line_cli(capsys, *argv, exit_code=3):
    from fairhead.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == exit_code, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    import embedcache
    from fairhead import pipeline

    root = tmp_path_factory.mktemp("round3")
    table = write_feature_table(root / "table.csv", n=300, d=4)
    cache = embedcache.import_table(table, label="label", sensitive=["group"], split="split", id_col="id",
                                    out=root / "cache.h5", progress=False)
    pipeline.fit_on_cache(cache, constraint=None, save=root / "head.json")
    return {"root": root, "cache": cache, "head": root / "head.json", "table": table}


@pytest.fixture()
def data():
    from solvers.synthetic import make_fair_classification

    return make_fair_classification(200, 3, seed=0)


# --------------------------------------------------------------------------- the shared option checks
@pytest.mark.parametrize("flags, match", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
    (["--batch-size", "-3"], "--batch-size must be an integer >= 1; got -3"),
    (["--device", "tpu"], "--device 'tpu' is not a torch device"),
    (["--device", "meta"], "--device 'meta' is not supported here"),
])
def test_predict_refuses_bad_shared_options_in_one_line(tabular, tmp_path, capsys, flags, match):
    (tmp_path / "images").mkdir()
    line = one_line_cli(capsys, "predict", "--head", tabular["head"], "--images", tmp_path / "images", *flags,
                        "--out", tmp_path / "p.csv")
    assert match in line and not (tmp_path / "p.csv").exists()


def test_cuda_without_a_gpu_is_one_line(tabular, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "images").mkdir()
    line = one_line_cli(capsys, "predict", "--head", tabular["head"], "--images", tmp_path / "images",
                        "--device", "cuda", "--out", tmp_path / "p.csv")
    assert "no CUDA device is available here; pass --device cpu" in line


def test_the_api_refuses_what_the_cli_refuses(tabular, tmp_path):
    from fairhead.predict import ImageFolder, predict_images

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    for kwargs, match in ((dict(batch_size=0), "--batch-size must be"), (dict(batch_size=2.0), "--batch-size must be"),
                          (dict(device="tpu"), "not a torch device")):
        with pytest.raises(DataError, match=match):
            predict_images(tabular["head"], ImageFolder(tmp_path / "images"), progress=False, **kwargs)


def test_shared_checks_directly():
    from fairhead_options import check_batch_size, check_confidence, check_eps, check_memory_budget, physical_memory

    assert check_batch_size(np.int64(8)) == 8 and check_eps(0) == 0.0 and check_confidence(0.9) == 0.9
    for bad in (True, 0, 1.5, "8"):
        with pytest.raises(DataError):
            check_batch_size(bad)
    for bad in (float("nan"), -0.1, float("inf"), True, "0.1"):
        with pytest.raises(DataError):
            check_eps(bad)
    for bad in (0, 1, 1.0, float("nan"), "0.9"):
        with pytest.raises(DataError):
            check_confidence(bad)
    total = physical_memory()
    if total is not None:
        assert check_memory_budget(total) == total
        with pytest.raises(DataError, match="more than this machine's"):
            check_memory_budget(total + 1, value="huge")


def test_a_memory_budget_beyond_the_machine_is_refused_before_any_allocation(tabular, capsys):
    from solvers.out_of_core import parse_memory

    line = one_line_cli(capsys, "fit", tabular["cache"], "--max-memory", "100TB", exit_code=2)
    assert "more than this machine's" in line and "100TB" in line
    with pytest.raises(DataError, match="more than this machine's"):
        parse_memory("100TB")


# --------------------------------------------------------------------------- silently wrong, now refused
@pytest.mark.parametrize("eps", [float("nan"), -0.1, float("inf")])
def test_fit_path_refuses_the_eps_the_estimator_refuses(data, eps):
    from solvers import FairLogisticRegression
    from solvers.path import fit_path

    X, y, s = data
    with pytest.raises(DataError, match="The 'eps' parameter of FairLogisticRegression") as from_path:
        fit_path(X, y, sensitive_features=s, eps_grid=[0.1, eps], constraint="dp-score")
    with pytest.raises(DataError) as from_estimator:
        FairLogisticRegression(constraint="dp-score", eps=eps).fit(X, y, sensitive_features=s)
    assert str(from_path.value) == str(from_estimator.value)


def test_a_constrained_fit_without_sensitive_features_raises(data):
    from solvers import FairLogisticRegression

    X, y, _ = data
    with pytest.raises(DataError, match="constraint='dp' needs sensitive_features in fit"):
        FairLogisticRegression(constraint="dp", eps=0.01).fit(X, y)
    assert FairLogisticRegression().fit(X, y).coef_.shape == (1, 3)  # unconstrained: still fine


def test_gridsearch_without_metadata_routing_no_longer_selects_an_unconstrained_head(data):
    from sklearn.model_selection import GridSearchCV

    from solvers import FairLogisticRegression

    X, y, _ = data
    search = GridSearchCV(FairLogisticRegression(constraint="dp-score"), {"eps": [0.01, 0.1]}, cv=2,
                          error_score="raise")
    with pytest.raises(DataError, match="needs sensitive_features"):
        search.fit(X, y)


def test_take_keeps_the_label_fields_and_protocols_uses_it(tabular):
    import embedcache
    from fairhead import pipeline, protocols

    with embedcache.open(tabular["cache"]) as cache:
        arrays = pipeline.load_arrays(cache, "train", None)
    arrays.n_classes, arrays.label_categories, arrays.label_name = 3, ("a", "b", "c"), "kind"  # as a K-class cache
    for taken in (arrays.take(np.arange(5)), protocols._take(arrays, np.arange(5))):
        assert (taken.n_classes, taken.label_name, taken.label_categories) == (3, "kind", ("a", "b", "c"))
        assert len(taken.y) == 5 and np.array_equal(taken.sample_ids, arrays.sample_ids[:5])


def test_a_real_missing_named_category_is_not_merged_with_missing_values(tmp_path):
    import embedcache

    rows = [[f"r{i}", i % 5, i % 3, i % 2, ["(missing)", "", "b"][i % 3]] for i in range(30)]
    table = write_csv(tmp_path / "t.csv", ["id", "f0", "f1", "label", "site"], rows)
    with pytest.raises(DataError, match=r"real value '\(missing\)' \(row 0\) and missing values"):
        embedcache.import_table(table, label="label", sensitive=["site"], id_col="id", out=tmp_path / "c.h5",
                                sensitive_missing="group", progress=False)
    assert not (tmp_path / "c.h5").exists()


def test_predict_split_without_the_manifests_split_column_is_refused(tabular, tmp_path, capsys):
    manifest = write_csv(tmp_path / "m.csv", ["path", "label", "group", "split"],
                         [["a.png", 0, "a", "test"], ["b.png", 1, "b", "train"]])
    line = one_line_cli(capsys, "predict", "--head", tabular["head"], "--manifest", manifest, "--target", "label",
                        "--sensitive", "group", "--split", "test", "--out", tmp_path / "p.csv")
    assert "needs the manifest's own split column" in line and "--split-col" in line


def test_a_huge_feature_is_one_line_not_a_linalg_error(data):
    from solvers import FairLogisticRegression

    X, y, s = data
    X = X.copy()
    X[3, 1] = 1e308
    for constraint in (None, "dp-score", "dp"):
        with pytest.raises(DataError, match=r"row 3, column 1\) is too large"):
            FairLogisticRegression(constraint=constraint, eps=0.05).fit(
                X, y, sensitive_features=None if constraint is None else s)


def test_api_tracebacks_are_one_line_errors(tabular, data):
    import torch

    from solvers import FairLogisticRegression, RowChunks
    from solvers.export import to_torch_linear

    with pytest.raises(DataError, match="has no dataset 'nope'.*features"):
        RowChunks(tabular["cache"], dataset="nope")
    with pytest.raises(DataError, match="no file"):
        RowChunks(tabular["root"] / "missing.h5", dataset="features")
    X, y, _ = data
    head = FairLogisticRegression().fit(X, y)
    with pytest.raises(DataError, match="floating dtype"):
        to_torch_linear(head, dtype=torch.int64)


# --------------------------------------------------------------------------- hand-edited heads
def _edited(tabular, tmp_path, edit):
    doc = json.loads(tabular["head"].read_text())
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("name, edit, match", [
    ("classes reversed", lambda d: d.__setitem__("classes", d["classes"][::-1]), "not in sorted order"),
    ("classes mixed", lambda d: d.__setitem__("classes", [0, "1"]), "all numbers or all strings"),
    ("boolean coefficient", lambda d: d["coef"][0].__setitem__(0, True), "coef holds true/false"),
    ("boolean intercept", lambda d: d.__setitem__("intercept", [False]), "intercept holds true/false"),
    ("extra a list", lambda d: d.__setitem__("extra", [1]), "extra is list"),
])
def test_hand_edited_head_fields_are_refused_on_load(tabular, tmp_path, name, edit, match):
    from solvers import load_head

    with pytest.raises(DataError, match=match):
        load_head(_edited(tabular, tmp_path, edit))


def test_a_deeply_nested_head_is_one_line(tmp_path):
    from solvers import load_head

    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_head(path)


def _with_backbone(doc):
    doc["extra"]["backbone"] = {"arch": "resnet18", "weights": "file", "weights_sha256": "0" * 64,
                                "preprocessing": "x", "feature_node": None, "feature_dim": doc["n_features_in"],
                                "feature_dtype": "float32"}
    doc["extra"]["label"] = {"name": "label", "categories": ["0", "1"], "class_names": ["0", "1"]}


@pytest.mark.parametrize("field, value, match", [
    ("backbone", [1], "extra.backbone is list"),
    ("arch", ["resnet18"], "extra.backbone.arch is"),
    ("feature_dim", "512", "extra.backbone.feature_dim is '512'"),
    ("feature_dtype", "int8", "feature_dtype is 'int8'"),
    ("feature_dtype", "complex128", "feature_dtype is 'complex128'"),
    ("class_names", ["0"], "extra.label.class_names is"),
    ("label", "yes", "extra.label is str"),
])
def test_damaged_backbone_records_are_one_line_in_predict(tabular, tmp_path, capsys, field, value, match):
    def edit(doc):
        _with_backbone(doc)
        if field in ("backbone", "label"):
            doc["extra"][field] = value
        elif field == "class_names":
            doc["extra"]["label"][field] = value
        else:
            doc["extra"]["backbone"][field] = value

    head = _edited(tabular, tmp_path, edit)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line = one_line_cli(capsys, "predict", "--head", head, "--images", tmp_path / "images",
                            "--out", tmp_path / "p.csv")
    assert match in line, line


# --------------------------------------------------------------------------- unclear, now one clear line
def test_a_float_label_names_the_problem_and_the_fix(data):
    from solvers import FairLogisticRegression

    X, y, _ = data
    with pytest.raises(DataError, match=r"Unknown label type: continuous: y holds continuous values .* not class "
                                        r"labels"):
        FairLogisticRegression().fit(X, y + 0.5)


def test_a_string_eps_grid_is_refused_like_a_string_eps(data):
    from solvers.path import fit_path

    X, y, s = data
    with pytest.raises(DataError, match="The 'eps' parameter of FairLogisticRegression must be a float"):
        fit_path(X, y, sensitive_features=s, eps_grid="0.1", constraint="dp-score")


def test_import_refuses_a_column_of_text_vectors_instead_of_leaving_it_out(tmp_path):
    import embedcache

    rows = [[f"r{i}", f"[{i}.0, {i % 3}.5]", i * 0.5, i % 2, "ab"[i % 2]] for i in range(40)]
    table = write_csv(tmp_path / "v.csv", ["id", "emb", "f0", "label", "g"], rows)
    with pytest.raises(DataError, match=r"column 'emb' holds vectors written as text \('\[0.0, 0.5\]'\)"):
        embedcache.import_table(table, label="label", sensitive=["g"], id_col="id", out=tmp_path / "c.h5",
                                progress=False)
    cache = embedcache.import_table(table, label="label", sensitive=["g"], id_col="id", features=["f0"],
                                    out=tmp_path / "c.h5", progress=False)  # chosen explicitly: fine
    assert cache.exists()


def test_a_dangling_symlink_image_is_refused_not_skipped(tmp_path):
    import os

    from fairhead.predict import ImageFolder

    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "imgs" / "b.png")
    with pytest.raises(DataError, match=r"b.png' is a symbolic link to a file that does not exist"):
        ImageFolder(tmp_path / "imgs")


def test_load_head_on_a_fifo_does_not_block(tmp_path):
    import os

    from solvers import load_head

    os.mkfifo(tmp_path / "head.json")
    with pytest.raises(DataError, match="not a regular file"):
        load_head(tmp_path / "head.json")


def test_momentum_of_one_or_more_is_refused(tabular, capsys):
    line = one_line_cli(capsys, "finetune-full", tabular["cache"], "--optimizer", "sgd", "--momentum", "2",
                        "--out", tabular["root"] / "full")
    assert "--momentum must be a number in [0, 1)" in line


# --------------------------------------------------------------------------- torchrun
def test_a_lost_peer_rank_is_one_line_not_a_bug(monkeypatch):
    from fairhead.data_parallel import peer_failure

    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                        "[127.0.0.1]:4807")
    assert peer_failure(gloo) is None  # a plain process: not a lost rank
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    line = peer_failure(gloo)
    assert line.startswith("rank 0 lost contact with another rank") and "rerun the same command" in line
    assert peer_failure(RuntimeError("shape mismatch")) is None  # a real bug stays a bug


@pytest.mark.parametrize("rank, printed", [("0", 1), ("1", 0)])
def test_a_refusal_under_torchrun_is_printed_once(tabular, tmp_path, monkeypatch, capsys, rank, printed):
    from fairhead.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    code = main(["protocols", str(tabular["cache"]), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 3 and err.count("fairhead: error:") == printed
    assert ("runs in one process" in err) == bool(printed)


def test_a_minimax_path_over_several_bounds_is_refused(data):
    from solvers.path import fit_path

    X, y, s = data
    with pytest.raises(DataError, match="'minimax' .* has no bound"):
        fit_path(X, y, sensitive_features=s, eps_grid=[0.1, 0.05], constraint="minimax")
    (head,) = fit_path(X, y, sensitive_features=s, eps_grid=[0.0], constraint="minimax")
    assert head.coef_.shape == (1, 3)


def test_a_parquet_column_of_empty_vectors_is_refused_not_blamed_on_the_disk(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import embedcache

    table = pa.table({"id": [f"r{i}" for i in range(40)], "label": [i % 2 for i in range(40)],
                      "emb": pa.array([[] for _ in range(40)], type=pa.list_(pa.float32())), "g": ["a", "b"] * 20})
    pq.write_table(table, tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"'emb' hold no values \(empty vectors\)"):
        embedcache.import_table(tmp_path / "e.parquet", label="label", sensitive=["g"], id_col="id", features=["emb"],
                                out=tmp_path / "e.h5", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]


@pytest.mark.parametrize("text", ["hello", "x\ny\n", "hi there, these are my notes"])
def test_a_text_file_as_weights_is_one_line(tmp_path, text):
    from embedcache.backbones import load_state_dict_file
    from fairhead_errors import BackboneError

    path = tmp_path / "notes.pt"
    path.write_text(text)
    with pytest.raises(BackboneError, match="cannot be read \\(not a torch file: it starts with"):
        load_state_dict_file(path)


def test_a_kill_before_the_journals_commit_marker_leaves_a_journal_the_rerun_replaces(tmp_path, monkeypatch):
    """The journal's meta is written last: stopped just before it, the folder has features, inputs and the
    committed count but no meta, and the rerun starts over (never 'check free disk space')."""
    import embedcache
    from embedcache.store import journal as journal_module
    from embedcache.store import schema

    source = embedcache.SyntheticSource(8, seed=1, image_size=32)
    backbone = embedcache.build_backbone("resnet18", image_size=32)
    real = journal_module.atomic_write_text

    def stop_at_meta(path, text):
        if path.name == schema.JOURNAL_META:
            raise KeyboardInterrupt  # the kill, at the last step of creating the journal
        real(path, text)

    monkeypatch.setattr(journal_module, "atomic_write_text", stop_at_meta)
    with pytest.raises(KeyboardInterrupt):
        embedcache.extract(source, backbone, tmp_path / "c.h5", batch_size=4, num_workers=0, progress=False)
    monkeypatch.undo()
    journal = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert (journal / schema.JOURNAL_COMMITTED).exists() and not (journal / schema.JOURNAL_META).exists()
    out = embedcache.extract(source, backbone, tmp_path / "c.h5", batch_size=4, num_workers=0, progress=False)
    with embedcache.open(out) as cache:
        assert cache.load(None).features.shape[0] == 8
