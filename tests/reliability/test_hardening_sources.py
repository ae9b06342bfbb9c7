"""Hardening of the inputs: image modes, odd table cells, import outputs and backbone messages (issue 13).

Every input is written to disk in its real format by the test itself. Each test checks the value a
user gets (distinct images give distinct pixels and feature rows; a bad cell is refused, naming its
row and column), not only that something was raised.
"""

from __future__ import annotations

import csv
import subprocess
import sys
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
