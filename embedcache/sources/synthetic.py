"""The embedded default dataset: shapes on coloured backgrounds, generated from a seed.

The label is visible content (a circle or a square); the sensitive attribute
is a visible nuisance (a blue or an orange background). ``correlation`` ties
the two together and ``minority_fraction`` makes one background rare, much as
blond hair and gender are tied in CelebA. Some shapes are faint, so a network
is tempted to read the background instead: an unconstrained linear head then
shows a clear demographic-parity and equalized-odds gap.

Every image is drawn with numpy from ``(seed, row)`` alone, so any row can be
rendered on its own, in any worker, and always comes out the same.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from embedcache.errors import DataError
from embedcache.sources.base import TableSource

#: bump when the drawing code changes, so old caches no longer match
GENERATOR_VERSION = "shapes-v1"
LABEL_NAME = "shape"
LABEL_CATEGORIES = ("circle", "square")
SENSITIVE_NAME = "background"
SENSITIVE_CATEGORIES = ("blue", "orange")
#: mean background colour per group (RGB); jittered per image
BACKGROUND_RGB = ((55.0, 95.0, 200.0), (225.0, 140.0, 45.0))
SPLIT_NAMES = ("train", "valid", "test")
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}

MSG_BAD_PARAM = "synthetic parameter {name}={value!r} is out of range; it must be {rule}"


class SyntheticSource(TableSource):
    """Generated images whose label and sensitive attribute are both visible.

    Parameters
    ----------
    n : int, default 3000
        Number of images.
    seed : int, default 0
        Decides every label, group and pixel.
    correlation : float, default 0.8
        Probability that the label code equals the group code
        (square on orange, circle on blue). 0.5 makes them independent,
        1.0 makes the background give the label away.
    minority_fraction : float, default 0.2
        Fraction of rows with the rare (orange) background.
    image_size : int, default 64
        Side of the square images in pixels.
    faint_fraction : float, default 0.35
        Fraction of images whose shape is drawn with low contrast, so that the
        background is the easier cue for them.
    noise : float, default 18.0
        Standard deviation of the per-pixel noise (0-255 scale).
    split_fractions : tuple of float, default (0.6, 0.2, 0.2)
        Train/valid/test fractions; the splits are contiguous blocks of rows.

    Examples
    --------
    >>> from embedcache import SyntheticSource
    >>> src = SyntheticSource(12, seed=0, image_size=16)
    >>> src
    SyntheticSource(12 rows, label 'shape', sensitive ['background'])
    >>> src.label_categories, src.sensitive["background"][1], list(src.splits).count("train")
    (('circle', 'square'), ('blue', 'orange'), 7)
    >>> src.load_image(3).size
    (16, 16)
    """

    def __init__(
        self,
        n: int = 3000,
        *,
        seed: int = 0,
        correlation: float = 0.8,
        minority_fraction: float = 0.2,
        image_size: int = 64,
        faint_fraction: float = 0.35,
        noise: float = 18.0,
        split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    ) -> None:
        _check("n", n, int(n) == n and n >= 3, "an integer >= 3")
        _check("seed", seed, int(seed) == seed and seed >= 0, "a non-negative integer")
        _check("correlation", correlation, 0.0 <= correlation <= 1.0, "in [0, 1]")
        _check("minority_fraction", minority_fraction, 0.0 < minority_fraction < 1.0, "in (0, 1)")
        _check("image_size", image_size, int(image_size) == image_size and image_size >= 16, "an integer >= 16")
        _check("faint_fraction", faint_fraction, 0.0 <= faint_fraction <= 1.0, "in [0, 1]")
        _check("noise", noise, noise >= 0.0, ">= 0")
        _check(
            "split_fractions",
            split_fractions,
            len(split_fractions) == 3 and min(split_fractions) > 0 and abs(sum(split_fractions) - 1) < 1e-9,
            "three positive fractions that sum to 1",
        )
        self.params = {
            "n": int(n),
            "seed": int(seed),
            "correlation": float(correlation),
            "minority_fraction": float(minority_fraction),
            "image_size": int(image_size),
            "faint_fraction": float(faint_fraction),
            "noise": float(noise),
            "split_fractions": [float(f) for f in split_fractions],
        }
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
        groups = (rng.random(n) < minority_fraction).astype(np.int64)
        agrees = rng.random(n) < correlation
        labels = np.where(agrees, groups, 1 - groups).astype(np.int64)
        bounds = np.round(np.cumsum(split_fractions) * n).astype(int)
        splits = np.empty(n, dtype=object)
        splits[: bounds[0]] = SPLIT_NAMES[0]
        splits[bounds[0] : bounds[1]] = SPLIT_NAMES[1]
        splits[bounds[1] :] = SPLIT_NAMES[2]
        super().__init__(
            ids=[f"syn{seed}-{i:06d}" for i in range(n)],
            labels=labels,
            label_name=LABEL_NAME,
            label_categories=LABEL_CATEGORIES,
            sensitive={SENSITIVE_NAME: (groups, SENSITIVE_CATEGORIES)},
            splits=splits,
            where=f"synthetic dataset (seed {seed})",
        )

    def _fingerprint_extra(self) -> dict[str, Any]:
        # ids and labels alone do not pin the pixels (e.g. image_size or noise)
        return {"generator": GENERATOR_VERSION, **self.params}

    def load_image(self, i: int, *, draft_size: int | None = None) -> Image.Image:
        """Render row ``i`` (independent of every other row).

        Parameters
        ----------
        i : int
            The row, ``0 <= i < len(self)``.
        draft_size : int, optional
            Accepted for the extractor's interface; the image is rendered at ``image_size``.

        Returns
        -------
        PIL.Image.Image
            An RGB image.
        """
        p = self.params
        pixels = render_shape(
            label=int(self.labels[i]),
            group=int(self.sensitive[SENSITIVE_NAME][0][i]),
            rng=np.random.default_rng(np.random.SeedSequence([p["seed"], 1, int(i)])),
            size=p["image_size"],
            faint_fraction=p["faint_fraction"],
            noise=p["noise"],
        )
        return Image.fromarray(pixels, mode="RGB")

    def describe(self) -> dict[str, Any]:
        """Describe the source for the cache's provenance.

        Returns
        -------
        dict
            JSON-able: the kind of source and what decides its rows (the generator version and every parameter).
        """
        return {"kind": "synthetic", "generator": GENERATOR_VERSION, **self.params}


def _check(name: str, value: Any, ok: bool, rule: str) -> None:
    if not ok:
        raise DataError(MSG_BAD_PARAM.format(name=name, value=value, rule=rule))


def render_shape(*, label: int, group: int, rng: np.random.Generator, size: int, faint_fraction: float, noise: float) -> np.ndarray:
    """Draw one (size, size, 3) uint8 image: a circle (0) or rotated square (1) on a group-coloured ground.

    The shape's grey level, size, place and rotation are random and independent
    of the group; only the background colour depends on it.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    background = np.asarray(BACKGROUND_RGB[group]) + rng.normal(0.0, 12.0, 3)
    # a soft diagonal gradient so the ground is not one flat colour
    gradient = (xx + yy) / (2.0 * size) - 0.5
    image = background[None, None, :] + 30.0 * gradient[..., None] * rng.choice((-1.0, 1.0))

    radius = rng.uniform(0.16, 0.3) * size
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    if label == 0:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    else:
        half = radius * np.sqrt(np.pi) / 2.0  # same area as the circle
        angle = rng.uniform(0.0, np.pi / 2)
        u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
        v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
        mask = np.maximum(np.abs(u), np.abs(v)) <= half
    faint = rng.random() < faint_fraction
    contrast = rng.uniform(0.08, 0.2) if faint else rng.uniform(0.6, 1.0)
    grey = rng.uniform(200.0, 255.0) if rng.random() < 0.5 else rng.uniform(0.0, 55.0)
    image = np.where(mask[..., None], (1 - contrast) * image + contrast * grey, image)
    image = image + rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_synthetic_dataset(out_dir, *, image_format: str = "png", jpeg_quality: int = 95, **synthetic_params) -> Path:
    """Write the synthetic dataset as real image files plus a CSV manifest.

    Parameters
    ----------
    out_dir : path
        Folder to write into (created). Images go to ``images/``.
    image_format : {"png", "jpeg"}
        PNG keeps pixels exact; JPEG is closer to real photo datasets.
    jpeg_quality : int, default 95
        JPEG quality (``image_format="jpeg"`` only).
    **synthetic_params
        Passed to :class:`SyntheticSource`.

    Returns
    -------
    pathlib.Path
        The manifest, with columns ``path, id, shape, background, split``;
        read it with ``ManifestSource(path, label_col="shape",
        sensitive_cols=["background"], split_col="split", id_col="id")``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from embedcache import write_synthetic_dataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = write_synthetic_dataset(pathlib.Path(tmp.name) / "shapes", n=12, seed=0, image_size=16)
    >>> csv.name, len(list((csv.parent / "images").iterdir()))
    ('manifest.csv', 12)
    >>> tmp.cleanup()
    """
    from embedcache.store.writer import atomic_write_text, commit_file

    fmt = IMAGE_FORMATS.get(str(image_format).lower())
    if fmt is None:
        raise DataError(MSG_BAD_PARAM.format(name="image_format", value=image_format, rule="'png' or 'jpeg'"))
    source = SyntheticSource(**synthetic_params)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    suffix = ".png" if fmt == "PNG" else ".jpg"
    groups, _ = source.sensitive[SENSITIVE_NAME]
    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_name(manifest.name + ".tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "id", LABEL_NAME, SENSITIVE_NAME, "split"])
            for i, sample_id in enumerate(source.ids):
                rel = f"images/{sample_id}{suffix}"
                options = {"quality": int(jpeg_quality)} if fmt == "JPEG" else {}
                source.load_image(i).save(out_dir / rel, format=fmt, **options)
                writer.writerow(
                    [rel, sample_id, LABEL_CATEGORIES[source.labels[i]], SENSITIVE_CATEGORIES[groups[i]],
                     source.splits[i]]
                )
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:  # a full disk or a Ctrl-C: the old manifest stays, no temporary file is left
        tmp.unlink(missing_ok=True)
        raise
    commit_file(tmp, manifest)  # the manifest appears only once every image is on disk
    description = {**source.describe(), "image_format": fmt.lower(), "manifest": manifest.name}
    atomic_write_text(out_dir / "dataset.json", json.dumps(description, indent=2, sort_keys=True) + "\n")
    return manifest
