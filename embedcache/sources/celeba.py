"""CelebA in its standard folder layout, read directly.

Expected files under ``root``::

    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names;
                              then "000001.jpg  -1  1 ..." (+1 / -1 per attribute)
    list_eval_partition.txt   "000001.jpg 0" with 0/1/2 = train/valid/test

torchvision.datasets.CelebA is not used on purpose: its integrity check needs
the original archives, which most copies of CelebA no longer have.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from embedcache.errors import DataError
from embedcache.sources.base import TableSource, open_rgb

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
PARTITION_NAMES = {"0": "train", "1": "valid", "2": "test"}
#: names of codes 0 and 1 of every attribute (-1 and +1 in the file)
ATTRIBUTE_CATEGORIES = ("no", "yes")

MSG_MISSING_FILE = "CelebA root '{root}' has no {name}; point it at the folder that holds {expected}"
MSG_UNKNOWN_ATTR = "CelebA has no attribute {name!r}{hint}; choose from: {available}"
MSG_BAD_LINE = "{file} line {line} is malformed ({problem}); restore the original CelebA file"
MSG_COUNT = "{file} says {declared} images but lists {found}; restore the original CelebA file"
MSG_PARTITION_GAP = "image {image!r} is in {attr} but not in {part}; restore the original CelebA files"


class CelebASource(TableSource):
    r"""CelebA with one target attribute and one or more sensitive attributes.

    Parameters
    ----------
    root : path
        Folder holding ``img_align_celeba/``, ``list_attr_celeba.txt`` and
        ``list_eval_partition.txt``.
    target : str, default "Blond_Hair"
        Attribute used as the binary label (code 1 = attribute present).
    sensitive : sequence of str, default ("Male",)
        Attributes used as sensitive groups.

    Examples
    --------
    A miniature CelebA in the official layout (the real one has 40 attributes and 202,599
    images; only the named attributes are used):

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from embedcache import CelebASource
    >>> tmp = tempfile.TemporaryDirectory(); root = pathlib.Path(tmp.name)
    >>> (root / "img_align_celeba").mkdir()
    >>> names = [f"{i:06d}.jpg" for i in range(1, 7)]
    >>> for name in names:
    ...     Image.new("RGB", (8, 8)).save(root / "img_align_celeba" / name)
    >>> values = ["1 1", "1 -1", "-1 1", "-1 -1", "1 1", "-1 -1"]  # Blond_Hair, Male
    >>> _ = (root / "list_attr_celeba.txt").write_text(
    ...     "6\nBlond_Hair Male\n" + "".join(f"{n} {v}\n" for n, v in zip(names, values)))
    >>> _ = (root / "list_eval_partition.txt").write_text(
    ...     "".join(f"{n} {s}\n" for n, s in zip(names, [0, 0, 0, 0, 1, 2])))
    >>> src = CelebASource(root, target="Blond_Hair", sensitive=("Male",))
    >>> len(src), src.label_categories, src.labels.tolist(), src.splits[-3:].tolist()
    (6, ('no', 'yes'), [1, 1, 0, 0, 1, 0], ['train', 'valid', 'test'])
    >>> src.sensitive["Male"][1], src.load_image(0).size
    (('no', 'yes'), (8, 8))
    >>> tmp.cleanup()
    """

    def __init__(self, root, *, target: str = "Blond_Hair", sensitive: Sequence[str] | str = ("Male",)) -> None:
        self.root = Path(root)
        if isinstance(sensitive, str):
            sensitive = (sensitive,)
        sensitive = tuple(sensitive)
        attr_path = self._required(ATTR_FILE)
        part_path = self._required(PARTITION_FILE)
        self._required(IMAGE_DIR)
        self.image_dir = self.root / IMAGE_DIR
        self.target = target
        self._attr_sha256 = _sha256_file(attr_path)
        self._partition_sha256 = _sha256_file(part_path)

        names, images, values = _read_attributes(attr_path)
        for wanted in (target, *sensitive):
            if wanted not in names:
                close = difflib.get_close_matches(wanted, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DataError(MSG_UNKNOWN_ATTR.format(name=wanted, hint=hint, available=", ".join(names)))
        partition = _read_partition(part_path)
        splits = []
        for image in images:
            if image not in partition:
                raise DataError(MSG_PARTITION_GAP.format(image=image, attr=ATTR_FILE, part=PARTITION_FILE))
            splits.append(partition[image])

        def codes(attribute: str) -> np.ndarray:
            return (values[:, names.index(attribute)] > 0).astype(np.int64)

        super().__init__(
            ids=images,
            labels=codes(target),
            label_name=target,
            label_categories=ATTRIBUTE_CATEGORIES,
            sensitive={name: (codes(name), ATTRIBUTE_CATEGORIES) for name in sensitive},
            splits=splits,
            where=f"CelebA '{self.root}'",
        )

    def _required(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            raise DataError(
                MSG_MISSING_FILE.format(
                    root=self.root, name=name, expected=f"{IMAGE_DIR}/, {ATTR_FILE} and {PARTITION_FILE}"
                )
            )
        return path

    def load_image(self, i: int, *, draft_size: int | None = None) -> Image.Image:
        """Decode row ``i`` as an RGB image.

        Parameters
        ----------
        i : int
            The row, ``0 <= i < len(self)``.
        draft_size : int, optional
            A JPEG may be decoded at a reduced scale, still at least this many pixels
            a side (the extractor passes its crop size); other formats ignore it.

        Returns
        -------
        PIL.Image.Image
            An RGB image.
        """
        return open_rgb(self.image_dir / str(self.ids[i]), where=self._where, draft_size=draft_size)

    def image_paths(self) -> list[Path]:
        """List the image files, checked before an extraction starts.

        Returns
        -------
        list of pathlib.Path
            One file per row.
        """
        return [self.image_dir / str(i) for i in self.ids]

    def describe(self) -> dict[str, Any]:
        """Describe the source for the cache's provenance.

        Returns
        -------
        dict
            JSON-able: the kind of source and what decides its rows (root, attributes, the sha256
            of the two list files).
        """
        return {
            "kind": "celeba",
            "root": str(self.root.resolve()),
            "target": self.target,
            "sensitive": list(self.sensitive),
            "rows": len(self),
            "attr_file_sha256": self._attr_sha256,
            "partition_file_sha256": self._partition_sha256,
        }


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` -> (attribute names, image names, (n, k) array of +1/-1)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as err:
        raise DataError(MSG_BAD_LINE.format(file=ATTR_FILE, line=1, problem=f"not UTF-8 text at byte {err.start}")) from err
    if len(lines) < 2:
        raise DataError(MSG_BAD_LINE.format(file=ATTR_FILE, line=1, problem="fewer than 2 header lines"))
    try:
        declared = int(lines[0].strip())
    except ValueError as err:
        raise DataError(MSG_BAD_LINE.format(file=ATTR_FILE, line=1, problem="first line is not a count")) from err
    names = lines[1].split()
    images, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            problem = f"{len(parts) - 1} values for {len(names)} attributes"
            raise DataError(MSG_BAD_LINE.format(file=ATTR_FILE, line=number, problem=problem))
        try:
            row = [int(v) for v in parts[1:]]
        except ValueError as err:
            raise DataError(MSG_BAD_LINE.format(file=ATTR_FILE, line=number, problem="a value is not +1/-1")) from err
        images.append(parts[0])
        rows.append(row)
    if declared != len(images):
        raise DataError(MSG_COUNT.format(file=ATTR_FILE, declared=declared, found=len(images)))
    values = np.asarray(rows, dtype=np.int8).reshape(len(images), len(names))
    return names, images, values


def _read_partition(path: Path) -> dict[str, str]:
    """Parse ``list_eval_partition.txt`` -> image name -> split name."""
    partition = {}
    with open(path, encoding="utf-8", errors="replace") as fh:  # a bad byte then fails the line check below
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in PARTITION_NAMES:
                problem = "expected '<image> <0|1|2>'"
                raise DataError(MSG_BAD_LINE.format(file=PARTITION_FILE, line=number, problem=problem))
            partition[parts[0]] = PARTITION_NAMES[parts[1]]
    return partition
