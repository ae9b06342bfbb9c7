"""Sources read real on-disk formats and refuse bad input with one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from embedcache import CelebASource, DataError, ManifestSource, SyntheticSource
from embedcache.sources.base import encode_categorical, hash_splits
from embedcache.sources.synthetic import write_synthetic_dataset

from support.celeba import CELEBA_ATTRIBUTES, CELEBA_ROWS


def read_attr_file(root):
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()[2:]
    return {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines}


def test_celeba_reads_the_official_files(celeba_root):
    src = CelebASource(celeba_root, target="Blond_Hair", sensitive=("Male", "Young"))
    attrs = read_attr_file(celeba_root)
    assert len(src) == CELEBA_ROWS
    assert src.ids[0] == "000001.jpg"
    blond, male = CELEBA_ATTRIBUTES.index("Blond_Hair"), CELEBA_ATTRIBUTES.index("Male")
    assert src.labels.tolist() == [int(attrs[i][blond] == 1) for i in src.ids]
    assert src.sensitive["Male"][0].tolist() == [int(attrs[i][male] == 1) for i in src.ids]
    assert src.label_categories == ("no", "yes")
    assert list(src.sensitive) == ["Male", "Young"]
    assert src.splits[: CELEBA_ROWS - 10].tolist() == ["train"] * (CELEBA_ROWS - 10)
    assert src.splits[-5:].tolist() == ["test"] * 5
    image = src.load_image(0)
    assert image.mode == "RGB" and image.size == (36, 44)
    assert src.describe()["kind"] == "celeba"


def test_celeba_fingerprint_depends_on_the_task(celeba_root):
    a = CelebASource(celeba_root).fingerprint()
    assert a == CelebASource(celeba_root).fingerprint()
    assert a != CelebASource(celeba_root, target="Smiling").fingerprint()


def test_celeba_unknown_attribute_names_the_close_match(celeba_root):
    with pytest.raises(DataError, match=r"no attribute 'Blond_Hiar' \(did you mean 'Blond_Hair'\?\)") as err:
        CelebASource(celeba_root, target="Blond_Hiar")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("missing", ["list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"])
def test_celeba_missing_files(celeba_root, tmp_path, missing):
    root = tmp_path / "celeba"
    shutil.copytree(celeba_root, root)
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataError, match=f"has no {missing}"):
        CelebASource(root)


def test_celeba_malformed_attribute_line(celeba_root, tmp_path):
    root = tmp_path / "celeba"
    shutil.copytree(celeba_root, root)
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 3)[0]  # drop values
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt line 6 is malformed"):
        CelebASource(root)


def test_manifest_over_written_synthetic_matches_the_generator(synthetic_manifest):
    manifest = ManifestSource(
        synthetic_manifest, label_col="shape", sensitive_cols=["background"], split_col="split", id_col="id"
    )
    generated = SyntheticSource(n=48, seed=3, image_size=32)
    assert manifest.ids.tolist() == generated.ids.tolist()
    assert manifest.labels.tolist() == generated.labels.tolist()
    assert manifest.label_categories == generated.label_categories
    assert manifest.sensitive["background"][1] == generated.sensitive["background"][1]
    assert manifest.sensitive["background"][0].tolist() == generated.sensitive["background"][0].tolist()
    assert manifest.splits.tolist() == generated.splits.tolist()
    assert manifest.load_image(3).size == (32, 32)


def test_written_png_keeps_the_pixels(tmp_path):
    manifest = write_synthetic_dataset(tmp_path, n=6, seed=1, image_size=24, image_format="png")
    src = ManifestSource(manifest, label_col="shape", sensitive_cols="background", id_col="id")
    generated = SyntheticSource(n=6, seed=1, image_size=24)
    for i in range(6):
        assert np.array_equal(np.asarray(src.load_image(i)), np.asarray(generated.load_image(i)))


def test_synthetic_is_deterministic_and_skewed():
    a, b = SyntheticSource(400, seed=7), SyntheticSource(400, seed=7)
    assert a.fingerprint() == b.fingerprint()
    assert np.array_equal(np.asarray(a.load_image(11)), np.asarray(b.load_image(11)))
    assert a.fingerprint() != SyntheticSource(400, seed=8).fingerprint()
    assert a.fingerprint() != SyntheticSource(400, seed=7, noise=5.0).fingerprint()
    groups = a.sensitive["background"][0]
    # the rare group is about minority_fraction, and the label's base rate differs by group
    assert 0.12 < groups.mean() < 0.28
    rate = [a.labels[groups == g].mean() for g in (0, 1)]
    assert rate[1] - rate[0] > 0.4
    assert sorted(set(a.splits)) == ["test", "train", "valid"]


@pytest.mark.parametrize(
    "params, match",
    [
        ({"correlation": 1.5}, "correlation=1.5 is out of range"),
        ({"minority_fraction": 0.0}, "minority_fraction=0.0"),
        ({"n": 1}, "n=1"),
        ({"image_size": 8}, "image_size=8"),
    ],
    ids=["correlation", "minority", "n", "image-size"],
)
def test_synthetic_refuses_bad_parameters(params, match):
    with pytest.raises(DataError, match=match):
        SyntheticSource(**params)


def write_manifest(tmp_path, rows, header="path,label,group,split"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for row in rows:
        name = row.split(",")[0]
        if name and not name.startswith(("..", "/")):
            Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / name)
    path = tmp_path / "meta.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


GOOD_ROWS = ["img/a.png,cat,f,train", "img/b.png,dog,m,train", "img/c.png,cat,m,test"]


def test_manifest_encodes_categories(tmp_path):
    path = write_manifest(tmp_path, GOOD_ROWS)
    src = ManifestSource(path, label_col="label", sensitive_cols=["group"], split_col="split")
    assert src.label_categories == ("cat", "dog")
    assert src.labels.tolist() == [0, 1, 0]
    assert src.sensitive["group"] == (src.sensitive["group"][0], ("f", "m"))
    assert src.ids.tolist() == ["img/a.png", "img/b.png", "img/c.png"]
    assert src.load_image(1).mode == "RGB"


@pytest.mark.parametrize(
    "rows, kwargs, match",
    [
        (["../x.png,cat,f,train", *GOOD_ROWS], {}, "points outside the image root"),
        (["/etc/passwd,cat,f,train", *GOOD_ROWS], {}, "points outside the image root"),
        ([*GOOD_ROWS, "img/d.png,2.5,f,train"], {}, "3 distinct values .*looks continuous"),
        (["img/a.png,cat,f,train", "img/b.png,dog,f,train"], {}, "has only 1 value"),
        ([*GOOD_ROWS, "img/a.png,cat,f,test"], {}, "duplicate sample ids"),
        (GOOD_ROWS, {"sensitive_cols": ["gender"]}, "no column 'gender'"),
        (GOOD_ROWS, {"label_col": "lable"}, r"did you mean 'label'"),
        ([*GOOD_ROWS, "img/e.png,,f,train"], {}, "label column 'label' is empty at row 3"),
        ([*GOOD_ROWS, "img/e.png,cat,f"], {}, "has 3 fields but the header has 4"),
    ],
    ids=["dotdot", "absolute", "fractional-label", "one-group", "duplicate-ids", "unknown-col", "typo", "empty", "ragged"],
)
def test_manifest_bad_input(tmp_path, rows, kwargs, match):
    path = write_manifest(tmp_path, rows)
    args = {"label_col": "label", "sensitive_cols": ["group"], "split_col": "split", **kwargs}
    with pytest.raises(DataError, match=match) as err:
        ManifestSource(path, **args)
    assert "\n" not in str(err.value)


def test_manifest_missing_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ManifestSource(tmp_path / "nope.csv", label_col="y", sensitive_cols="g")


def test_manifest_unreadable_image(tmp_path):
    path = write_manifest(tmp_path, GOOD_ROWS)
    (tmp_path / "img/b.png").write_bytes(b"not an image")
    src = ManifestSource(path, label_col="label", sensitive_cols="group")
    with pytest.raises(DataError, match="img/b.png' .* cannot be decoded"):
        src.load_image(1)


def test_hash_splits_are_stable():
    ids = [f"id{i}" for i in range(2000)]
    splits = hash_splits(ids)
    assert hash_splits(ids[::-1])[::-1].tolist() == splits.tolist()
    share = {s: (splits == s).mean() for s in ("train", "valid", "test")}
    assert 0.65 < share["train"] < 0.75 and 0.11 < share["test"] < 0.19


def test_categories_sort_numbers_numerically():
    codes, categories = encode_categorical(["10", "-1", "2", "2.0"], name="x", kind="label")
    assert categories == ("-1", "2", "10") and codes.tolist() == [2, 0, 1, 1]


def test_split_spellings_are_normalised():
    from embedcache.sources.base import normalize_splits

    got = normalize_splits(["0", "1", "2", "val", "Validation", "TRAIN", "test", "holdout", 1.0])
    assert got.tolist() == ["train", "valid", "test", "valid", "valid", "train", "test", "holdout", "valid"]
