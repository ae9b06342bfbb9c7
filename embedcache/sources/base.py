"""The Source protocol: what every dataset hands to the extractor, and shared helpers.

A source is a table of rows (sample id, binary label, sensitive attributes,
split) plus a way to load row ``i`` as an RGB image. Everything but the images
lives in memory, so the extractor and the cache writer never touch the
original metadata files twice.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from embedcache.errors import DataError, one_line
from embedcache.store.schema import MAX_LABEL_CLASSES

#: the split names sources produce when the data has no split of its own
DEFAULT_SPLITS = ("train", "valid", "test")
#: fractions used by :func:`hash_splits` (train, valid, test)
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)

MSG_DUPLICATE_IDS = "{where} has {count} duplicate sample ids (first: {first!r}); make the ids unique"
MSG_EMPTY = "{where} has no rows; pass a dataset with at least one image"
#: longest text of one value that an error message shows (a 13.5 KB vector once filled a message)
SHOWN_VALUE_CHARS = 60
#: more distinct numeric values than this in a sensitive column draw the "looks continuous" warning
MAX_NUMERIC_GROUPS = 10
#: cell texts that mean "missing": pandas' default ``na_values`` plus the UCI files' "?" (Adult census),
#: compared case-insensitively after stripping; an empty cell is missing too
MISSING_MARKERS = frozenset(
    {"", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a", "#n/a n/a", "#na",
     "-1.#ind", "-1.#qnan", "1.#ind", "1.#qnan", "?"}
)
#: the group name a missing sensitive value gets with ``missing="group"``
MISSING_GROUP = "(missing)"
MSG_MISSING_NAME_TAKEN = ("{kind} column {name!r} has a real value {group!r} (row {row}) and missing values: keeping "
                          "the missing ones as the group {group!r} would merge them into it; rename that value, or "
                          "drop the rows with missing values (`sensitive_missing='drop'`)")


def shown(value: Any, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, on one line, for error messages."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_names(names: Sequence[str], limit: int = 20) -> str:
    """The first ``limit`` column names, comma-separated, and how many there are in all."""
    names = [" ".join(str(n).split()) for n in names]
    head = ", ".join(n if len(n) <= 40 else n[:37] + "..." for n in names[:limit])
    return head if len(names) <= limit else f"{head}, ... ({len(names)} in all)"


def duplicate_names(names: Sequence[str]) -> tuple[str, int, int] | None:
    """The first name that occurs twice, with its two 1-based positions, or None.

    Empty names (the unnamed columns a trailing comma makes) are not names and are skipped.
    """
    seen: dict[str, int] = {}
    for k, name in enumerate(names, start=1):
        if not name:
            continue
        if name in seen:
            return name, seen[name], k
        seen[name] = k
    return None


def is_missing(value: Any) -> bool:
    """True for None, NaN and the cell texts in :data:`MISSING_MARKERS`."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and value.strip().lower() in MISSING_MARKERS


MSG_NOT_BINARY = (
    "label column {name!r} has {count} distinct values {values}{why}; a label needs 2 to "
    "{most} classes (map it to two classes, or bin it into a few)"
)

MSG_ONE_GROUP = (
    "sensitive attribute {name!r} has only {count} value {values}; it needs at least 2 groups "
    "(pick another column)"
)
MSG_MISSING_VALUE = "{kind} column {name!r} is empty at row {row}{more}; {fix}"
MSG_MISSING_MARKER = (
    "{kind} column {name!r} holds the missing-value marker {value} at row {row}{more}; {fix}"
)
#: how to fix a missing sensitive value where no option maps it (a manifest)
MISSING_SENSITIVE_FIX = "write an explicit category (e.g. 'unknown') in those rows or drop them"
MISSING_OTHER_FIX = "fill or drop that row"
MSG_CONTINUOUS_SENSITIVE = (
    "sensitive column {name!r} has {count} distinct numeric values ({low} to {high}) and looks continuous: "
    "each value becomes its own group; bin it into a few ranges first (e.g. age 18-29, 30-44, 45-64, 65+)"
)
MSG_TWO_SPELLINGS = (
    "{kind} column {name!r} spells one value two ways ({first} and {second}), which would make two "
    "{groups}; write it one way"
)
MSG_EMPTY_ID = "{where} has an empty sample id at row {row}; give every row an id"
MSG_LENGTH = "{what} has {got} rows but the dataset has {n}; pass one value per row"
MSG_MISSING_IMAGE = "image file '{path}' of {where} is missing; restore it or drop its row"
MSG_TOO_LARGE_IMAGE = (
    "image file '{path}' of {where} is too large to decode safely ({error}); downscale it (the network sees "
    "a few hundred pixels a side)"
)
MSG_BAD_IMAGE = (
    "image file '{path}' of {where} cannot be decoded ({error}); replace the file or drop its row"
)


@runtime_checkable
class Source(Protocol):
    """What the extractor needs from a dataset.

    A protocol: any object with these attributes and methods is a source (the classes here
    derive from ``TableSource``, which checks the table once).

    Attributes
    ----------
    ids : numpy.ndarray of str
        Unique sample ids, one per row.
    labels : numpy.ndarray of int64
        Binary label codes (0 or 1).
    label_name : str
        Name of the label (e.g. ``"Blond_Hair"``).
    label_categories : tuple of str
        Names of label codes 0 and 1.
    sensitive : dict
        ``name -> (int64 codes, tuple of category names)``.
    splits : numpy.ndarray of str
        Split name of each row (``"train"``, ``"valid"``, ``"test"``, ...).

    Examples
    --------
    >>> from embedcache import Source, SyntheticSource
    >>> isinstance(SyntheticSource(12, seed=0), Source)
    True
    """

    ids: np.ndarray
    labels: np.ndarray
    label_name: str
    label_categories: tuple[str, ...]
    sensitive: dict[str, tuple[np.ndarray, tuple[str, ...]]]
    splits: np.ndarray

    def __len__(self) -> int: ...

    def load_image(self, i: int) -> Image.Image:
        """Load row ``i`` as an RGB image.

        Parameters
        ----------
        i : int
            The row, ``0 <= i < len(self)``.

        Returns
        -------
        PIL.Image.Image
            An RGB image.
        """

    def fingerprint(self) -> str:
        """Hash what decides the rows (ids, labels, sensitive attributes, splits).

        Returns
        -------
        str
            A hex sha256; a cache records it and refuses to mix two datasets.
        """

    def describe(self) -> dict[str, Any]:
        """Describe the source for the cache's provenance.

        Returns
        -------
        dict
            JSON-able.
        """


class TableSource:
    """Base class holding the metadata table; subclasses implement ``load_image``.

    Parameters
    ----------
    ids, labels, label_name, label_categories, sensitive, splits
        See :class:`Source`. All are validated here: one row each, unique ids,
        labels of 2 to ``MAX_LABEL_CLASSES`` classes, at least two groups per sensitive attribute.
    where : str
        How error messages name this dataset (e.g. ``"manifest 'meta.csv'"``).
    """

    def __init__(
        self,
        *,
        ids: Sequence[str],
        labels: Sequence[int],
        label_name: str,
        label_categories: Sequence[str],
        sensitive: Mapping[str, tuple[Sequence[int], Sequence[str]]],
        splits: Sequence[str],
        where: str,
    ) -> None:
        self._where = where
        self.ids = np.asarray([str(i) for i in ids], dtype=object)
        n = len(self.ids)
        if n == 0:
            raise DataError(MSG_EMPTY.format(where=where))
        empty = [k for k, i in enumerate(self.ids) if not i.strip()]
        if empty:
            raise DataError(MSG_EMPTY_ID.format(where=where, row=empty[0]))
        check_unique_ids(self.ids, where=where)
        self.labels = np.asarray(labels, dtype=np.int64)
        _check_length(self.labels, n, f"label {label_name!r}")
        self.label_name = str(label_name)
        self.label_categories = tuple(str(c) for c in label_categories)
        K = len(self.label_categories)
        if not 2 <= K <= MAX_LABEL_CLASSES or not np.isin(self.labels, np.arange(K)).all():
            raise DataError(
                MSG_NOT_BINARY.format(
                    name=label_name, count=K, values=list(self.label_categories)[:5], why="",
                    most=MAX_LABEL_CLASSES)
            )
        self.sensitive = {}
        for name, (codes, categories) in sensitive.items():
            codes = np.asarray(codes, dtype=np.int64)
            _check_length(codes, n, f"sensitive attribute {name!r}")
            categories = tuple(str(c) for c in categories)
            present = np.unique(codes)
            if len(present) < 2:
                values = [c if len(c) <= 20 else c[:17] + "..." for c in (categories[k] for k in present)]
                raise DataError(MSG_ONE_GROUP.format(name=name, count=len(present), values=values))
            self.sensitive[str(name)] = (codes, categories)
        self.splits = np.asarray([str(s) for s in splits], dtype=object)
        _check_length(self.splits, n, "split")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows, label {self.label_name!r}, sensitive {list(self.sensitive)})"

    def load_image(self, i: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def image_paths(self) -> list[Any] | None:
        """Files the images come from (checked before an extraction starts), or None."""
        return None

    def _fingerprint_extra(self) -> dict[str, Any]:
        """Subclass hook: anything besides the table that decides the images (e.g. a seed)."""
        return {}

    def fingerprint(self) -> str:
        """Hash the table: ids, labels, sensitive attributes and splits (plus a subclass's extra).

        Returns
        -------
        str
            The hex sha256 (the cache's dataset fingerprint).
        """
        return table_fingerprint(
            ids=self.ids,
            labels=self.labels,
            label_name=self.label_name,
            label_categories=self.label_categories,
            sensitive=self.sensitive,
            splits=self.splits,
            extra=self._fingerprint_extra(),
        )

    def describe(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {"kind": type(self).__name__, "rows": len(self)}


def check_unique_ids(ids: np.ndarray, *, where: str) -> None:
    """Raise :class:`DataError` naming the first duplicate id."""
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    dup = uniq[counts > 1]
    if len(dup):
        raise DataError(MSG_DUPLICATE_IDS.format(where=where, count=len(dup), first=str(dup[0])))


def _check_length(values: np.ndarray, n: int, what: str) -> None:
    if values.ndim != 1 or len(values) != n:
        raise DataError(MSG_LENGTH.format(what=what, got=len(values), n=n))


def table_fingerprint(
    *,
    ids,
    labels,
    label_name,
    label_categories,
    sensitive,
    splits,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Hash the table in a canonical byte form (hex sha256).

    Strings are NUL-separated UTF-8, integer codes little-endian int64, so the
    same table gives the same digest on every platform.
    """
    from embedcache.store.schema import dumps_json

    digest = hashlib.sha256()

    def add_strings(tag: str, values) -> None:
        digest.update(f"\x01{tag}\x00".encode())
        digest.update("\x00".join(str(v) for v in values).encode("utf-8"))

    def add_codes(tag: str, codes) -> None:
        digest.update(f"\x01{tag}\x00".encode())
        digest.update(np.ascontiguousarray(codes, dtype="<i8").tobytes())

    add_strings("ids", ids)
    add_strings("label", [label_name, *label_categories])
    add_codes("labels", labels)
    for name in sorted(sensitive):
        codes, categories = sensitive[name]
        add_strings(f"sensitive:{name}", categories)
        add_codes(f"sensitive-codes:{name}", codes)
    add_strings("splits", splits)
    if extra:
        add_strings("extra", [dumps_json(extra)])
    return digest.hexdigest()


def _sort_key(value: str):
    """Numbers sort numerically ("-1" < "1" < "10"), then everything else as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _canonical_number(text: str) -> str:
    """"2.0" and "2" are one category; other text is kept as written."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def encode_categorical(
    values: Sequence[Any], *, name: str, kind: str, missing: str = "error", fix: str | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Turn raw column values into int64 codes and sorted category names.

    Categories are the distinct values as strings, numbers ordered numerically
    and text alphabetically, so ``0/1``, ``-1/1``, ``False/True`` and
    ``no/yes`` all map the second value to code 1.

    Parameters
    ----------
    missing : {"error", "group"}, default "error"
        What a missing value (None, NaN, an empty cell or a marker such as
        ``"NA"``, see :data:`MISSING_MARKERS`) does: raise, or become the group
        ``"(missing)"``. A marker is never silently a group of its own.
    fix : str, optional
        The fix a missing-value error suggests.

    Raises
    ------
    DataError
        On a missing value when ``missing="error"``.

    Warns
    -----
    UserWarning
        A sensitive column with more than :data:`MAX_NUMERIC_GROUPS` distinct
        numeric values (it looks continuous: bin it).
    """
    as_text = []
    missing_rows = []
    for row, value in enumerate(values):
        if is_missing(value):
            missing_rows.append(row)
            as_text.append(MISSING_GROUP)
            continue
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)  # 1.0 and 1 are the same category
        as_text.append(_canonical_number(str(value).strip()))
    if missing_rows and missing != "group":
        row = missing_rows[0]
        value = values[row]
        more = f" ({len(missing_rows)} rows in all)" if len(missing_rows) > 1 else ""
        if value is None or (isinstance(value, str) and value.strip() == ""):
            raise DataError(MSG_MISSING_VALUE.format(kind=kind, name=name, row=row, more=more,
                                                     fix=fix or MISSING_OTHER_FIX))
        raise DataError(MSG_MISSING_MARKER.format(kind=kind, name=name, value=shown(value), row=row, more=more,
                                                  fix=fix or MISSING_OTHER_FIX))
    if missing_rows and len(missing_rows) < sum(t == MISSING_GROUP for t in as_text):
        row = next(r for r, t in enumerate(as_text) if t == MISSING_GROUP and r not in set(missing_rows))
        raise DataError(MSG_MISSING_NAME_TAKEN.format(kind=kind, name=name, row=row, group=MISSING_GROUP))
    categories = tuple(sorted(set(as_text), key=_sort_key))
    _check_one_spelling(categories, name=name, kind=kind)
    if kind == "sensitive":
        _warn_if_continuous(name, categories)
    lookup = {c: k for k, c in enumerate(categories)}
    codes = np.fromiter((lookup[t] for t in as_text), dtype=np.int64, count=len(as_text))
    return codes, categories


def _check_one_spelling(categories: Sequence[str], *, name: str, kind: str) -> None:
    """Refuse categories equal up to case ("Male" and "male"): they are one value, not two groups."""
    seen: dict[str, str] = {}
    for category in categories:
        key = category.casefold()
        if key in seen:
            raise DataError(MSG_TWO_SPELLINGS.format(kind=kind, name=name, first=shown(seen[key]),
                                                     second=shown(category),
                                                     groups="classes" if kind == "label" else "groups"))
        seen[key] = category


def _warn_if_continuous(name: str, categories: Sequence[str]) -> None:
    numbers = [_sort_key(c)[1] for c in categories if _sort_key(c)[0] == 0]
    if len(numbers) > MAX_NUMERIC_GROUPS and len(numbers) == len([c for c in categories if c != MISSING_GROUP]):
        warnings.warn(
            MSG_CONTINUOUS_SENSITIVE.format(name=name, count=len(numbers), low=f"{min(numbers):g}",
                                            high=f"{max(numbers):g}"),
            UserWarning,
            stacklevel=3,
        )


def encode_label(values: Sequence[Any], *, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Like :func:`encode_categorical`, for a label: 2 classes (codes 0/1, the second value is 1)
    or K classes up to :data:`MAX_LABEL_CLASSES` (codes ``0 .. K-1`` in category order).

    Refused: a single value, more classes than that, and numbers with fractions (a continuous
    column, e.g. a score or an age, is binned first).
    """
    codes, categories = encode_categorical(values, name=name, kind="label")
    numbers = [_sort_key(c)[1] for c in categories if _sort_key(c)[0] == 0]
    fractional = len(categories) > 2 and any(not float(x).is_integer() for x in numbers)
    if not 2 <= len(categories) <= MAX_LABEL_CLASSES or fractional:
        shown_values = [shown(c, 20) for c in categories[:5]] + (["..."] if len(categories) > 5 else [])
        raise DataError(MSG_NOT_BINARY.format(name=name, count=len(categories), values="[" + ", ".join(shown_values) + "]",
                                              why=" (fractional numbers: it looks continuous)" if fractional else "",
                                              most=MAX_LABEL_CLASSES))
    return codes, categories


#: the binary-era name, kept for callers that import it
encode_binary_label = encode_label


#: split spellings mapped to the canonical names (0/1/2 as in CelebA's and Waterbirds' files)
SPLIT_ALIASES = {
    "0": "train", "training": "train", "tr": "train",
    "1": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "2": "test", "testing": "test", "te": "test",
}


def normalize_splits(values: Sequence[Any], *, name: str = "split") -> np.ndarray:
    """Map split spellings to train/valid/test (``val``, ``validation``, ``0/1/2``, any case).

    Other names are kept as written (stripped), so custom splits still work. A
    missing value (empty, ``NA``, ...) is refused: it is not a split name.
    """
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        if is_missing(value):
            if value is None or (isinstance(value, str) and value.strip() == ""):
                raise DataError(MSG_MISSING_VALUE.format(kind="split", name=name, row=k, more="",
                                                         fix=MISSING_OTHER_FIX))
            raise DataError(MSG_MISSING_MARKER.format(kind="split", name=name, value=shown(value), row=k, more="",
                                                      fix=MISSING_OTHER_FIX))
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        text = _canonical_number(str(value).strip())
        out[k] = SPLIT_ALIASES.get(text.lower(), text.lower() if text.lower() in DEFAULT_SPLITS else text)
    return out


def hash_splits(ids: Sequence[str], fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> np.ndarray:
    """Assign train/valid/test by a stable hash of each id (for data without a split column).

    The same id always lands in the same split, whatever the row order or the
    other rows, so adding rows never moves existing ones between splits.
    """
    edges = np.cumsum(fractions)
    out = np.empty(len(ids), dtype=object)
    for k, sample_id in enumerate(ids):
        u = int.from_bytes(hashlib.sha256(str(sample_id).encode("utf-8")).digest()[:8], "little") / 2.0**64
        out[k] = DEFAULT_SPLITS[int(np.searchsorted(edges, u, side="right"))]
    return out


#: modes holding one unsigned 16-bit channel (PNG and TIFF 16-bit grayscale open as these)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: largest value of a 16-bit channel; 16-bit pixels map to 8 bits as round(v * 255 / 65535)
UINT16_MAX = 65535

MSG_WIDE_RANGE = (
    "image file '{path}' of {where} has {kind} pixel values in [{low:g}, {high:g}], outside the {expected} "
    "that fairhead reads for mode {mode!r}; convert it to 8- or 16-bit grayscale or RGB"
)


def _scaled_to_uint8(values: np.ndarray, top: float) -> Image.Image:
    """Map ``[0, top]`` linearly onto ``0..255`` (round half up) as a mode-L image."""
    scaled = np.floor(values.astype(np.float64) * (255.0 / top) + 0.5)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, *, path="", where: str = "") -> Image.Image:
    r"""Convert a decoded image of any PIL mode to 8-bit RGB without clipping its range.

    PIL's ``convert("RGB")`` clips every value above 255, so a 16-bit X-ray turns
    white. Each mode is mapped by its own range instead:

    - ``I;16`` (16-bit PNG or TIFF) and ``I`` (32-bit integer, values in
      ``0..65535`` as older Pillow opens 16-bit PNGs):
      :math:`v_8 = \lfloor 255\, v / 65535 + 1/2 \rfloor`, the same scaling as
      torchvision's ``convert_image_dtype`` from uint16; an ``I`` image outside
      ``0..65535`` is refused rather than guessed at;
    - ``F`` (32-bit float): values in ``[0, 1]`` (torchvision's float convention),
      :math:`v_8 = \lfloor 255\, v + 1/2 \rfloor`; others are refused;
    - a mode with transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L`` with a
      transparent colour): composited onto black, :math:`c \cdot \alpha / 255`,
      so what is hidden under a transparent pixel never reaches the network;
    - ``L``, ``P``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's own
      conversion, which is exact for 8-bit data.

    Gray stays gray: the single channel is copied to R, G and B.
    """
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > UINT16_MAX:
            raise DataError(MSG_WIDE_RANGE.format(path=path, where=where, kind="integer", low=low, high=high,
                                                  expected="range 0..65535", mode=mode))
        return _scaled_to_uint8(values, UINT16_MAX).convert("RGB")
    if mode == "F":
        values = np.asarray(img)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (np.isfinite(values).all() and low >= 0.0 and high <= 1.0):
            raise DataError(MSG_WIDE_RANGE.format(path=path, where=where, kind="floating-point", low=low,
                                                  high=high, expected="range [0, 1]", mode=mode))
        return _scaled_to_uint8(values, 1.0).convert("RGB")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path, *, where: str, draft_size: int | None = None) -> Image.Image:
    """Open an image file as 8-bit RGB (see :func:`to_rgb`), or raise a one-line :class:`DataError`.

    Parameters
    ----------
    draft_size : int, optional
        For JPEG files, let the decoder skip detail below this size (PIL's
        ``draft``: DCT scaling by 1/2, 1/4 or 1/8 that keeps both sides at
        least this large). Decoding a 1000 px photo for a 224 px network this
        way is several times faster.
    """
    try:
        with Image.open(path) as img:
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            return to_rgb(img, path=path, where=where)
    except FileNotFoundError as err:
        raise DataError(MSG_MISSING_IMAGE.format(path=path, where=where)) from err
    except DataError:
        raise
    except Image.DecompressionBombError as err:  # over twice PIL's pixel limit: refused, as PIL does, in one line
        raise DataError(MSG_TOO_LARGE_IMAGE.format(path=path, where=where, error=one_line(err))) from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError is an OSError
        error = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise DataError(MSG_BAD_IMAGE.format(path=path, where=where, error=error)) from err
