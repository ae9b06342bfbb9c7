"""Hardening of the inputs: image modes, odd table cells, import outputs and backbone messages (issue 13).

Every input is written to disk in its real format by the test itself. Each test checks the value a
user gets (distinct images give distinct pixels and feature rows; a bad cell is refused, naming its
row and column), not only that something was raised.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from PIL import Image

import embedcache
from embedcache import BackboneError, CacheError, DataError, import_table
from embedcache.sources.base import open_rgb

#: images per mode: 40 intensities, as in the probe that found 2 distinct rows for 40 X-rays
N_LEVELS = 40
SIZE = (8, 6)


# --------------------------------------------------------------------------- image modes
def _write_mode_image(path, mode: str, level: int):
    """A uniform image of ``mode`` at intensity ``level`` (0 <= level < N_LEVELS), saved in a format that keeps the mode.

    Returns the 8-bit gray value the decoder must produce.
    """
    w, h = SIZE
    if mode in ("I;16", "I;16B"):
        value = 1000 + 1600 * level  # spread over the 16-bit range: 1000 .. 63400
        if mode == "I;16":
            img = Image.fromarray(np.full((h, w), value, dtype=np.uint16))
        else:  # big-endian TIFF; built from bytes because PIL's convert("I;16B") clips too
            img = Image.frombytes("I;16B", SIZE, np.full((h, w), value, dtype=">u2").tobytes())
        img.save(path)
        return round(value * 255 / 65535)
    if mode == "I":
        value = 500 + 1600 * level
        Image.fromarray(np.full((h, w), value, dtype=np.int32)).save(path)
        return round(value * 255 / 65535)
    if mode == "F":
        value = np.float32(level / (N_LEVELS - 1))
        Image.fromarray(np.full((h, w), value, dtype=np.float32)).save(path)
        return int(np.floor(float(value) * 255 + 0.5))
    gray = 10 + 6 * level
    if mode == "L":
        Image.new("L", SIZE, gray).save(path)
    elif mode == "LA":
        Image.new("LA", SIZE, (gray, 255)).save(path)
    elif mode == "RGBA":
        Image.new("RGBA", SIZE, (gray, gray, gray, 255)).save(path)
    elif mode == "P":
        img = Image.new("P", SIZE, 3)
        palette = [0] * 768
        palette[9:12] = [gray, gray, gray]
        img.putpalette(palette)
        img.save(path)
    elif mode == "CMYK":
        Image.new("CMYK", SIZE, (0, 0, 0, 255 - gray)).save(path)
    else:  # pragma: no cover - the parametrisation lists every mode
        raise AssertionError(mode)
    return gray


MODES = [("I;16", "png"), ("I;16B", "tif"), ("I", "tif"), ("F", "tif"), ("L", "png"), ("LA", "png"),
         ("P", "png"), ("CMYK", "tif"), ("RGBA", "png")]


@pytest.mark.parametrize("mode, fmt", MODES, ids=[m for m, _ in MODES])
def test_every_mode_keeps_distinct_intensities_distinct(tmp_path, mode, fmt):
    expected, decoded = [], []
    for level in range(N_LEVELS):
        path = tmp_path / f"{level:02d}.{fmt}"
        expected.append(_write_mode_image(path, mode, level))
        with Image.open(path) as check:
            assert check.mode == mode, f"the test image must really be {mode}, not {check.mode}"
        rgb = open_rgb(path, where="test")
        assert rgb.mode == "RGB" and rgb.size == SIZE
        decoded.append(np.asarray(rgb))
    values = np.array([a[0, 0] for a in decoded])
    assert len({a.tobytes() for a in decoded}) == N_LEVELS, f"{mode}: distinct intensities collapsed"
    assert (values[:, 0] == values[:, 1]).all() and (values[:, 1] == values[:, 2]).all()  # gray stays gray
    np.testing.assert_allclose(values[:, 0], expected, atol=1)  # the intended 8-bit value, not clipped
    assert (np.diff(values[:, 0].astype(int)) > 0).all()


def test_16bit_png_extracts_to_distinct_feature_rows(tmp_path):
    """The probe's case end to end: 40 uniform 16-bit PNG 'X-rays' -> 40 distinct cache rows in intensity order."""
    import torch
    from torch import nn

    rows = []
    for level in range(N_LEVELS):
        name = f"xray{level:02d}.png"
        _write_mode_image(tmp_path / name, "I;16", level)
        rows.append([name, level % 2, "ab"[(level // 2) % 2], "train"])
    with open(tmp_path / "meta.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "y", "site", "split"], *rows])
    source = embedcache.ManifestSource(tmp_path / "meta.csv", label_col="y", sensitive_cols="site", split_col="split")

    def transform(img):  # PIL RGB -> (3, H, W) in [0, 1]
        return torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()) / 255.0

    mean_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone = embedcache.Backbone.from_module(mean_pool, transform, name="mean-pool")
    out = embedcache.extract(source, backbone, tmp_path / "x.h5", batch_size=16, num_workers=0, progress=False)
    with embedcache.open(out) as cache:
        features = cache.load().features
        ids = cache.load().sample_ids
    order = np.argsort(ids)
    mean = features[order, 0]
    assert len(np.unique(features, axis=0)) == N_LEVELS
    np.testing.assert_allclose(mean * 65535, 1000 + 1600 * np.arange(N_LEVELS), atol=65535 / 255)


def test_transparent_pixels_do_not_leak_hidden_colours(tmp_path):
    hidden_red = Image.new("RGBA", SIZE, (255, 0, 0, 0))
    hidden_green = Image.new("RGBA", SIZE, (0, 255, 0, 0))
    half = Image.new("RGBA", SIZE, (200, 100, 50, 128))
    for name, img in (("r.png", hidden_red), ("g.png", hidden_green), ("h.png", half)):
        img.save(tmp_path / name)
    r, g, h = (np.asarray(open_rgb(tmp_path / n, where="t")) for n in ("r.png", "g.png", "h.png"))
    assert (r == g).all() and (r == 0).all()  # both fully transparent: the same (black) image
    np.testing.assert_allclose(h[0, 0], np.array([200, 100, 50]) * 128 / 255, atol=1)
    # a palette image with a transparent index (tRNS) follows the same rule
    p = Image.new("P", SIZE, 1)
    p.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    p.save(tmp_path / "p.png", transparency=1)
    assert (np.asarray(open_rgb(tmp_path / "p.png", where="t")) == 0).all()


@pytest.mark.parametrize(
    "array, match",
    [(np.full((4, 4), 70000, dtype=np.int32), r"integer pixel values in \[70000, 70000\]"),
     (np.full((4, 4), -5, dtype=np.int32), r"integer pixel values in \[-5, -5\]"),
     (np.full((4, 4), 300.0, dtype=np.float32), r"floating-point pixel values in \[300, 300\].*range \[0, 1\]"),
     (np.full((4, 4), np.nan, dtype=np.float32), "floating-point pixel values")],
    ids=["int-above-16bit", "int-negative", "float-above-1", "float-nan"],
)
def test_images_out_of_the_readable_range_are_refused(tmp_path, array, match):
    Image.fromarray(array).save(tmp_path / "x.tif")
    with pytest.raises(DataError, match=match) as err:
        open_rgb(tmp_path / "x.tif", where="manifest 'm.csv'")
    assert "\n" not in str(err.value) and "convert it" in str(err.value)


# --------------------------------------------------------------------------- table import: odd cells and columns
#: a small feature table: id, two features, a binary label, a sensitive column and a split
N_ROWS = 24


def _table_rows():
    return [[f"r{i}", f"{0.5 * i:g}", f"{(i * 7) % 5 - 2:g}", str(i % 2), "ab"[(i // 2) % 2], "train" if i < 16 else "test"]
            for i in range(N_ROWS)]


HEADER = ["id", "f0", "f1", "y", "g", "split"]


def _write_table(path, header=HEADER, rows=None, edit=None):
    rows = [list(r) for r in (_table_rows() if rows is None else rows)]
    if edit is not None:
        edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def _import(path, tmp_path, **kw):
    opts = dict(label="y", sensitive=["g"], split="split", id_col="id", out=tmp_path / "t.h5", progress=False)
    opts.update(kw)
    return import_table(path, **opts)


def _set(row, col, value):
    def edit(rows):
        rows[row][HEADER.index(col)] = value
    return edit


def _one_line_refusal(exc_info, *needles, max_chars=400):
    message = str(exc_info.value)
    assert "\n" not in message and len(message) < max_chars, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_duplicate_header_names_are_refused_by_import_and_manifest(tmp_path):
    table = _write_table(tmp_path / "dup.csv", header=["id", "f0", "f0", "y", "g", "split"])
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, "'f0' twice", "columns 2 and 3", "rename one")
    assert not (tmp_path / "t.h5").exists()
    # the manifest reader used to take the first of two 'g' columns
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "y", "g", "g"], ["a.png", 0, "a", "b"], ["b.png", 1, "b", "a"]])
    with pytest.raises(DataError) as err:
        embedcache.ManifestSource(tmp_path / "m.csv", label_col="y", sensitive_cols="g")
    _one_line_refusal(err, "'g' twice", "columns 3 and 4")


def test_duplicate_parquet_columns_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    arrays = [pa.array(np.arange(N_ROWS, dtype=float)), pa.array(np.ones(N_ROWS)), pa.array(np.arange(N_ROWS) % 2),
              pa.array(["ab"[(i // 2) % 2] for i in range(N_ROWS)])]
    pq.write_table(pa.Table.from_arrays(arrays, names=["f", "f", "y", "g"]), tmp_path / "dup.parquet")
    with pytest.raises(DataError) as err:
        import_table(tmp_path / "dup.parquet", label="y", sensitive="g", out=tmp_path / "t.h5", progress=False)
    _one_line_refusal(err, "'f' twice")


@pytest.mark.parametrize("features", [None, ["f0", "f1"]], ids=["default-features", "named-features"])
def test_one_text_cell_in_a_feature_column_is_refused_naming_row_and_column(tmp_path, features):
    table = _write_table(tmp_path / "t.csv", edit=_set(5, "f1", "abc"))
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, features=features)
    _one_line_refusal(err, "feature column 'f1'", "'abc' at row 5")


@pytest.mark.parametrize(
    "cell, needle",
    [("", "missing a value ('' at row 7)"), ("NA", "missing a value ('NA' at row 7)"),
     ("nan", "non-finite value (nan) at row 7"), ("inf", "non-finite value (inf) at row 7"),
     ("-Infinity", "non-finite value (-inf) at row 7"), ("1,5", "'1,5' at row 7"),
     ("1e999", "non-finite value (inf) at row 7")],
    ids=["empty", "NA", "nan", "inf", "-Infinity", "decimal-comma", "overflowing-text"],
)
def test_odd_feature_cells_are_refused(tmp_path, cell, needle):
    table = _write_table(tmp_path / "t.csv", edit=_set(7, "f0", cell))
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, "feature column 'f0'", needle)


def test_whitespace_bom_booleans_and_trailing_commas_are_read_as_meant(tmp_path):
    rows = [[f" r{i} ", f" {0.5 * i:g} ", "True" if i % 3 else "False", f" {i % 2} ", " " + "ab"[(i // 2) % 2] + " ",
             "", ""] for i in range(N_ROWS)]  # two trailing commas: two unnamed, empty columns
    text = "\ufeff id , f0 ,flag, y , g ,,\n" + "\n".join(",".join(r) for r in rows) + "\n"
    (tmp_path / "t.csv").write_text(text, encoding="utf-8")
    out = import_table(tmp_path / "t.csv", label="y", sensitive="g", id_col="id", out=tmp_path / "t.h5", progress=False)
    with embedcache.open(out) as cache:
        data = cache.load()
        assert cache.feature_columns == ["f0", "flag"]
        assert cache.categories("g") == ["a", "b"]
    order = np.argsort([int(s[1:]) for s in data.sample_ids])
    np.testing.assert_array_equal(data.features[order, 0], 0.5 * np.arange(N_ROWS))
    np.testing.assert_array_equal(data.features[order, 1], [1.0 if i % 3 else 0.0 for i in range(N_ROWS)])
    assert data.sample_ids[order].tolist() == [f"r{i}" for i in range(N_ROWS)]


R3 = "\nr3,1.5,-1,1,b,train\n"


def _unnamed_column_with_data(text):
    lines = text.splitlines()
    lines = [line + "," for line in lines]
    lines[5] += "stray"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "edit_text, needle",
    [(lambda t: t.replace(R3, "\nr3,1.5,-1,b,train\n"), "line 5 has 5 fields but the header has 6"),
     (lambda t: t.replace(R3, '\n"r3",1.5,-1,b,train\n'), "line 5 has 5 fields"),
     (lambda t: t.replace(R3, "\nr3,1.5,-1,1,b,train,x\n"), "line 5 has 7 fields"),
     (lambda t: t.replace(",", ";"), "looks semicolon-separated"),
     (_unnamed_column_with_data, "column 7 has no name but holds values ('stray' at row 4)")],
    ids=["short-row", "short-row-with-quotes", "long-row", "semicolons", "unnamed-column-with-data"],
)
def test_ragged_and_misformatted_csv_is_refused(tmp_path, edit_text, needle):
    table = _write_table(tmp_path / "t.csv")
    text = table.read_text()
    assert R3 in text
    table.write_text(edit_text(text))
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, needle)


def test_a_latin1_table_is_refused_as_not_utf8(tmp_path):
    table = _write_table(tmp_path / "t.csv", edit=_set(2, "g", "é"))
    table.write_bytes(table.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, "not UTF-8", "0xe9", "save it as UTF-8")


@pytest.mark.parametrize("marker", ["NA", "NaN", "", "?", "null"])
def test_missing_sensitive_values_are_refused_by_default(tmp_path, marker):
    table = _write_table(tmp_path / "t.csv", edit=_set(4, "g", marker))
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, "sensitive column 'g'", "at row 4", "`sensitive_missing='group'`")


def test_missing_sensitive_values_map_explicitly_to_a_group_or_dropped_rows(tmp_path):
    def edit(rows):
        rows[4][4], rows[9][4] = "NA", "NaN"
    table = _write_table(tmp_path / "t.csv", edit=edit)
    grouped = _import(table, tmp_path, out=tmp_path / "group.h5", sensitive_missing="group")
    with embedcache.open(grouped) as cache:
        data = cache.load()
        categories = cache.categories("g")
    assert categories == ["(missing)", "a", "b"]
    missing_ids = sorted(data.sample_ids[data.sensitive["g"] == 0].tolist())
    assert missing_ids == ["r4", "r9"]
    dropped = _import(table, tmp_path, out=tmp_path / "drop.h5", sensitive_missing="drop")
    with embedcache.open(dropped) as cache:
        data = cache.load()
        assert cache.categories("g") == ["a", "b"] and cache.n_rows == N_ROWS - 2
    assert sorted(data.sample_ids.tolist()) == sorted(f"r{i}" for i in range(N_ROWS) if i not in (4, 9))


def test_missing_label_split_and_manifest_sensitive_values_are_refused(tmp_path):
    for col, marker, needle in (("y", "NA", "label column 'y'"), ("split", "NA", "split column 'split'"),
                                ("split", "", "split column 'split' is empty at row 4")):
        table = _write_table(tmp_path / "t.csv", edit=_set(4, col, marker))
        with pytest.raises(DataError) as err:
            _import(table, tmp_path)
        _one_line_refusal(err, needle, "row 4")
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "y", "race"], ["a.png", 0, "x"], ["b.png", 1, "NA"], ["c.png", 1, "y"]])
    with pytest.raises(DataError) as err:
        embedcache.ManifestSource(tmp_path / "m.csv", label_col="y", sensitive_cols="race")
    _one_line_refusal(err, "sensitive column 'race'", "'NA' at row 1", "explicit category")


def test_the_label_column_is_never_a_feature(tmp_path):
    table = _write_table(tmp_path / "t.csv")
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, features=["f0", "y"])
    _one_line_refusal(err, "label column 'y' cannot also be a feature")
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, features=["f0", "f0"])
    _one_line_refusal(err, "listed twice")
    out = _import(table, tmp_path)  # default features: never the label, sensitive, split or id
    with embedcache.open(out) as cache:
        assert cache.feature_columns == ["f0", "f1"]


def test_a_vector_column_cannot_be_the_label(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", emb=rng.normal(size=(N_ROWS, 3)), y2d=np.zeros((N_ROWS, 2)),
             y=np.arange(N_ROWS) % 2, g=(np.arange(N_ROWS) // 2) % 2)
    with pytest.raises(DataError) as err:
        import_table(tmp_path / "t.npz", label="y2d", sensitive="g", out=tmp_path / "t.h5", progress=False)
    _one_line_refusal(err, "column 'y2d' holds vectors", "the label must be a plain column")


# --------------------------------------------------------------------------- stored dtype: overflow and underflow
def _scaled_table(path, scale):
    return _write_table(path, edit=lambda rows: [r.__setitem__(1, f"{float(r[1]) * scale:.17g}") for r in rows])


def test_values_beyond_float32_are_refused_instead_of_stored_as_inf(tmp_path):
    table = _scaled_table(tmp_path / "t.csv", 1e38)  # row 23: 11.5e38 > 3.4e38
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, "feature column 'f0'", "beyond the float32 range", "rescale")
    assert not (tmp_path / "t.h5").exists()
    # float16: the advice follows the data
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, feature_dtype="float16")
    _one_line_refusal(err, "float16 range", "rescale")
    assert "float32" not in str(err.value).split(";")[-1]
    fits32 = _scaled_table(tmp_path / "t32.csv", 1e5)
    with pytest.raises(DataError) as err:
        _import(fits32, tmp_path, feature_dtype="float16")
    _one_line_refusal(err, "float16 range", "`feature_dtype='float32'`")
    out = _import(fits32, tmp_path, out=tmp_path / "ok32.h5")  # and that advice works
    with embedcache.open(out) as cache:
        assert np.isfinite(cache.load().features).all()


def test_a_column_below_float16_precision_is_refused(tmp_path):
    table = _scaled_table(tmp_path / "t.csv", 1e-9)
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, feature_dtype="float16")
    _one_line_refusal(err, "feature column 'f0'", "below the float16 precision", "`feature_dtype='float32'`")


# --------------------------------------------------------------------------- messages stay short
def test_a_long_vector_in_a_cell_is_not_copied_into_the_message(tmp_path):
    vector = "[" + ", ".join(f"{v:.6f}" for v in np.linspace(0, 1, 1500)) + "]"  # ~13.5 KB, as the probe's
    table = _write_table(tmp_path / "t.csv", edit=lambda rows: [r.__setitem__(2, vector) for r in rows])
    with pytest.raises(DataError) as err:
        _import(table, tmp_path, features=["f0", "f1"])
    _one_line_refusal(err, "looks like a vector", "Parquet list<float>")
    assert len(str(err.value)) < 300
    wide = _write_table(tmp_path / "wide.csv", header=[*HEADER, *[f"x{j}" for j in range(500)]],
                        edit=lambda rows: [r.extend(["0"] * 500) for r in rows])
    with pytest.raises(DataError) as err:
        _import(wide, tmp_path, label="income")
    _one_line_refusal(err, "no column 'income'", "(506 in all)")


def test_a_continuous_sensitive_column_warns_to_bin_it(tmp_path):
    table = _write_table(tmp_path / "t.csv", edit=lambda rows: [r.__setitem__(4, str(18 + i)) for i, r in enumerate(rows)])
    with pytest.warns(UserWarning, match=r"sensitive column 'g' has 24 distinct numeric values \(18 to 41\).*bin it"):
        _import(table, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _import(_write_table(tmp_path / "ok.csv"), tmp_path, out=tmp_path / "ok.h5")  # two groups: no warning


# --------------------------------------------------------------------------- outputs
def test_import_never_overwrites_its_input_or_a_non_cache_and_names_a_folder_out(tmp_path, capsys):
    from fairhead.cli import main

    table = _write_table(tmp_path / "t.csv")
    before = table.read_bytes()
    with pytest.raises(CacheError) as err:
        _import(table, tmp_path, out=table, overwrite=True)
    _one_line_refusal(err, "is the input table itself", "t.h5")
    assert table.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("not a cache\n")
    with pytest.raises(CacheError) as err:
        _import(table, tmp_path, out=notes, overwrite=True)
    _one_line_refusal(err, "is not an HDF5 cache")
    assert notes.read_text() == "not a cache\n"
    folder = tmp_path / "outdir"
    folder.mkdir()
    common = ["import", table, "--label", "y", "--sensitive", "g", "--split", "split", "--id-col", "id"]
    for out in (table, folder):
        code = main([*map(str, common), "--out", str(out), "--overwrite", "--no-progress"])
        stderr = capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert code == 3 and len(lines) == 1 and lines[0].startswith("fairhead: error: --out"), stderr
    assert table.read_bytes() == before and folder.is_dir() and not any(folder.iterdir())


# --------------------------------------------------------------------------- backbone messages
def test_weights_paths_that_are_not_files_are_named_for_what_they_are(tmp_path):
    from embedcache.backbones import load_state_dict_file

    with pytest.raises(BackboneError) as err:
        load_state_dict_file(tmp_path)
    _one_line_refusal(err, "is a folder, not a file")
    with pytest.raises(BackboneError) as err:
        load_state_dict_file("/dev/null")
    _one_line_refusal(err, "is not a regular file")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BackboneError) as err:
        load_state_dict_file(tmp_path / "empty.pt")
    _one_line_refusal(err, "is empty (0 bytes)")
    with pytest.raises(BackboneError) as err:
        load_state_dict_file(tmp_path / "nope.pt")
    _one_line_refusal(err, "does not exist")


def test_default_is_listed_once_among_the_weights_choices():
    with pytest.raises(BackboneError) as err:
        embedcache.build_backbone("resnet18", weights="IMAGENET_V9")
    choices = str(err.value).split("choose from: ")[1].split(", ")
    assert choices.count("DEFAULT") == 1 and "IMAGENET1K_V1" in choices and len(choices) == len(set(choices))


# --------------------------------------------------------------------------- neighbours: files that are odd as a whole
def test_manifests_that_are_not_utf8_csv_or_have_an_empty_path_get_one_line(tmp_path):
    rows = [["path", "y", "g"], ["a.png", 0, "x"], ["", 1, "y"], ["c.png", 1, "y"]]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError) as err:
        embedcache.ManifestSource(tmp_path / "m.csv", label_col="y", sensitive_cols="g")
    _one_line_refusal(err, "row 3 has an empty image path in column 'path'")
    (tmp_path / "latin.csv").write_bytes("path,y,g\na.png,0,\xe9\nb.png,1,x\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        embedcache.ManifestSource(tmp_path / "latin.csv", label_col="y", sensitive_cols="g")
    _one_line_refusal(err, "not UTF-8", "save it as UTF-8")
    (tmp_path / "quote.csv").write_text('path,y,g\na.png,0,x\nb.png,1,"y\n')  # a quote left open at the end
    with pytest.raises(DataError) as err:
        embedcache.ManifestSource(tmp_path / "quote.csv", label_col="y", sensitive_cols="g")
    _one_line_refusal(err, "cannot be parsed as CSV")


def test_a_table_with_a_header_only_says_it_has_no_rows(tmp_path):
    (tmp_path / "t.csv").write_text(",".join(HEADER) + "\n")
    with pytest.raises(DataError) as err:
        _import(tmp_path / "t.csv", tmp_path)
    _one_line_refusal(err, "has a header but no rows")


def test_an_unusable_out_path_is_one_line_and_a_non_cache_is_never_replaced(tmp_path):
    table = _write_table(tmp_path / "t.csv")
    with pytest.raises(CacheError) as err:
        _import(table, tmp_path, out=tmp_path / ("x" * 300 + ".h5"))
    _one_line_refusal(err, "cannot write the cache", "File name too long", "choose a writable `out`", max_chars=500)
    assert str(err.value).count("x" * 300) == 1  # the long name is shown once, not again inside the OS error
    with pytest.raises(CacheError) as err:
        _import(table, tmp_path, out=table / "x.h5")  # a parent that is a file
    _one_line_refusal(err, "cannot write the cache")
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes\n")
    for overwrite in (False, True):  # the advice never says to overwrite, which would not help
        with pytest.raises(CacheError) as err:
            _import(table, tmp_path, out=notes, overwrite=overwrite)
        _one_line_refusal(err, "is not an HDF5 cache", "another `out`")
        assert "pass `overwrite=True`" not in str(err.value)
    assert notes.read_text() == "my notes\n"
    (tmp_path / "crashed.h5").write_bytes(b"")  # an empty file left by a crash may be replaced
    out = _import(table, tmp_path, out=tmp_path / "crashed.h5", overwrite=True)
    with embedcache.open(out) as cache:
        assert cache.n_rows == N_ROWS


def test_an_image_over_the_pixel_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    Image.new("L", (64, 64), 100).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels is over twice the limit
    with pytest.raises(DataError) as err:
        open_rgb(tmp_path / "big.png", where="manifest 'm.csv'")
    _one_line_refusal(err, "too large to decode safely", "downscale it")


def test_celeba_messages_name_no_flag_in_python_and_real_flags_in_the_cli(tmp_path):
    from fairhead.cli import as_flags, build_parser

    with pytest.raises(DataError) as err:
        embedcache.CelebASource(tmp_path)
    assert "--" not in str(err.value) and "list_attr_celeba.txt" in str(err.value)  # the API names no flag
    flags = {word.rstrip(",;") for word in as_flags(str(err.value)).split() if word.startswith("--")}
    known = {opt for action in build_parser()._subparsers._group_actions[0].choices["extract"]._actions
             for opt in action.option_strings}
    assert flags <= known, flags - known


def test_a_stray_text_cell_deep_in_a_large_table_is_refused_not_warned_about(tmp_path):
    """pandas warns (DtypeWarning) when a column parses differently in two of its internal blocks (about a
    million cells); the import reads each chunk whole, so that column is refused, naming the cell."""
    rng = np.random.default_rng(0)
    n, d = 20_000, 52
    values = np.char.mod("%.2f", rng.normal(size=(n, d)))
    values[19_500, 2] = "oops"
    ids = np.char.add("r", np.arange(n).astype(str))
    labels, groups = (np.arange(n) % 2).astype(str), np.where(np.arange(n) % 3 == 0, "a", "b")
    lines = [",".join(["id", *[f"x{j}" for j in range(d)], "y", "g"])]
    lines += [",".join(row) for row in np.column_stack([ids, values, labels, groups]).tolist()]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:  # pytest turns a DtypeWarning into an error, so this also checks none came
        import_table(tmp_path / "t.csv", label="y", sensitive="g", id_col="id", out=tmp_path / "t.h5", progress=False)
    _one_line_refusal(err, "feature column 'x2'", "'oops' at row 19500")


@pytest.mark.parametrize("col, spellings, needle", [("g", ("Male", "male"), "two groups"),
                                                     ("y", ("yes", "Yes"), "two classes")], ids=["sensitive", "label"])
def test_one_value_spelled_two_ways_is_not_two_groups(tmp_path, col, spellings, needle):
    def edit(rows):
        for i, row in enumerate(rows):
            row[HEADER.index(col)] = spellings[i % 2] if i < 4 else row[HEADER.index(col)]
    table = _write_table(tmp_path / "t.csv", edit=edit)
    with pytest.raises(DataError) as err:
        _import(table, tmp_path)
    _one_line_refusal(err, f"column '{col}' spells one value two ways", repr(spellings[0]), repr(spellings[1]), needle)
