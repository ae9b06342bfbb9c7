"""What every result file records about how it was made: versions, seed, device, time."""

from __future__ import annotations

import datetime as _dt
import platform

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
