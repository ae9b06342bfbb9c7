"""What each committed batch of an extraction read, so that a resume can refuse changed images.

The dataset fingerprint covers the table (ids, labels, groups, splits), not the
pixels: replacing the image files between a kill and the resume would give a
cache whose first rows come from the old images and the rest from the new
ones. So each batch's journal line records, per row, the image file's size and
mtime (``os.stat``), and one sha256 over the sha256 of each file's bytes.

A resume compares the sizes and mtimes of the committed rows' files (one
``stat`` each, cheap); only for a batch where they differ (files copied or
touched) does it re-read the files and compare the content digest, so moving a
dataset keeps its progress and changed pixels never do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from embedcache.errors import CacheError

READ_BLOCK_BYTES = 1 << 20
MSG_CHANGED = (
    "the images of rows {start}-{stop} changed since they were extracted into '{journal}' "
    "(first: '{file}', {what}); restore them, or pass `overwrite=True` to discard the {committed} committed rows "
    "and start over"
)


def read_file(path) -> tuple[int, int, bytes]:
    """(size, mtime in ns, sha256 digest of the bytes) of one image file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        while block := fh.read(READ_BLOCK_BYTES):
            digest.update(block)
    return int(st.st_size), int(st.st_mtime_ns), digest.digest()


def batch_record(files: Sequence[tuple[int, int, bytes]]) -> dict[str, Any]:
    """The journal fields of one batch: per-row ``[size, mtime_ns]`` and the batch's content digest."""
    return {"files": [[size, mtime] for size, mtime, _ in files], "sha256": _batch_digest(d for _, _, d in files)}


def _batch_digest(digests) -> str:
    outer = hashlib.sha256()
    for digest in digests:
        outer.update(digest)
    return outer.hexdigest()


def _stat(path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def check_unchanged(records: Sequence[dict[str, Any]], paths: Sequence[Any] | None, *, journal, committed: int) -> None:
    """Raise :class:`CacheError` if a committed row's image file is not the one it read.

    Records without ``files`` come from sources that read no files (generated
    images, pinned by the dataset fingerprint) and need no check.
    """
    for record in records:
        files = record.get("files")
        if files is None:
            continue
        start, stop = int(record["start"]), int(record["stop"])
        if paths is None or len(files) != stop - start:
            raise CacheError(MSG_CHANGED.format(start=start, stop=stop - 1, journal=journal, file="?",
                                                what="the source no longer names its files", committed=committed))
        now = [_stat(paths[row]) for row in range(start, stop)]
        if now == [list(f) for f in files]:
            continue
        first = next(k for k, (a, b) in enumerate(zip(now, files)) if a != list(b))
        changed_file = paths[start + first]
        if now[first] is None:
            what = "it cannot be read"
        else:
            try:
                if _batch_digest(read_file(paths[row])[2] for row in range(start, stop)) == record.get("sha256"):
                    continue  # copied or touched, same bytes
            except OSError:
                pass
            what = "its content differs"
        raise CacheError(MSG_CHANGED.format(start=start, stop=stop - 1, journal=journal, file=changed_file,
                                            what=what, committed=committed))
