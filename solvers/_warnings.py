"""Warnings that point at the user's line, not at the library code that noticed the problem."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

#: files under this folder are library code; the warning is attributed to the first frame outside it
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def caller_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` called from a solvers frame: the first frame outside
    the ``solvers`` package (the line that called ``fit``, or that advanced ``iter_path``).

    Python 3.12's ``skip_file_prefixes`` does this; this works on 3.10 and 3.11 too.
    """
    level, frame = 1, sys._getframe(1)  # 1 = the frame that will call warnings.warn
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside ``solvers``."""
    warnings.warn(message, category, stacklevel=caller_stacklevel())
