"""A CSV manifest: one row per image, with label, sensitive and optional split columns.

This covers the metadata files of CheXpert, UTKFace, FairFace, Waterbirds and
most in-house datasets: a path column (relative to a root folder), a label
column and one or more sensitive columns.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from embedcache.errors import DataError, one_line
from embedcache.sources.base import (
    MSG_EMPTY,
    MISSING_SENSITIVE_FIX,
    TableSource,
    duplicate_names,
    encode_label,
    encode_categorical,
    hash_splits,
    normalize_splits,
    open_rgb,
    shown_names,
)

MSG_MISSING_CSV = "manifest '{path}' does not exist; pass the path of a CSV file"
MSG_EMPTY_CSV = "manifest '{path}' has no header line; add a header naming the columns"
MSG_UNKNOWN_COLUMN = "manifest '{path}' has no column {name!r}{hint}; columns are: {available}"
MSG_ESCAPING_PATH = (
    "manifest '{path}' row {row} points outside the image root '{root}' ({value!r}); "
    "use paths relative to the root (pass `root` to change it)"
)
MSG_RAGGED_ROW = "manifest '{path}' row {row} has {got} fields but the header has {expected}; fix the CSV quoting"
MSG_DUPLICATE_COLUMN = (
    "manifest '{path}' has the column {name!r} twice (columns {first} and {second}); rename one, "
    "so that no reader picks the wrong one"
)
MSG_NOT_UTF8 = "manifest '{path}' is not UTF-8 text (byte {byte} at position {position}); save it as UTF-8 CSV"
MSG_UNREADABLE_CSV = "manifest '{path}' cannot be parsed as CSV ({error}); fix the file"
MSG_EMPTY_PATH = "manifest '{path}' row {row} has an empty image path in column {column!r}; fill or drop that row"
MSG_MISSING_ROOT = "image root '{root}' of manifest '{path}' is not a folder; pass the image folder as `root`"


class ManifestSource(TableSource):
    """Images listed in a CSV file.

    Parameters
    ----------
    csv_path : path
        The manifest (UTF-8 CSV with a header line).
    root : path, optional
        Folder that image paths are relative to; defaults to the CSV's folder.
        A path that leaves the root (``../x.jpg`` or an absolute path elsewhere)
        is refused.
    image_col : str, default "path"
        Column with the image paths.
    label_col : str
        Binary label column (exactly two distinct values; see
        :func:`embedcache.sources.base.encode_categorical` for the code order).
    sensitive_cols : str or sequence of str
        One or more sensitive attribute columns (at least two groups each).
    split_col : str, optional
        Split column (e.g. train/valid/test). Without it rows are split 70/15/15
        by a stable hash of the sample id.
    id_col : str, optional
        Column of unique sample ids; defaults to the image path.

    Examples
    --------
    A manifest of generated images (:func:`embedcache.write_synthetic_dataset` writes one):

    >>> import tempfile, pathlib
    >>> from embedcache import ManifestSource, write_synthetic_dataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = write_synthetic_dataset(pathlib.Path(tmp.name) / "shapes", n=12, seed=0, image_size=16)
    >>> csv.read_text().splitlines()[:2]
    ['path,id,shape,background,split', 'images/syn0-000000.png,syn0-000000,square,blue,train']
    >>> src = ManifestSource(csv, label_col="shape", sensitive_cols=["background"], split_col="split", id_col="id")
    >>> src
    ManifestSource(12 rows, label 'shape', sensitive ['background'])
    >>> src.label_categories, src.load_image(0).size
    (('circle', 'square'), (16, 16))
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        csv_path,
        *,
        root=None,
        image_col: str = "path",
        label_col: str,
        sensitive_cols: Sequence[str] | str,
        split_col: str | None = None,
        id_col: str | None = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise DataError(MSG_MISSING_CSV.format(path=self.csv_path))
        self.root = Path(root) if root is not None else self.csv_path.parent
        if not self.root.is_dir():
            raise DataError(MSG_MISSING_ROOT.format(root=self.root, path=self.csv_path))
        if isinstance(sensitive_cols, str):
            sensitive_cols = (sensitive_cols,)
        self.columns = {
            "image": image_col,
            "label": label_col,
            "sensitive": list(sensitive_cols),
            "split": split_col,
            "id": id_col,
        }
        header, rows = self._read()
        wanted = [image_col, label_col, *sensitive_cols] + [c for c in (split_col, id_col) if c is not None]
        for name in wanted:
            if name not in header:
                close = difflib.get_close_matches(name, header, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DataError(
                    MSG_UNKNOWN_COLUMN.format(path=self.csv_path, name=name, hint=hint, available=shown_names(header))
                )
        if not rows:  # before the label check, which would call an empty column "not binary"
            raise DataError(MSG_EMPTY.format(where=f"manifest '{self.csv_path}'"))

        def column(name: str) -> list[str]:
            k = header.index(name)
            return [row[k] for row in rows]

        self.relative_paths = [self._checked_relative(value, row) for row, value in enumerate(column(image_col), 2)]
        ids = column(id_col) if id_col is not None else self.relative_paths
        labels, label_categories = encode_label(column(label_col), name=label_col)
        sensitive = {
            name: encode_categorical(column(name), name=name, kind="sensitive", fix=MISSING_SENSITIVE_FIX)
            for name in sensitive_cols
        }
        splits = normalize_splits(column(split_col), name=split_col) if split_col is not None else hash_splits(ids)
        with open(self.csv_path, "rb") as fh:
            self._csv_sha256 = hashlib.sha256(fh.read()).hexdigest()
        super().__init__(
            ids=ids,
            labels=labels,
            label_name=label_col,
            label_categories=label_categories,
            sensitive=sensitive,
            splits=splits,
            where=f"manifest '{self.csv_path}'",
        )

    def _read(self) -> tuple[list[str], list[list[str]]]:
        try:
            return self._read_rows()
        except UnicodeDecodeError as err:
            raise DataError(MSG_NOT_UTF8.format(path=self.csv_path, byte=hex(err.object[err.start]),
                                                position=err.start)) from err
        except csv.Error as err:  # a NUL byte, an unterminated quote at the end
            raise DataError(MSG_UNREADABLE_CSV.format(path=self.csv_path, error=one_line(err))) from err

    def _read_rows(self) -> tuple[list[str], list[list[str]]]:
        with open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)  # a broken quote is an error, not a merged field
            header = next(reader, None)
            if not header:
                raise DataError(MSG_EMPTY_CSV.format(path=self.csv_path))
            header = [h.strip() for h in header]
            duplicate = duplicate_names(header)
            if duplicate:
                name, first, second = duplicate
                raise DataError(MSG_DUPLICATE_COLUMN.format(path=self.csv_path, name=name, first=first, second=second))
            rows = []
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        MSG_RAGGED_ROW.format(path=self.csv_path, row=number, got=len(row), expected=len(header))
                    )
                rows.append(row)
        return header, rows

    def _checked_relative(self, value: str, row: int) -> str:
        """Normalise ``value`` to a path relative to the root, refusing any that escape it.

        The check is lexical (no symlink resolution) so that a root made of
        symlinked data folders still works.
        """
        value = value.strip()
        if value == "":
            raise DataError(MSG_EMPTY_PATH.format(path=self.csv_path, row=row, column=self.columns["image"]))
        root = os.path.abspath(self.root)
        full = os.path.normpath(os.path.join(root, value))  # join keeps an absolute value as is
        if value == "" or os.path.commonpath([root, full]) != root or full == root:
            raise DataError(MSG_ESCAPING_PATH.format(path=self.csv_path, row=row, root=self.root, value=value))
        return Path(os.path.relpath(full, root)).as_posix()

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
        return open_rgb(self.root / self.relative_paths[i], where=self._where, draft_size=draft_size)

    def image_paths(self) -> list[Path]:
        """List the image files, checked before an extraction starts.

        Returns
        -------
        list of pathlib.Path
            One file per row.
        """
        return [self.root / p for p in self.relative_paths]

    def describe(self) -> dict[str, Any]:
        """Describe the source for the cache's provenance.

        Returns
        -------
        dict
            JSON-able: the kind of source and what decides its rows (the CSV, its sha256, the root
            and the columns used).
        """
        return {
            "kind": "manifest",
            "csv": str(self.csv_path.resolve()),
            "csv_sha256": self._csv_sha256,
            "root": str(self.root.resolve()),
            "columns": self.columns,
            "split": "column" if self.columns["split"] else "hash(sample_id) 70/15/15",
            "rows": len(self),
        }
