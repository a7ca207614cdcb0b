"""Number formatting shared by both languages: thousands separators, fixed decimals, percents, sizes.

Every formatter takes None (a value the run did not record) and returns an em dash for it.
"""

from __future__ import annotations

NA = "—"


def f_int(x: float | None) -> str:
    return NA if x is None else f"{round(x):,}"


def f_num(x: float | None, decimals: int = 2) -> str:
    return NA if x is None else f"{x:,.{decimals}f}"


def f_sig(x: float | None, digits: int = 4) -> str:
    """Significant digits, exponent without '+' or leading zeros: 1.342e-05 -> 1.342e-5, 2.68e+18 -> 2.68e18."""
    if x is None:
        return NA
    s = f"{x:.{digits}g}"
    if "e" in s:
        mantissa, exp = s.split("e")
        s = f"{mantissa}e{int(exp)}"
    return s


def f_pct(x: float | None, decimals: int = 1) -> str:
    """A share (0.053) as a percent (5.3%)."""
    return NA if x is None else f"{100 * x:.{decimals}f}%"


def f_signed_pct(x: float | None, decimals: int = 1) -> str:
    return NA if x is None else f"{100 * x:+.{decimals}f}%"


def f_bytes(n: float | None) -> str:
    if n is None:
        return NA
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return NA


def f_ranges(ranges: list[tuple[float, float]], limit: int | None = None) -> list[str]:
    """[(100, 500), (700, 700)] -> ['100–500', '700'], cut to `limit` items with a trailing '…'."""
    shown = [f_int(a) if a == b else f"{f_int(a)}–{f_int(b)}" for a, b in ranges[:limit]]
    return shown + (["…"] if limit is not None and len(ranges) > limit else [])
