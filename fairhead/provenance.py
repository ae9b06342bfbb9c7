"""What every result file records about how it was made: versions, seed, device, time."""

from __future__ import annotations

import datetime as _dt
import math
import platform

import numpy as np

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

PACKAGES = ("fairhead", "torch", "torchvision", "cvxpy", "clarabel", "scs", "numpy", "scipy",
            "scikit-learn", "h5py", "fairlearn", "matplotlib")


def versions() -> dict[str, str]:
    """Versions of every library a result depends on (the cache's and the solvers')."""
    from embedcache.store.writer import library_versions

    found = library_versions(PACKAGES)
    found.pop("python", None)  # recorded on its own below
    return found


def collect(*, seed=None, extra=None) -> dict:
    """Versions, platform, seed and creation time, plus ``extra``."""
    info = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "seed": seed,
    }
    info.update(extra or {})
    return info


def strict_json(value):
    """``value`` with NaN and infinities as ``None`` and numpy scalars as Python numbers, so that
    every JSON parser (not only Python's) reads the result files."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
