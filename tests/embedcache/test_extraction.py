"""End-to-end extraction: real images through real backbones into a real cache."""

from __future__ import annotations

import functools
import os
import sys
import threading

import numpy as np
import pytest
import torch

import embedcache
from embedcache import BackboneError, CacheError, CelebASource, DataError, ManifestSource, SyntheticSource, extract
from embedcache.sources.base import TableSource
from embedcache.store import schema
from embedcache.store.journal import Journal, WriteLock

#: the extractor runs the same batches as a direct forward pass, so on CPU the bits agree
EXACT = dict(rtol=0, atol=0)


def direct_features(source, backbone, batch_size):
    """What the cache must hold: the backbone over the source, batch by batch."""
    blocks = []
    for start in range(0, len(source), batch_size):
        rows = range(start, min(len(source), start + batch_size))
        images = torch.stack([backbone.transform(source.load_image(i)) for i in rows])
        blocks.append(backbone.forward_features(images))
    return torch.cat(blocks).numpy()


def test_cache_holds_the_backbone_features(small_cache, small_source, resnet_small):
    with embedcache.open(small_cache) as cache:
        data = cache.load()
        assert cache.n_rows == 60 and cache.feature_dim == 512
        assert cache.provenance["backbone-arch"] == "resnet18"
        assert cache.provenance["compute"] == "cpu"
        assert cache.fingerprint == small_source.fingerprint()
    np.testing.assert_allclose(data.features, direct_features(small_source, resnet_small, 16), **EXACT)
    assert data.labels.tolist() == small_source.labels.tolist()
    assert data.sample_ids.tolist() == small_source.ids.tolist()
    assert not schema.journal_path(small_cache).exists() and not schema.lock_path(small_cache).exists()


def test_rerun_is_a_no_op(small_cache, small_source, resnet_small):
    before = small_cache.stat().st_mtime_ns
    extract(small_source, resnet_small, small_cache, batch_size=16, num_workers=0, progress=False)
    assert small_cache.stat().st_mtime_ns == before


def test_other_backbone_or_dataset_is_refused(small_cache, small_source, tmp_path):
    other = embedcache.build_backbone("resnet18", image_size=40)
    with pytest.raises(CacheError, match="was built from preprocessing .* use another `out` or pass `overwrite=True`"):
        extract(small_source, other, small_cache, progress=False)
    with pytest.raises(CacheError, match="was built from dataset fingerprint"):
        extract(SyntheticSource(60, seed=6, image_size=32), embedcache.build_backbone("resnet18", image_size=32),
                small_cache, progress=False)


@pytest.mark.slow
def test_overwrite_replaces(tmp_path, small_source, resnet_small):
    out = tmp_path / "c.h5"
    extract(small_source, resnet_small, out, batch_size=32, num_workers=0, progress=False, feature_dtype="float16")
    with embedcache.open(out) as cache:
        assert cache.feature_dtype == "float16"
    with pytest.raises(CacheError, match="feature dtype float16 but this run uses float32"):
        extract(small_source, resnet_small, out, batch_size=32, num_workers=0, progress=False)
    extract(small_source, resnet_small, out, batch_size=32, num_workers=0, progress=False, overwrite=True)
    with embedcache.open(out) as cache:
        assert cache.feature_dtype == "float32"


@pytest.mark.slow
def test_workers_give_the_same_bits(tmp_path, small_cache, small_source, resnet_small):
    out = tmp_path / "workers.h5"
    extract(small_source, resnet_small, out, batch_size=16, num_workers=2, progress=False)
    with embedcache.open(out) as a, embedcache.open(small_cache) as b:
        np.testing.assert_array_equal(a.load().features, b.load().features)


class ThreadRecordingSource(SyntheticSource):
    """A synthetic source that notes which thread decoded each row."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decoded_on: dict[int, str] = {}

    def load_image(self, i):
        self.decoded_on[i] = threading.current_thread().name
        return super().load_image(i)


def test_read_ahead_thread_gives_the_in_line_bits(tmp_path, small_cache, small_source, resnet_small, monkeypatch):
    """Without workers a background thread decodes; the bytes are those of decoding between forward passes."""
    threads = torch.get_num_threads()
    ahead = ThreadRecordingSource(60, seed=5, image_size=32)  # the rows of small_source
    extract(ahead, resnet_small, tmp_path / "ahead.h5", batch_size=16, num_workers=0, progress=False)
    assert set(ahead.decoded_on.values()) == {"embedcache-prepare"} and len(ahead.decoded_on) == 60
    extract_module = sys.modules["embedcache.extract"]
    monkeypatch.setattr(extract_module, "_batches", functools.partial(extract_module._batches, read_ahead=False))
    inline = ThreadRecordingSource(60, seed=5, image_size=32)
    extract(inline, resnet_small, tmp_path / "inline.h5", batch_size=16, num_workers=0, progress=False)
    assert set(inline.decoded_on.values()) == {threading.current_thread().name}
    with embedcache.open(tmp_path / "ahead.h5") as a, embedcache.open(tmp_path / "inline.h5") as b, \
            embedcache.open(small_cache) as c:
        np.testing.assert_array_equal(a.load().features, b.load().features)
        np.testing.assert_array_equal(a.load().features, c.load().features)
    assert not [t for t in threading.enumerate() if t.name == "embedcache-prepare"]
    assert torch.get_num_threads() == threads  # the producer's one-thread setting did not leak


@pytest.mark.parametrize(
    "cores, device, rows, workers",
    [(2, "cpu", 10_000, 0), (4, "cpu", 10_000, 0), (16, "cpu", 10_000, 4), (16, "cuda", 10_000, 14),
     (2, "cuda", 10_000, 1), (16, "cuda", 100, 0)],
)
def test_default_workers_follow_the_cores_and_the_device(monkeypatch, cores, device, rows, workers):
    extract_module = sys.modules["embedcache.extract"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert extract_module._auto_workers(None, rows, 64, torch.device(device)) == workers
    assert extract_module._auto_workers(3, rows, 64, torch.device(device)) == 3


class FailingSource(TableSource):
    """A synthetic source whose image ``fail_at`` cannot be read (until it is repaired)."""

    def __init__(self, base: SyntheticSource, fail_at: int | None):
        self.base, self.fail_at = base, fail_at
        super().__init__(ids=base.ids, labels=base.labels, label_name=base.label_name,
                         label_categories=base.label_categories, sensitive=base.sensitive, splits=base.splits,
                         where="failing source")

    def load_image(self, i):
        if i == self.fail_at:
            raise DataError(f"image {i} of failing source cannot be decoded; replace the file or drop its row")
        return self.base.load_image(i)

    def _fingerprint_extra(self):
        return self.base._fingerprint_extra()

    def describe(self):
        return self.base.describe()


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_interrupted_run_resumes_to_the_same_bits(tmp_path, small_cache, small_source, resnet_small, num_workers):
    out = tmp_path / "resumed.h5"
    with pytest.raises(DataError, match="image 40 of failing source cannot be decoded") as err:
        extract(FailingSource(small_source, 40), resnet_small, out, batch_size=16, num_workers=num_workers,
                progress=False)
    assert "\n" not in str(err.value)
    journal = Journal(out)
    assert journal.committed_rows() == 32 and not out.exists()
    with pytest.raises(CacheError, match=r"incomplete \(32 of 60 rows\)"):
        embedcache.open(out)
    # a different run may not pick up this journal ...
    with pytest.raises(CacheError, match="unfinished extraction .* was built from backbone resnet18/none"):
        extract(small_source, embedcache.build_backbone("mobilenet_v3_small", image_size=32), out, progress=False)
    # ... but the same run (even with another batch size asked) finishes it with identical bits
    extract(FailingSource(small_source, None), resnet_small, out, batch_size=8, num_workers=num_workers,
            progress=False)
    with embedcache.open(out) as a, embedcache.open(small_cache) as b:
        np.testing.assert_array_equal(a.load().features, b.load().features)
        assert a.identity == b.identity


def test_concurrent_writer_is_refused(tmp_path, small_source, resnet_small):
    out = tmp_path / "locked.h5"
    with WriteLock(out):
        with pytest.raises(CacheError, match=r"is being written by another process \(pid \d+"):
            extract(small_source, resnet_small, out, progress=False)
    assert not schema.lock_path(out).exists()
    extract(small_source, resnet_small, out, batch_size=32, num_workers=0, progress=False)


def test_celeba_tree_end_to_end(tmp_path, celeba_root, resnet_small):
    source = CelebASource(celeba_root, target="Blond_Hair", sensitive=["Male"])
    out = extract(source, resnet_small, tmp_path / "celeba.h5", batch_size=8, progress=False)
    with embedcache.open(out) as cache:
        assert cache.splits == ["train", "valid", "test"] and cache.label_name == "Blond_Hair"
        table = cache.count_table()
        valid = cache.load("valid")
        assert cache.provenance["source"]["kind"] == "celeba"
    assert table.groups == ["Male=no", "Male=yes"] and table.counts.sum() == len(source)
    assert len(valid) == 5 and valid.sample_ids.tolist() == source.ids[-10:-5].tolist()


def test_missing_image_files_fail_before_any_work(tmp_path, synthetic_manifest, resnet_small):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic_manifest.parent, root)
    source = ManifestSource(root / "manifest.csv", label_col="shape", sensitive_cols="background", split_col="split")
    (root / source.relative_paths[7]).unlink()
    with pytest.raises(DataError, match=r"1 of 48 image files of manifest .* are missing \(first: .*syn3-000007.jpg"):
        extract(source, resnet_small, tmp_path / "m.h5", progress=False)
    assert not schema.journal_path(tmp_path / "m.h5").exists()


def test_truncated_jpeg_is_a_one_line_error(tmp_path, synthetic_manifest, resnet_small):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic_manifest.parent, root)
    source = ManifestSource(root / "manifest.csv", label_col="shape", sensitive_cols="background", split_col="split")
    victim = root / source.relative_paths[20]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(DataError, match="syn3-000020.jpg' of manifest .* cannot be decoded") as err:
        extract(source, resnet_small, tmp_path / "m.h5", num_workers=1, batch_size=8, progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_lite0_extracts_from_written_files(tmp_path, synthetic_manifest, lite0):
    """EfficientNet-Lite0 at 224 px is the expensive path: six real JPEG files are enough."""
    lines = synthetic_manifest.read_text().splitlines()
    manifest = tmp_path / "six.csv"
    manifest.write_text("\n".join(lines[:7]) + "\n")
    source = ManifestSource(manifest, root=synthetic_manifest.parent, label_col="shape",
                            sensitive_cols="background", split_col="split", id_col="id")
    out = extract(source, lite0, tmp_path / "lite0.h5", batch_size=3, progress=False)
    with embedcache.open(out) as cache:
        data = cache.load()
        assert cache.provenance["backbone-weights"] == "imagenet" and data.features.shape == (6, 1280)
    np.testing.assert_allclose(data.features, direct_features(source, lite0, 3), **EXACT)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, DataError, "`batch_size=0` must be a positive integer"),
        ({"num_workers": -1}, DataError, "`num_workers=-1`"),
        ({"feature_dtype": "int8"}, CacheError, "feature dtype 'int8' is not supported"),
        ({"autocast": "fp8"}, DataError, "autocast='fp8' is not supported"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nonsense"}, DataError, "device"),
    ],
    ids=["batch", "workers", "dtype", "autocast", "device"],
)
def test_bad_arguments(tmp_path, small_source, resnet_small, kwargs, error, match):
    with pytest.raises(error, match=match):
        extract(small_source, resnet_small, tmp_path / "x.h5", progress=False, **kwargs)
    assert not os.listdir(tmp_path)


def test_non_finite_features_are_refused(tmp_path, small_source):
    import torchvision.transforms.v2 as T

    class Exploding(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("inf"))

    tf = T.Compose([T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    backbone = embedcache.Backbone.from_module(Exploding(), tf, name="exploding")
    with pytest.raises(BackboneError, match="non-finite features at row 0"):
        extract(small_source, backbone, tmp_path / "x.h5", progress=False)
