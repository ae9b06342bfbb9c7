"""What every result file records about how it was made: versions, seed, device, time."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

PACKAGES = ("fairhead", "torch", "torchvision", "cvxpy", "clarabel", "scs", "numpy", "scipy",
            "scikit-learn", "h5py", "fairlearn", "matplotlib")


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
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
