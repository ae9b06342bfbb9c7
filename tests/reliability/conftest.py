"""Session fixtures for the reliability suite: every bad input in a real on-disk format, built once.

The good inputs come from the same writers as the other suites (``write_synthetic_dataset``,
``write_celeba_tree``, ``embedcache.import_table``); each bad input is a small edit of a good one.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from support.backbones import write_bad_weights
from support.celeba import write_celeba_tree
from support.files import write_csv, write_feature_table

N_IMAGES = 24


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """Every good and bad input file the table uses, under one folder (``paths['root']``)."""
    import embedcache
    from embedcache.sources.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("reliability-inputs")
    p: dict[str, Path] = {"root": root}

    # --- data sources: a PNG manifest tree and CSV variants beside it (root = the CSV's folder)
    manifest = write_synthetic_dataset(root / "images", n=N_IMAGES, seed=1, image_size=32, image_format="png")
    p["manifest"] = manifest
    with open(manifest, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    col = {name: k for k, name in enumerate(header)}
    folder = manifest.parent
    first_png = folder / rows[0][col["path"]]
    (folder / "truncated.png").write_bytes(first_png.read_bytes()[:60])
    (folder / "not-an-image.png").write_text("this is a text file, not a PNG\n")

    def variant(name, edit):
        new = [list(r) for r in rows]
        hdr = list(header)
        hdr, new = edit(hdr, new)
        p[name] = write_csv(folder / f"{name}.csv", hdr, new)

    def set_col(name, values):
        def edit(hdr, new):
            for r, v in zip(new, values):
                if v is not None:
                    r[col[name]] = v
            return hdr, new
        return edit

    variant("missing-image", set_col("path", ["gone/nowhere.png"]))
    variant("truncated-image", set_col("path", ["truncated.png"]))
    variant("non-image", set_col("path", ["not-an-image.png"]))
    variant("empty", lambda h, n: (h, []))
    variant("one-label", set_col("shape", ["circle"] * N_IMAGES))
    variant("one-group", set_col("background", ["blue"] * N_IMAGES))
    variant("fractional-label", set_col("shape", ["2.5"]))
    variant("escaping-path", set_col("path", ["../../../etc/passwd"]))
    variant("absolute-path", set_col("path", ["/etc/passwd"]))
    variant("duplicate-ids", set_col("id", [rows[1][col["id"]]]))
    variant("empty-label", set_col("shape", [""]))

    p["celeba"] = write_celeba_tree(root / "celeba")

    # --- backbones: checkpoints that must be refused
    for kind in ("other-arch", "corrupt", "not-state-dict", "unsafe-pickle", "truncated"):
        write_bad_weights(kind, root / f"weights-{kind}.pt")
        p[f"weights-{kind}"] = root / f"weights-{kind}.pt"

    # --- caches: a real imported one and its damaged copies
    caches = root / "caches"
    caches.mkdir()
    table = write_feature_table(caches / "table.csv")
    p["table"] = table
    good = embedcache.import_table(table, label="label", sensitive=["group"], split="split", id_col="id",
                                   out=caches / "good.h5")
    p["cache"] = good
    (caches / "not-hdf5.h5").write_text("plain text pretending to be a cache\n")
    p["not-hdf5"] = caches / "not-hdf5.h5"
    data = good.read_bytes()
    (caches / "truncated.h5").write_bytes(data[: len(data) // 2])
    p["truncated-cache"] = caches / "truncated.h5"
    for name, attrs in (("incomplete", {"complete": False}), ("newer", {"format-version": "2.0"})):
        shutil.copyfile(good, caches / f"{name}.h5")
        with h5py.File(caches / f"{name}.h5", "r+") as f:
            f.attrs.update(attrs)
        p[f"{name}-cache"] = caches / f"{name}.h5"
    with h5py.File(caches / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    p["foreign-hdf5"] = caches / "other.h5"
    # one split only: the fit split exists but 'test' does not
    write_csv(caches / "train-only.csv", ["id", "f0", "f1", "label", "group"],
              [[f"t{i}", i % 7, i % 3, i % 2, "ab"[(i // 2) % 2]] for i in range(40)])
    with open(caches / "train-only.csv") as fh:
        text = fh.read().splitlines()
    (caches / "train-only.csv").write_text("\n".join([text[0] + ",split"] + [t + ",train" for t in text[1:]]) + "\n")
    p["train-only"] = embedcache.import_table(caches / "train-only.csv", label="label", sensitive=["group"],
                                              split="split", id_col="id", out=caches / "train-only.h5")
    # the fit split holds one group only (group 'b' appears in test rows only)
    rows_one = [[f"o{i}", (i * 7) % 11, (i * 3) % 5, i % 2, "a" if i < 40 else "b", "train" if i < 40 else "test"]
                for i in range(60)]
    write_csv(caches / "one-group-train.csv", ["id", "f0", "f1", "label", "group", "split"], rows_one)
    p["one-group-train"] = embedcache.import_table(caches / "one-group-train.csv", label="label",
                                                   sensitive=["group"], split="split", id_col="id",
                                                   out=caches / "one-group-train.h5")

    # a journal of an unfinished extraction of another dataset at the same --out
    journal_out = root / "journal" / "resume.h5"
    journal_out.parent.mkdir()
    _unfinished_extraction(journal_out)
    p["journal-out"] = journal_out
    return p


def _unfinished_extraction(out: Path) -> None:
    """Leave a real journal behind: an extraction of 24 generated images that fails at image 16."""
    import embedcache
    from embedcache import DataError

    class Failing(embedcache.SyntheticSource):
        def load_image(self, i):
            if i == 16:
                raise DataError("image 16 cannot be decoded (test)")
            return super().load_image(i)

    source = Failing(N_IMAGES, seed=4, image_size=32)
    with pytest.raises(DataError):
        embedcache.extract(source, embedcache.build_backbone("resnet18", image_size=32), out, batch_size=8,
                           num_workers=0, progress=False)
