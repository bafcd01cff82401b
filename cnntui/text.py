"""Terminal text helpers: display width of CJK text, padding, and number formatting."""

from __future__ import annotations

import math
import unicodedata


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


def pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    m, s = divmod(round(value), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
