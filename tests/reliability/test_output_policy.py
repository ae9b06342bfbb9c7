"""The output policy itself (``fairhead_io.check_output_file`` and friends), beside the conformance suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fairhead_errors import DataError
from fairhead_io import (OutputKind, atomic_write_text, by_signature, check_output_file, describe_file,
                         remove_stale_temps, starts_with, temp_prefix)

CSV_KIND = by_signature("a test table", starts_with(b"id,value"))


def test_describe_file_names_what_a_target_is(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    (tmp_path / "h.json").write_text('{"format": "fairhead-head"}')
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "z.pt").write_bytes(b"PK\x03\x04rest")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert describe_file(tmp_path / "t.csv") == "a CSV table"
    assert describe_file(tmp_path / "h.json") == "a fairhead head"
    assert describe_file(tmp_path / "x.json") == "a JSON file"
    assert describe_file(tmp_path / "e") == "an empty file"
    assert describe_file(tmp_path / "z.pt").startswith("a zip archive")
    assert describe_file(tmp_path / "dangling") == "a dangling symbolic link"
    assert describe_file(tmp_path) == "a folder"


def test_only_an_own_output_an_empty_file_or_nothing_may_be_replaced(tmp_path):
    ours, empty, theirs = tmp_path / "ours.csv", tmp_path / "empty.csv", tmp_path / "theirs.csv"
    ours.write_text("id,value\n1,2\n")
    empty.write_bytes(b"")
    theirs.write_text("name,age\nann,3\n")
    for path in (ours, empty, tmp_path / "new.csv"):
        assert check_output_file(path, CSV_KIND) == path
    with pytest.raises(DataError, match=r"is a CSV table, not a test table that fairhead wrote; it is not replaced"):
        check_output_file(theirs, CSV_KIND)
    assert theirs.read_text() == "name,age\nann,3\n"


def test_an_input_of_the_command_is_refused_even_through_another_spelling(tmp_path):
    head = tmp_path / "head.csv"
    head.write_text("id,value\n")  # even a file of the output's own kind
    os.symlink(head, tmp_path / "link.csv")
    for spelling in (head, tmp_path / "link.csv", tmp_path / "." / "head.csv"):
        with pytest.raises(DataError, match=r"own input \(the --head file\)"):
            check_output_file(spelling, CSV_KIND, inputs={"the --head file": head})


def test_a_kind_whose_test_fails_to_parse_is_not_ours(tmp_path):
    def explode(path):
        raise RuntimeError("cannot parse")

    (tmp_path / "f").write_text("x")
    assert OutputKind("a thing", explode).is_own(tmp_path / "f") is False


def test_stale_temporaries_of_a_dead_writer_are_removed_and_a_live_writers_are_kept(tmp_path):
    target = tmp_path / "out.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.csv.{dead_pid}.abc.tmp"
    live = tmp_path / f"{temp_prefix(target)}def.tmp"
    other = tmp_path / ".other.csv.1.x.tmp"
    for path in (stale, live, other):
        path.write_text("partial")
    assert remove_stale_temps(target) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "f.txt"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(path, "new")
    assert info.value.filename == str(path)  # the one-line message names the file
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.slow
def test_a_large_onnx_model_keeps_its_weights_in_a_hash_named_sidecar_swapped_under_the_model(tmp_path, monkeypatch):
    """Above protobuf's 2 GiB (here: a limit of 0 bytes) the weights go to ``model.onnx.<sha12>.data``,
    renamed into place before the model; rewriting removes the old model's sidecar only after the swap."""
    import numpy as np
    import torch

    from fairhead import export

    if not export.onnx_available():
        pytest.skip("the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(export, "ONNX_INLINE_LIMIT", 0)

    class Tiny(torch.nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, images):
            return self.conv(images).mean(dim=(1, 2, 3)).to(torch.float64)

    example = torch.rand(2, 3, 8, 8)
    out = tmp_path / "m.onnx"
    sidecars = []
    for seed in (0, 1):
        module = Tiny(seed).eval()
        export.export_onnx(module, example, out)
        sidecars.append(sorted(p.name for p in tmp_path.iterdir() if p.name != "m.onnx"))
        (scores,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
            None, {"images": example.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(scores, module(example).numpy(), rtol=1e-5)
    assert all(len(names) == 1 and names[0].startswith("m.onnx.") and names[0].endswith(".data")
               for names in sidecars), sidecars
    assert sidecars[0] != sidecars[1]  # the new weights had a new name; the old ones are gone


def test_predict_refuses_a_users_metrics_file_beside_the_predictions(tmp_path):
    from fairhead.predict import check_prediction_targets

    (tmp_path / "preds.metrics.json").write_text('{"my": "notes"}')
    with pytest.raises(DataError, match=r"preds.metrics.json' is a JSON file, not a predictions' metrics file"):
        check_prediction_targets(tmp_path / "preds.csv")
    assert (tmp_path / "preds.metrics.json").read_text() == '{"my": "notes"}'
    (tmp_path / "preds.metrics.json").write_text('{"all": {"accuracy": 0.5}}')  # an earlier run's: replaced
    assert check_prediction_targets(tmp_path / "preds.csv") == (tmp_path / "preds.csv",
                                                                 tmp_path / "preds.metrics.json")
