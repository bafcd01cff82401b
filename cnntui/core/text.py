"""Terminal text helpers: display width of CJK text, padding, number formatting, and making
text from files safe to print (no control characters reach the terminal)."""

from __future__ import annotations

import math
import unicodedata
from typing import TypeGuard

# Characters that steer a terminal or reorder text instead of showing: C0 and C1 controls and
# DEL (escape sequences, bells, carriage returns), line and paragraph separators, surrogates,
# and the bidirectional overrides and isolates that make text read otherwise than it is.
_UNSAFE_CATEGORIES = ("Cc", "Zl", "Zp", "Cs")
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _unsafe(ch: str) -> bool:
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _UNSAFE_CATEGORIES


def unsafe_char(text: str) -> str | None:
    """The first character of `text` that must not reach a terminal raw, or None."""
    return next((ch for ch in text if _unsafe(ch)), None)


def escape(ch: str) -> str:
    """One character as Python writes it escaped: \\x1b, \\u202e, \\U000e0001."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(value: object) -> str:
    """`value` as text for the terminal: control characters shown escaped, never sent raw.

    For text that comes from files a user may not have written (a run's summary.json),
    and of any type: a hand-edited summary may hold a number where a title was.
    """
    text = value if isinstance(value, str) else str(value)
    if unsafe_char(text) is None:
        return text
    return "".join(escape(ch) if _unsafe(ch) else ch for ch in text)


def width(text: str) -> int:
    """Columns `text` takes in a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, cols: int, right: bool = False) -> str:
    """Pad (or cut, ending in '…') to exactly `cols` terminal columns."""
    if width(text) > cols:
        out, used = "", 0
        for ch in text:
            w = width(ch)
            if used + w > cols - 1:
                break
            out += ch
            used += w
        text = out + "…"
    fill = " " * (cols - width(text))
    return fill + text if right else text + fill


def _number(value: object) -> TypeGuard[float]:
    """A finite int or float; anything else (None, text, true/false, NaN) shows as '-'."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and abs(value) < 1e300
    except OverflowError:  # an int too large for a float
        return False


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals (0.5 -> 50.00%), else '-'."""
    return f"{100 * value:.2f}%" if _number(value) else "-"


def num(value: float | None, digits: int = 4) -> str:
    """A number with `digits` decimals, else '-'."""
    return f"{value:.{digits}f}" if _number(value) else "-"


def count(value: object) -> str:
    """A whole number with thousands separators (a parameter count), else '-'."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


# The two duration formats, one definition each: `seconds` where a terminal is narrow (progress
# lines, --status, the TUI), `duration` in report tables (Markdown, LaTeX, CSV-side text).


def _clock(value: float) -> tuple[int, int, int]:
    """Whole hours, minutes and seconds in `value` seconds, rounded to the second."""
    m, s = divmod(round(value), 60)
    h, m = divmod(m, 60)
    return h, m, s


def seconds(value: float | None) -> str:
    """A duration for the terminal: 10.3s, 4:53, 1:02:03; '-' for none."""
    if not _number(value):
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    h, m, s = _clock(value)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def duration(value: float) -> str:
    """A duration for reports: 49.1 s, 12 min 05 s, 1 h 02 min; '–' for NaN or infinity."""
    if not math.isfinite(value):
        return "–"
    if value < 120:
        return f"{value:.1f} s"
    h, m, s = _clock(value)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain aligned text table that keeps CJK columns straight."""
    right = right or set()
    cols = [max([width(h)] + [width(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(pad(h, cols[i], i in right) for i, h in enumerate(headers))]
    lines.append("  ".join("-" * c for c in cols))
    for r in rows:
        lines.append("  ".join(pad(v, cols[i], i in right) for i, v in enumerate(r)))
    return "\n".join(line.rstrip() for line in lines)


def one_line(exc: BaseException) -> str:
    """An exception as `Type: first line of its message`."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
