"""A small parameter validator in scikit-learn's shape (sklearn's own one is private).

Each entry of ``_parameter_constraints`` is a list of allowed specs:

* ``None`` -- the value ``None``;
* ``Interval(type, low, high, closed)`` -- a finite real or integral number in a range;
* ``Options(type, {values})`` -- one of a fixed set;
* a type -- an instance of that type (e.g. a Constraint object).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import DataError

MSG_PARAM = "The {param!r} parameter of {est} must be {allowed}. Got {got!r} instead."


@dataclass(frozen=True)
class Interval:
    type: type
    low: float | None
    high: float | None
    closed: str = "both"  # "left", "right", "both", "neither"

    def accepts(self, v) -> bool:
        if isinstance(v, bool):
            return False
        if self.type is numbers.Integral and not isinstance(v, numbers.Integral):
            return False
        if not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False  # "[0, inf)" excludes inf: a head with C=inf or eps=inf cannot be saved as JSON
        lo_ok = self.low is None or (v >= self.low if self.closed in ("left", "both") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("right", "both") else v < self.high)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        kind = "an int" if self.type is numbers.Integral else "a float"
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in the range {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    type: type
    options: frozenset

    def accepts(self, v) -> bool:
        return isinstance(v, self.type) and v in self.options

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(o) for o in sorted(self.options)) + "}"


def _describe(spec) -> str:
    if spec is None:
        return "None"
    if isinstance(spec, type):
        return f"an instance of {spec.__name__!r}"
    return str(spec)


def validate_params(estimator) -> None:
    """Check every parameter against ``estimator._parameter_constraints``; raise DataError."""
    # the attributes as stored (what get_params(deep=False) returns, without its signature inspection)
    for name, specs in estimator._parameter_constraints.items():
        v = getattr(estimator, name)
        ok = False
        for spec in specs:
            if spec is None:
                ok = v is None
            elif isinstance(spec, type):
                ok = isinstance(v, spec) and not isinstance(v, bool) or (spec is bool and isinstance(v, bool))
            else:
                ok = spec.accepts(v)
            if ok:
                break
        if not ok:
            allowed = [_describe(s) for s in specs]
            text = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + " or " + allowed[-1]
            if isinstance(v, numbers.Number) and hasattr(v, "item"):
                v = v.item()  # a numpy scalar reads as 0.5, not np.float64(0.5)
            raise DataError(MSG_PARAM.format(param=name, est=type(estimator).__name__, allowed=text, got=v))
