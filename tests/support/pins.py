"""Bitwise pins kept per platform: a head's bits are those of the arithmetic it ran on.

A torch head on the CPU is deterministic (one thread, fixed row blocks, reductions in a fixed
order), so the same code gives the same bits on the same platform. Another platform may not:
the BLAS picks its kernels by CPU (OpenBLAS's ``DYNAMIC_ARCH``), and a new torch or numpy may sum
in another order. A pin file therefore holds one set of pins per platform it was made on::

    {"sets": [{"platform": "<platform_key()>" or null, "pins": {case id: pin, ...}}, ...]}

:func:`pins_for_this_platform` picks the set made under this platform's key; failing that, the set
whose reference case (the file's first) reproduces here: a platform that rounds as one already
pinned (``"platform": null`` marks a set made before keys were recorded). Where no set fits, the
pins cannot say anything here, and the tests skip with the command that records this platform's
set, to be run only on code known to be right (the commit the other sets were made on).

A change meant to move some heads re-records them on the platform at hand and removes them from
the other platforms' sets (their new bits there are unknown): a case missing from a set skips.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np


def _arithmetic_fingerprint() -> str:
    """sha256 of products whose rounding depends on the BLAS kernels and the CPU: the solvers' kinds
    of work (float32 and float64 gemv and gemm, torch's dot, cumsum and softplus) on fixed data."""
    import torch

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3001, 67))
    v = rng.normal(size=67)
    r = rng.normal(size=3001)
    h = hashlib.sha256()
    for dtype in (np.float32, np.float64):
        A = X.astype(dtype)
        for out in (A @ v.astype(dtype), A.T @ r.astype(dtype), A.T @ (A[:, :9] * r[:, None].astype(dtype))):
            h.update(np.ascontiguousarray(out).tobytes())
    t = torch.from_numpy(r)
    for out in (t.dot(t), torch.cumsum(t, 0), torch.nn.functional.softplus(t), torch.sigmoid(t)):
        h.update(out.numpy().tobytes())
    return h.hexdigest()[:16]


UNPINNED = "this case's heads were moved on purpose after this platform's pins were made: not pinned here"


def platform_key() -> str:
    """Versions of what does the arithmetic, the CPU's architecture and an arithmetic fingerprint."""
    import torch

    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return (f"torch {torch.__version__}; numpy {np.__version__} ({blas.get('name', '?')} {blas.get('version', '?')}); "
            f"{platform.machine()}; arithmetic {_arithmetic_fingerprint()}")


def load_sets(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["sets"]


def pins_for_this_platform(path: Path, reference_id: str, reference_pin) -> dict | None:
    """The pins made on this platform, or on one that rounds as it does; None where no set fits.

    ``reference_pin()`` computes the reference case's pin here (called only when no set carries
    this platform's key)."""
    sets = load_sets(path)
    key = platform_key()
    for s in sets:
        if s["platform"] == key:
            return s["pins"]
    here = plain(reference_pin())
    for s in sets:
        if plain(s["pins"].get(reference_id)) == here:
            return s["pins"]
    return None


def record_this_platform(path: Path, pins: dict) -> None:
    """Write ``pins`` as this platform's set of ``path`` (replacing its earlier set, keeping the others)."""
    path = Path(path)
    sets = load_sets(path) if path.exists() else []
    key = platform_key()
    sets = [s for s in sets if s["platform"] != key] + [{"platform": key, "pins": plain(pins)}]
    path.write_text(json.dumps({"sets": sets}, indent=1) + "\n")


def skip_message(path: Path, script: str) -> str:
    return (f"no pins in {Path(path).name} for this platform ({platform_key()}): record them from code known to be "
            f"right with `PYTHONPATH=.:tests python {script} --record`")


def plain(value):
    """Tuples as lists, as JSON gives them back."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
