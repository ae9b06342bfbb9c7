"""One validation layer for the options several commands and the Python API share.

A batch size, a torch device, a confidence level, a memory budget and a fairness bound ``eps`` mean
the same thing wherever they are passed, so they are checked once, here, by the CLI and by the API
functions alike: ``fairhead predict --batch-size 0`` and ``fairhead.predict.predict_images(...,
batch_size=0)`` give the same one-line :class:`DataError`. Like :mod:`fairhead_io`, this module sits
outside the packages (it imports only :mod:`fairhead_errors`; torch only when a device is checked).

Messages name the option as the caller spells it (``flag``). The default is the Python parameter in backticks
(`` `batch_size` ``); the CLI prints such a name as its flag (``--batch-size``, see
:func:`fairhead_errors.cli_message`), so one message serves both.
"""

from __future__ import annotations

import math
import numbers
import os

from fairhead_errors import DataError

MSG_BATCH_SIZE = "{flag} must be an integer >= {low}; got {value!r} (e.g. 64)"
MSG_INTEGER = "must be an integer >= {low}{note}; got {value!r}"
MSG_DEVICE_NAME = "{flag} {value!r} is not a torch device; pass {choices}"
MSG_DEVICE_KIND = "{flag} {value!r} is not supported here; pass {choices}"
MSG_NO_DEVICE = "{flag} {value!r}: no {kind} device is available here; pass {fallback}"
MSG_CUDA_INDEX = "{flag} {value!r}: this machine has {count} CUDA device(s); pass cuda:0 .. cuda:{last}"
MSG_CONFIDENCE = "{flag} must be a number strictly between 0 and 1, e.g. 0.95; got {value!r}"
MSG_EPS = "{flag} must be a finite number >= 0 (the constraint's bound); got {value!r}"
MSG_MEMORY_TOO_LARGE = ("{flag} {value!r} is {size}, more than this machine's {total} of memory; "
                        "pass at most {total} (or leave it out to read the features into memory)")


def _real(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _setting(flag: str, value: str) -> str:
    """``--device cpu`` for a flag, `` `device='cpu'` `` for a parameter in backticks."""
    if flag.startswith("`") and flag.endswith("`"):
        return f"`{flag.strip('`')}={value!r}`"
    return f"{flag} {value}"


def check_integer(value, *, flag: str | None = None, low: int = 0, note: str = "") -> int:
    """An integer >= ``low`` (a count, a seed; not a bool, not a float such as 8.0). Without ``flag`` the message
    starts at "must be" (argparse puts the flag in front of it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        text = MSG_INTEGER.format(low=low, note=note, value=value)
        raise DataError(text if flag is None else f"{flag} {text}")
    return int(value)


def check_batch_size(value, *, flag: str = "`batch_size`", low: int = 1) -> int:
    """An integer >= ``low`` (not a bool, not a float such as 8.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise DataError(MSG_BATCH_SIZE.format(flag=flag, low=low, value=value))
    return int(value)


def check_device(value, *, flag: str = "`device`", kinds=("cpu", "cuda"), allow_auto: bool = True) -> str:
    """``auto`` (where allowed) -> ``cuda`` when torch sees a GPU, else ``cpu``; otherwise a device torch
    knows, of one of ``kinds``, that this machine has. Returns the device's name (``cpu``, ``cuda:1``, ...)."""
    name = str(value)
    if name == "cpu":  # every machine has one: no torch import for the default
        return name
    import torch

    if name == "auto" and allow_auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    choices = ("auto, " if allow_auto else "") + "cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as err:
        raise DataError(MSG_DEVICE_NAME.format(flag=flag, value=value, choices=choices)) from err
    if device.type not in kinds:
        raise DataError(MSG_DEVICE_KIND.format(flag=flag, value=value, choices=choices))
    fallback = _setting(flag, "cpu") + (" (or auto)" if allow_auto else "")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(MSG_NO_DEVICE.format(flag=flag, value=value, kind="CUDA", fallback=fallback))
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DataError(MSG_CUDA_INDEX.format(flag=flag, value=value, count=count, last=count - 1))
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(MSG_NO_DEVICE.format(flag=flag, value=value, kind="MPS", fallback=fallback))
    return str(device)


def check_confidence(value, *, flag: str = "`confidence`") -> float:
    """A level strictly between 0 and 1."""
    level = _real(value)
    if level is None or not 0 < level < 1:
        raise DataError(MSG_CONFIDENCE.format(flag=flag, value=value))
    return level


def check_eps(value, *, flag: str = "`eps`") -> float:
    """A finite bound >= 0 (what :class:`solvers.FairLogisticRegression` accepts)."""
    eps = _real(value)
    if eps is None or eps < 0:
        raise DataError(MSG_EPS.format(flag=flag, value=value))
    return eps


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory_budget(size: int, *, value=None, flag: str = "`max_memory`") -> int:
    """A budget in bytes no larger than the machine's memory: a budget of 100TB would size buffers
    for more memory than exists instead of limiting them."""
    total = physical_memory()
    if total is not None and size > total:
        raise DataError(MSG_MEMORY_TOO_LARGE.format(flag=flag, value=value if value is not None else size,
                                                    size=format_memory(size), total=format_memory(total)))
    return size


def format_memory(n: int) -> str:
    """``1500000000 -> '1.5 GB'`` (decimal units, as the budgets are usually written)."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


__all__ = ["check_integer", "check_batch_size", "check_device", "check_confidence", "check_eps", "check_memory_budget",
           "format_memory", "physical_memory"]
