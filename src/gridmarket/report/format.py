"""One number format for the report: thousands separated by commas, fixed decimals, money with
its currency after the number (``1,234.56 R$``), missing values as an em dash."""

from __future__ import annotations

import math

__all__ = ["DASH", "money", "number", "parse_number"]

DASH = "—"


def number(value: object, decimals: int | None = 2, *, sign: bool = False) -> str:
    """``value`` with thousands separators and ``decimals`` decimals (``None``: up to 6
    significant digits); ``sign`` forces a leading ``+`` on positive values; NaN/None -> —."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DASH if value is None else str(value)
    if not math.isfinite(x):
        return DASH
    plus = "+" if sign else ""
    if decimals is None:
        text = f"{x:{plus},.6g}"
    else:
        text = f"{x:{plus},.{decimals}f}"
    return "0" if text in ("-0", "+0") and decimals == 0 else text


def money(value: object, currency: str = "", *, sign: bool = False, decimals: int = 2) -> str:
    """A money figure with its currency, e.g. ``"+170.40 R$"`` (``"currency"`` when the case
    names none)."""
    text = number(value, decimals, sign=sign)
    return text if text == DASH else f"{text} {currency or 'currency'}"


def parse_number(text: str) -> float:
    """The inverse of :func:`number` / :func:`money` (for tests and scripts): the first number
    in ``text`` with commas removed; NaN for the dash."""
    t = text.strip()
    if not t or t.startswith(DASH):
        return math.nan
    token = t.split()[0].replace(",", "")
    return float(token)
