"""A measured value with the range it could reasonably take: a ratio of interleaved timings, the
median of repeated measurements, an accuracy difference with its uncertainty, or an exact count.
What a speed-up, an accuracy gap or a verdict (:mod:`vitlib.book.claims`) rests on."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Measured"]


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    values = sorted(float(v) for v in values)
    if not values:
        raise ValueError("expected at least one measured value; received none")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass(frozen=True)
class Measured:
    """A measured value with the range it could reasonably take on this machine.

    ``value`` is the figure to quote; ``low`` and ``high`` bound its spread; ``n`` counts what it
    rests on (timed calls a side, test images, seeds); ``unit`` says how to print it (``"x"`` for
    a ratio, ``"pt"`` for percentage points, ``""`` for a plain number); ``how`` says in words how
    the spread was obtained.
    """

    value: float
    low: float
    high: float
    n: int
    unit: str = "x"
    how: str = ""

    @classmethod
    def ratio(cls, slow: Sequence[float], fast: Sequence[float], what: str = "timings") -> "Measured":
        """The speed-up of ``fast`` over ``slow`` from per-call times measured interleaved:
        ``median(slow) / median(fast)``, spread from the interquartile ranges of both sides
        (``q1(slow) / q3(fast)`` to ``q3(slow) / q1(fast)``), a conservative range. Each time is a
        *timing*: one call, or the mean call of a block of short calls
        (:func:`vitlib.bench.time_function`); ``what`` names them in :attr:`how` (``"epochs"``).
        The one place a speed ratio is computed: a bare number is its ``.value``."""
        s1, s2, s3 = _quartiles(slow)
        f1, f2, f3 = _quartiles(fast)
        n = min(len(slow), len(fast))
        calls = f"{n} {what} a side" if len(slow) == len(fast) else f"{len(slow)} and {len(fast)} {what}"
        return cls(s2 / f2, s1 / f3, s3 / f1, n, "x", f"range from both sides' IQRs, {calls}")

    @classmethod
    def paired_ratio(cls, slow: Sequence[float], fast: Sequence[float], what: str = "pairs") -> "Measured":
        """The speed-up of ``fast`` over ``slow`` from measurements made in pairs side by side (the
        two whole runs of one seed): the median of the pairs' ratios ``slow[i] / fast[i]``, spread
        from the lowest to the highest pair's ratio; ``what`` names the pairs in :attr:`how`."""
        if not slow or len(slow) != len(fast):
            raise ValueError(f"expected one measurement a side per pair; received {len(slow)} and {len(fast)}")
        ratios = [float(s) / float(f) for s, f in zip(slow, fast)]
        return cls(statistics.median(ratios), min(ratios), max(ratios), len(ratios), "x",
                   f"lowest to highest of {len(ratios)} {what}")

    @classmethod
    def of_values(cls, values: Sequence[float], unit: str = "x", how: str = "") -> "Measured":
        """The median of repeated measurements (rounds, seeds), spread by their interquartile range."""
        q1, q2, q3 = _quartiles(values)
        return cls(q2, q1, q3, len(values), unit, how or f"IQR of {len(values)} measurements")

    @classmethod
    def difference(cls, base: Sequence[float], other: Sequence[float], test_size: int) -> "Measured":
        """Accuracy of ``other`` minus accuracy of ``base``, in percentage points, from one accuracy
        (0-1) per seed on a test set of ``test_size`` images, with about 95% bounds: twice the
        larger of the binomial standard error of a difference on this test set and the standard
        error across seeds."""
        if not base or not other or len(base) != len(other):
            raise ValueError(f"expected one accuracy per seed for both models; received {len(base)} and {len(other)}")
        if test_size < 1:
            raise ValueError(f"test_size must be positive; received {test_size}")
        a, b = statistics.fmean(base), statistics.fmean(other)
        binomial = math.sqrt((a * (1 - a) + b * (1 - b)) / test_size)
        diffs = [y - x for x, y in zip(base, other)]
        seeds = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        half = 2 * max(binomial, seeds) * 100
        d = (b - a) * 100
        return cls(d, d - half, d + half, len(base), "pt",
                   f"±{half:.1f} pt: 2 standard errors, {test_size} test images, "
                   f"{len(base)} seed{'s' if len(base) != 1 else ''}")

    @classmethod
    def exact(cls, value: float, unit: str = "") -> "Measured":
        """A value with no spread: a count (parameters, FLOPs) that is the same on every run."""
        return cls(float(value), float(value), float(value), 1, unit, "exact count")

    def chain(self, then: "Measured") -> "Measured":
        """Two speed-ups in a row (``self``: A over B, ``then``: B over C), A over C: the values and
        the bounds multiplied, on at least the fewer timings of the two."""
        n = min(self.n, then.n)
        return Measured(self.value * then.value, self.low * then.low, self.high * then.high, n, "x",
                        f"two ranges multiplied, at least {n} timings a side")

    def to_dict(self, scale: float = 1.0, prefix: str | None = None) -> dict:
        """``{value, low, high, n}``, the value and its bounds times ``scale``: a figure as a suite
        writes it to JSON. With ``prefix`` (``"ms"``), the columns of a table's row instead:
        ``{ms, ms_low, ms_high}`` (the row names its own count)."""
        if prefix is not None:
            return {prefix: self.value * scale, f"{prefix}_low": self.low * scale, f"{prefix}_high": self.high * scale}
        return {"value": self.value * scale, "low": self.low * scale, "high": self.high * scale, "n": self.n}

    def __str__(self) -> str:
        fmt = {"x": "{:.2f}x", "pt": "{:+.1f} pt"}.get(self.unit, "{:.4g}" + self.unit)
        text = fmt.format(self.value)
        if self.low == self.high:
            return text
        return f"{text} ({fmt.format(self.low)} to {fmt.format(self.high)}; {self.how})"
