"""Wall time and peak memory of one stage of work (a head's fit, a network's training).

``with measure(device) as usage: ...`` records, for the code inside the block:

* ``wall_s``: elapsed wall-clock seconds (:func:`time.perf_counter`);
* ``peak_rss_mb``: the process's peak resident memory during the block, in MiB. On Linux the
  kernel's high-water mark (``VmHWM`` in ``/proc/self/status``) is reset when the block starts
  (writing ``5`` to ``/proc/self/clear_refs``), so the figure is this block's own peak; it
  includes whatever was already resident (the interpreter, torch, the loaded data). Where the
  reset is not possible (other systems) it is the process's peak since start-up
  (:func:`resource.getrusage`), and ``rss_scope`` says ``"process"`` instead of ``"block"``;
* ``start_rss_mb``: the resident memory when the block starts, so ``peak_rss_mb - start_rss_mb``
  is what the block added on top of what was already there (NaN where ``/proc`` is missing);
* ``peak_cuda_mb``: on a CUDA device, :func:`torch.cuda.max_memory_allocated` during the block
  (the counter is reset when the block starts); ``None`` elsewhere.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

MIB = 1024 * 1024
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
#: ``clear_refs`` value that resets the peak resident set size (Linux >= 4.0)
_RESET_PEAK_RSS = "5"


@dataclass
class Usage:
    """What one :func:`measure` block used."""

    wall_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    start_rss_mb: float = float("nan")
    peak_cuda_mb: float | None = None
    rss_scope: str = "block"

    @property
    def added_rss_mb(self) -> float:
        """What the block added above the resident memory it started with (0 when it only freed memory)."""
        return added(self.peak_rss_mb, self.start_rss_mb)

    def as_dict(self) -> dict:
        return {"wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb, "start_rss_mb": self.start_rss_mb,
                "peak_cuda_mb": self.peak_cuda_mb, "rss_scope": self.rss_scope}


def added(peak_mb: float, start_mb: float) -> float:
    """``peak - start``, at least 0 (NaN when either is unknown)."""
    return max(0.0, peak_mb - start_mb) if peak_mb == peak_mb and start_mb == start_mb else float("nan")


def _status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in MiB, or None."""
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / MIB  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _vm_hwm_mb() -> float | None:
    return _status_mb("VmHWM")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write(_RESET_PEAK_RSS)
    except OSError:
        return False
    return _vm_hwm_mb() is not None


def _process_peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB  # bytes on macOS, KiB elsewhere


@contextlib.contextmanager
def measure(device=None):
    """Measure the block's wall time and peak memory (see the module docstring); yields a :class:`Usage`
    that is filled in when the block ends (also when it raises)."""
    usage = Usage()
    cuda = None
    if device is not None and str(device).startswith("cuda"):
        import torch

        cuda = torch.device(device)
        torch.cuda.synchronize(cuda)
        torch.cuda.reset_peak_memory_stats(cuda)
    scoped = _reset_peak_rss()
    resident = _status_mb("VmRSS")
    usage.start_rss_mb = float("nan") if resident is None else resident
    usage.rss_scope = "block" if scoped else "process"
    start = time.perf_counter()
    try:
        yield usage
    finally:
        if cuda is not None:
            import torch

            torch.cuda.synchronize(cuda)
            usage.peak_cuda_mb = torch.cuda.max_memory_allocated(cuda) / MIB
        usage.wall_s = time.perf_counter() - start
        hwm = _vm_hwm_mb() if scoped else None
        usage.peak_rss_mb = hwm if hwm is not None else _process_peak_rss_mb()


def peak_so_far(device=None) -> tuple[float, float | None]:
    """``(peak RSS MiB, peak CUDA MiB or None)`` since the enclosing :func:`measure` block began (or since
    start-up where the kernel counter cannot be reset): a long stage can record its peak as it goes."""
    hwm = _vm_hwm_mb()
    rss = hwm if hwm is not None else _process_peak_rss_mb()
    cuda = None
    if device is not None and str(device).startswith("cuda"):
        import torch

        cuda = torch.cuda.max_memory_allocated(torch.device(device)) / MIB
    return rss, cuda
