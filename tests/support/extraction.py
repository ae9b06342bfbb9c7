"""What the kill tests of an extraction share: the pinned creation time and the journal's committed rows."""

from __future__ import annotations

import json
from pathlib import Path

from embedcache.store import schema

#: SOURCE_DATE_EPOCH of every run whose bytes are compared
EPOCH = "1700000000"


def committed_rows(out: Path) -> int:
    """Rows the journal of an extraction into ``out`` has committed (0 before the first commit)."""
    try:
        data = json.loads((schema.journal_path(out) / schema.JOURNAL_COMMITTED).read_text())
        return int(data[schema.JOURNAL_COMMITTED_ROWS_KEY])
    except (FileNotFoundError, ValueError):
        return 0
