"""The images behind a cache: its recorded source rebuilt, checked, and preprocessed for training.

A cache records the source it was extracted from (``source``: the source's ``describe()``) and a
fingerprint of its table (ids, labels, sensitive attributes, splits). :func:`source_of_cache`
rebuilds that source (the generated dataset from its parameters, a CSV manifest or a CelebA folder
from their recorded paths, or from new paths when the data moved) and refuses it unless its
fingerprint equals the cache's: a network trained on these images sees the same rows, labels,
groups and splits as the heads fitted on the cache's features. (The fingerprint covers the table,
not the pixels: an image file edited in place after the extraction goes unnoticed.)

:func:`training_transform` gives the backbone's own preprocessing (its normalisation and its
resize-to-crop ratio) at another input size, e.g. 64 px for CPU training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairhead_errors import DataError

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

MSG_IMPORTED = ("cache '{path}' was imported from a features table, so it has no images to train a network on; "
                "build the cache from images with `fairhead extract`")
MSG_UNKNOWN_KIND = ("cache '{path}' records a source of kind {kind!r}, which fairhead cannot rebuild; "
                    "build the cache with `fairhead extract --synthetic`, `--manifest` or `--celeba`")
MSG_GENERATOR = ("cache '{path}' was built from generated images of version {found!r} but this fairhead draws {have!r}; "
                 "rebuild the cache with `fairhead extract --synthetic`")
MSG_UNREADABLE = ("cache '{path}' was built from {what}, which cannot be read now ({error}); "
                  "if the data moved, pass its new location with {flag}")
MSG_CHANGED = ("the {what} behind cache '{path}' no longer matches it (dataset fingerprint {got}... vs {expected}... "
               "recorded): its ids, labels, groups or splits changed; pass the data the cache was built from, "
               "or rebuild the cache with `fairhead extract`")
MSG_OVERRIDE_KIND = "{flag} applies to caches built from {kind} data; cache '{path}' was built from {found} data; drop {flag}"
MSG_MISSING_ROWS = ("{n} sample id(s) of cache '{path}' are not in its rebuilt source (first: {first!r}); "
                    "rebuild the cache with `fairhead extract`")
MSG_NO_PREPROCESSING = ("the backbone's preprocessing ({what}) does not say its normalisation and crop; "
                        "full-network training needs a torchvision or fairhead backbone")


def source_of_cache(cache, *, manifest: Path | None = None, root: Path | None = None, celeba: Path | None = None):
    """The :mod:`embedcache` source ``cache`` was extracted from, checked by its fingerprint.

    ``manifest`` (with ``root``) or ``celeba`` replace the recorded location of data that moved;
    everything else (columns, target, attributes, the generator's parameters) comes from the cache.
    """
    from embedcache import sources
    from embedcache.store import schema

    desc = cache.provenance.get(schema.SOURCE_ATTR) or {}
    kind = desc.get("kind")
    path = cache.path
    if kind == "table":
        raise DataError(MSG_IMPORTED.format(path=path))
    if (manifest is not None or root is not None) and kind != "manifest":
        flag = "--manifest" if manifest is not None else "--root"
        raise DataError(MSG_OVERRIDE_KIND.format(flag=flag, kind="manifest", path=path, found=kind))
    if celeba is not None and kind != "celeba":
        raise DataError(MSG_OVERRIDE_KIND.format(flag="--celeba", kind="CelebA", path=path, found=kind))
    if kind == "synthetic":
        from embedcache.sources.synthetic import GENERATOR_VERSION

        if desc.get("generator") != GENERATOR_VERSION:
            raise DataError(MSG_GENERATOR.format(path=path, found=desc.get("generator"), have=GENERATOR_VERSION))
        params = {k: desc[k] for k in ("n", "seed", "correlation", "minority_fraction", "image_size",
                                        "faint_fraction", "noise") if k in desc}
        if "split_fractions" in desc:
            params["split_fractions"] = tuple(desc["split_fractions"])
        source, what = sources.SyntheticSource(**params), "generated images"
    elif kind == "manifest":
        columns = desc.get("columns") or {}
        csv_path = Path(manifest) if manifest is not None else Path(desc["csv"])
        image_root = Path(root) if root is not None else (None if manifest is not None else Path(desc["root"]))
        what = f"manifest '{csv_path}'"
        try:
            source = sources.ManifestSource(csv_path, root=image_root, image_col=columns.get("image", "path"),
                                            label_col=columns["label"], sensitive_cols=tuple(columns["sensitive"]),
                                            split_col=columns.get("split"), id_col=columns.get("id"))
        except DataError as err:
            raise DataError(MSG_UNREADABLE.format(path=path, what=what, error=err,
                                                  flag="--manifest CSV [--root DIR]")) from err
    elif kind == "celeba":
        folder = Path(celeba) if celeba is not None else Path(desc["root"])
        what = f"CelebA folder '{folder}'"
        try:
            source = sources.CelebASource(folder, target=desc["target"], sensitive=tuple(desc["sensitive"]))
        except DataError as err:
            raise DataError(MSG_UNREADABLE.format(path=path, what=what, error=err, flag="--celeba ROOT")) from err
    else:
        raise DataError(MSG_UNKNOWN_KIND.format(path=path, kind=kind))
    got = source.fingerprint()
    if got != cache.fingerprint:
        raise DataError(MSG_CHANGED.format(what=what, path=path, got=got[:12], expected=cache.fingerprint[:12]))
    return source


def source_rows(source, sample_ids, *, path) -> np.ndarray:
    """The source's row index of each sample id (in the given order)."""
    index = {str(i): k for k, i in enumerate(source.ids)}
    rows = [index.get(str(i), -1) for i in sample_ids]
    missing = [str(i) for i, r in zip(sample_ids, rows) if r < 0]
    if missing:
        raise DataError(MSG_MISSING_ROWS.format(n=len(missing), path=path, first=missing[0]))
    return np.asarray(rows, dtype=np.int64)


def training_transform(transform, image_size: int):
    """``transform`` (a torchvision weights transform or :class:`embedcache.backbones.ImagePreprocess`) at
    ``image_size`` px: the same mean, std and interpolation, the same resize-to-crop ratio (256/224 for the
    ImageNet recipes), deterministic (no augmentation)."""
    from embedcache.backbones import ImagePreprocess, describe_transform

    try:
        crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
        mean, std = list(transform.mean), list(transform.std)
        interpolation = getattr(transform.interpolation, "value", transform.interpolation)
    except (AttributeError, TypeError, IndexError) as err:
        raise DataError(MSG_NO_PREPROCESSING.format(what=describe_transform(transform)[:80])) from err
    size = int(image_size)
    return ImagePreprocess(crop_size=size, resize_size=max(size, round(size * resize / crop)), mean=mean, std=std,
                           interpolation=str(interpolation))
