"""The report's figures, drawn with matplotlib's object API: `Figure` + the Agg canvas.

No pyplot, so nothing registers with a GUI backend or a global figure list, and figures can
be built from a worker thread. rcParams are process-global, though (and tick labels read
them when they are drawn), so every figure is built *and* rendered under one lock inside
`matplotlib.rc_context(style)`: two exports in two threads take turns instead of seeing each
other's settings.

Fonts: experiment titles may be Chinese, which matplotlib's bundled DejaVu Sans cannot
draw. `find_cjk_font()` looks for an installed CJK font and, when there is one, it follows
DejaVu Sans in `font.family`, so matplotlib falls back to it glyph by glyph (PNG, SVG and
PDF alike). Without one, a label that DejaVu cannot draw falls back to the experiment's
name, and the export says once which package to install.
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .history import History, Metrics, moving_average

DPI = 300  # print resolution for PNG, and for the rasterised raw curve inside SVG/PDF
WINDOW = 100  # batches in the moving average, as in the report
BASE_FONT = "DejaVu Sans"  # bundled with matplotlib, so always present

# Families known to cover Chinese, best first; any other installed font whose name hints at
# CJK is accepted too when its character map actually holds Chinese glyphs.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "SimHei",
    "Sarasa Gothic SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
)
_CJK_HINTS = ("cjk", "hei", "han", "song", "ming", "kai", "gothic", "mincho", "fallback", "unifont")
_CJK_PROBE = "基准配置学习率正则化"
# Scripts a CJK font covers: Hangul, CJK radicals to unified ideographs (with kana and
# bopomofo), compatibility ideographs and forms, full-width forms, and the ideograph planes.
_CJK_RANGES = (
    (0x1100, 0x11FF),
    (0x2E80, 0x9FFF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7FF),
    (0xF900, 0xFAFF),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
    (0x20000, 0x3FFFF),
)
# Variation selectors only choose between a character's text and emoji look; matplotlib
# draws neither differently, and no font maps them, so they are left out of labels.
_VARIATION_SELECTORS = dict.fromkeys(range(0xFE00, 0xFE10))
FONT_HINT = (
    "no CJK font found, so Chinese titles are shown by experiment name in figures; "
    "install one (Debian/Ubuntu: apt install fonts-noto-cjk or fonts-wqy-microhei; "
    "Fedora: google-noto-sans-cjk-fonts; macOS and Windows ship one) and export again"
)

_render_lock = threading.Lock()


# ---------------------------------------------------------------------------------------
# Fonts


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _covers(path: str, text: str) -> bool:
    cmap = _charmap(path)
    return all(ord(c) in cmap for c in text if not c.isspace())


@functools.cache
def find_cjk_font() -> str | None:
    """The family name of an installed font that draws Chinese, or None."""
    by_name: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, entry.fname)
    for family in CJK_FAMILIES:
        if family in by_name and _covers(by_name[family], _CJK_PROBE):
            return family
    for family, path in sorted(by_name.items()):
        if any(h in family.lower() for h in _CJK_HINTS) and _covers(path, _CJK_PROBE):
            return family
    return None


@functools.cache
def _font_path(family: str) -> str:
    prop = font_manager.FontProperties(family=family)
    return font_manager.findfont(prop, fallback_to_default=True)


@dataclass(frozen=True)
class Fonts:
    """The font families figures are drawn with, and which labels they can draw."""

    families: tuple[str, ...]

    @classmethod
    def detect(cls) -> Fonts:
        cjk = find_cjk_font()
        return cls((BASE_FONT, cjk) if cjk else (BASE_FONT,))

    @property
    def has_cjk(self) -> bool:
        return len(self.families) > 1

    def missing(self, text: str) -> str:
        """The characters of `text` that none of the families draws, each once."""
        maps = [_charmap(_font_path(f)) for f in self.families]
        text = text.translate(_VARIATION_SELECTORS)
        lacking = (c for c in text if not c.isspace() and not any(ord(c) in m for m in maps))
        return "".join(dict.fromkeys(lacking))

    def can_draw(self, text: str) -> bool:
        """True when every character of `text` is in one of the families."""
        return not self.missing(text)

    def label(self, title: str, name: str) -> str:
        """The title when it can be drawn, else the (ASCII) experiment name."""
        return title.translate(_VARIATION_SELECTORS) if title and self.can_draw(title) else name


def is_cjk(ch: str) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in _CJK_RANGES)


def font_notes(fonts: Fonts, titles: dict[str, str]) -> list[str]:
    """What to tell the user about the titles that figures show by experiment name: install
    a CJK font only when a CJK character lacks one; name any other character no font draws."""
    missing = {name: fonts.missing(title) for name, title in titles.items()}
    missing = {name: chars for name, chars in missing.items() if chars}
    chars = "".join(dict.fromkeys("".join(missing.values())))
    notes = []
    if not fonts.has_cjk and any(is_cjk(c) for c in chars):
        notes.append(FONT_HINT)
    other = [c for c in chars if fonts.has_cjk or not is_cjk(c)]
    if other:
        names = [n for n, m in missing.items() if any(c in other for c in m)]
        shown = ", ".join(f"{c} (U+{ord(c):04X})" for c in other[:5])
        notes.append(
            f"no installed font draws {shown}{', ...' if len(other) > 5 else ''}, used in the "
            f"title of {', '.join(names)}; figures show {'it' if len(names) == 1 else 'them'} "
            "by experiment name"
        )
    return notes


def style(fonts: Fonts) -> dict[str, Any]:
    """rcParams for every report figure."""
    return {
        "font.family": list(fonts.families),
        "font.size": 9,
        # Normal weight throughout: CJK fonts rarely ship a bold face, and a title half bold
        # (Latin) and half regular (CJK fallback) looks broken.
        "axes.titlesize": 10,
        "axes.titleweight": "normal",
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#dddddd",
        "grid.linewidth": 0.6,
        "axes.axisbelow": True,
        "legend.fontsize": 8.5,
        "legend.frameon": True,
        "legend.framealpha": 0.85,
        "legend.edgecolor": "none",
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "figure.titlesize": 12,
        "figure.titleweight": "normal",
        "axes.unicode_minus": True,
        "savefig.facecolor": "white",
        "svg.fonttype": "path",  # text as outlines: the CJK font need not be installed to view
        "pdf.fonttype": 42,  # embedded TrueType, text stays selectable
    }


# ---------------------------------------------------------------------------------------
# Rendering


@contextmanager
def drawing(fonts: Fonts) -> Iterator[None]:
    """Hold the render lock with the report style applied; build and render inside it."""
    with _render_lock, matplotlib.rc_context(style(fonts)):
        yield


def render(fig: Figure, fmt: str, dpi: int = DPI) -> bytes:
    """The figure encoded as `fmt` (png, svg or pdf); call inside `drawing()`."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    metadata = {"Software": "cnntui"} if fmt == "png" else {"Creator": "cnntui"}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def render_all(fig: Figure, formats: tuple[str, ...], dpi: int = DPI) -> dict[str, bytes]:
    """The figure in each format. The layout is solved once, for the first format: it is in
    inches, the same at every dpi, and solving it is half the cost of a figure."""
    out = {}
    for fmt in formats:
        out[fmt] = render(fig, fmt, dpi)
        fig.set_layout_engine("none")
    return out


# ---------------------------------------------------------------------------------------
# What is drawn


@dataclass(frozen=True)
class Series:
    """One experiment's latest run as the figures see it."""

    name: str
    label: str  # what legends and titles show
    color: str
    history: History
    metrics: Metrics
    status: str = "finished"  # anything else is marked in the figures
    planned_epochs: int = 0

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def colors(n: int) -> list[str]:
    """`n` distinct colours; tab10 (the report's colours, in the report's order) up to 10."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [matplotlib.colors.to_hex(cmap(i % cmap.N)) for i in range(n)]


def _finite(values: list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan)


def _epochs(values: list[float]) -> np.ndarray:
    return np.arange(1, len(values) + 1)


def envelope(
    x: np.ndarray, y: np.ndarray, bins: int = 1500
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The lowest and highest `y` of each of `bins` runs of points, at each run's middle `x`;
    None when there are few enough points to draw them one by one. At print width a dense
    curve *is* this band: a CIFAR run at batch size 4 has 125,000 batch losses, and drawing
    them as a line costs seconds per figure for the same picture."""
    n = y.size
    k = math.ceil(n / bins)
    if k <= 3:
        return None
    pad = k * math.ceil(n / k) - n
    blocks = np.concatenate([y, np.full(pad, np.nan)]).reshape(-1, k)
    xs = np.concatenate([x, np.full(pad, x[-1])]).astype(np.float64).reshape(-1, k)
    missing = np.isnan(blocks)
    lo = np.where(missing, np.inf, blocks).min(axis=1)
    hi = np.where(missing, -np.inf, blocks).max(axis=1)
    empty = missing.all(axis=1)  # a gap in the band, like NaN in a line
    return xs.mean(axis=1), np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def _robust_top(raw: np.ndarray) -> float | None:
    """A y-axis top a little above the 99.5th percentile, when a few spikes (or a divergence)
    would otherwise flatten the rest of the curve; None when the full range reads fine."""
    v = raw[np.isfinite(raw)]
    if v.size < 2 * WINDOW:
        return None
    lo, top = float(v.min()), float(np.percentile(v, 99.5))
    if float(v.max()) - lo <= 1.5 * (top - lo):
        return None
    return top + 0.1 * (top - lo)


def _thousands(value: float, _pos: int | None = None) -> str:
    """Batch indices as 25k, 100k: CIFAR at batch size 4 runs to 125,000 batches."""
    return f"{value / 1000:g}k" if abs(value) >= 10_000 else f"{value:g}"


def _batch_panel(ax: Axes, s: Series, legend: bool) -> None:
    raw = _finite(s.history.batch_losses)
    x = np.asarray(s.history.batch_indices)
    if raw.size == 0:
        ax.text(0.5, 0.5, "no batches yet", ha="center", va="center", transform=ax.transAxes)
        return
    band = envelope(x, raw)
    if band is None:
        ax.plot(x, raw, color=s.color, alpha=0.3, lw=0.5, label="per batch")
    else:
        ax.fill_between(*band, color=s.color, alpha=0.25, lw=0, label="per batch")
    smooth = moving_average(np.nan_to_num(raw, nan=np.nanmean(raw)), WINDOW)
    step = max(1, raw.size // 4000)  # the average is smooth: every step-th point will do
    keep = np.r_[np.arange(0, raw.size, step), raw.size - 1]
    ax.plot(x[keep], smooth[keep], color=s.color, lw=1.6, label=f"{WINDOW}-batch moving average")
    top = _robust_top(raw)
    if top is not None:
        ax.set_ylim(top=top)
        clipped = int(np.sum(raw > top))
        ax.text(
            0.99,
            0.02 if legend else 0.98,
            f"{clipped} batch loss(es) above {top:.3g} not shown",
            ha="right",
            va="bottom" if legend else "top",
            transform=ax.transAxes,
            fontsize=7,
            color="#666666",
        )
    ax.set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    if legend:
        leg = ax.legend(loc="upper right")
        for handle in leg.legend_handles:  # the faint raw curve needs a visible key
            handle.set_alpha(min(1.0, 2.5 * (handle.get_alpha() or 0.4)))


def _status_note(s: Series) -> str:
    if s.finished:
        return ""
    return f" ({s.status}, {s.history.epochs_done}/{s.planned_epochs} epochs)"


def loss_curves(s: Series) -> Figure:
    """Figure 1: batch loss with its moving average; mean train and test loss per epoch."""
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    fig.suptitle(f"{s.label}{_status_note(s)}: training loss")
    _batch_panel(top, s, legend=True)
    top.set_title("Loss per batch")
    top.set_xlabel("batch (global index)")
    top.set_ylabel("cross-entropy loss")

    h = s.history
    if h.epoch_losses:
        bottom.plot(
            _epochs(h.epoch_losses),
            _finite(h.epoch_losses),
            color=s.color,
            marker="o",
            ms=4,
            label="train loss (mean over the epoch's batches)",
        )
        bottom.plot(
            _epochs(h.test_loss),
            _finite(h.test_loss),
            color=s.color,
            ls="--",
            marker="s",
            ms=4,
            mfc="white",
            label="test loss",
        )
        bottom.legend(loc="upper right")
        bottom.set_xlim(0.75, max(len(h.epoch_losses), 2) + 0.25)
    else:
        bottom.text(0.5, 0.5, "no epoch finished yet", ha="center", transform=bottom.transAxes)
    bottom.set_title("Mean loss per epoch")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("cross-entropy loss")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _grid_shape(n: int) -> tuple[int, int]:
    ncols = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3, 9: 3}.get(n, 4)
    return math.ceil(n / ncols), ncols


def loss_grid(series: list[Series], title: str) -> Figure:
    """Figure 2: one panel per experiment, its batch loss and moving average."""
    rows, cols = _grid_shape(len(series))
    fig = Figure(figsize=(3 * cols + 0.5, 2.5 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    fig.suptitle(f"{title}: loss per batch, with {WINDOW}-batch moving average")
    for i, ax in enumerate(axes):
        if i >= len(series):
            ax.set_axis_off()
            continue
        s = series[i]
        _batch_panel(ax, s, legend=False)
        ax.set_title(s.label + _status_note(s), color=s.color)
        if i // cols == rows - 1 or i + cols >= len(series):
            ax.set_xlabel("batch")
        if i % cols == 0:
            ax.set_ylabel("loss")
    return fig


def comparison(series: list[Series], title: str) -> Figure:
    """Figure 3 (and 4): (a) train loss per epoch, (b) test accuracy per epoch, (c) final test
    accuracy, (d) final train loss against final test accuracy, one colour per experiment."""
    n = len(series)
    fig = Figure(figsize=(10, 7.75), layout="constrained")
    (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    fig.suptitle(f"{title}: {n} experiment{'s' if n != 1 else ''} compared")

    max_epochs = max((len(s.history.test_acc) for s in series), default=1)
    for s in series:
        h = s.history
        ls = "-" if s.finished else ":"
        ax_a.plot(
            _epochs(h.epoch_losses), _finite(h.epoch_losses), color=s.color, ls=ls, marker="o", ms=3
        )
        ax_b.plot(
            _epochs(h.test_acc),
            _finite(h.test_acc),
            color=s.color,
            ls=ls,
            marker="o",
            ms=3,
            label=s.label + _status_note(s),
        )
    for ax, name, ylabel in (
        (ax_a, "(a) Training loss per epoch", "mean cross-entropy loss"),
        (ax_b, "(b) Test accuracy per epoch", "test accuracy"),
    ):
        ax.set_title(name, loc="left")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.75, max(max_epochs, 2) + 0.25)
    ax_b.set_ylim(bottom=0)

    # (c) bars, labelled with their value; unfinished runs hatched.
    x = np.arange(n)
    final = np.array([s.metrics.final_test_acc for s in series], dtype=np.float64)
    bars = ax_c.bar(
        x,
        np.nan_to_num(final, nan=0.0),
        width=0.6 if n > 2 else 0.45,
        color=[s.color for s in series],
        hatch=[None if s.finished else "//" for s in series],
        edgecolor="white",
    )
    ax_c.bar_label(
        bars,
        labels=["–" if math.isnan(v) else f"{v * 100:.1f}%" for v in final],
        padding=2,
        fontsize=8,
    )
    ax_c.set_xticks(x, [s.label for s in series])
    if n > 4:
        for label in ax_c.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    top = np.nanmax(final) if np.isfinite(final).any() else 1.0
    ax_c.set_ylim(0, min(1.0, top * 1.18) if top > 0 else 1.0)
    ax_c.set_title("(c) Final test accuracy", loc="left")
    ax_c.set_ylabel("test accuracy")
    ax_c.grid(axis="x", visible=False)
    if n <= 2:
        ax_c.set_xlim(-0.8, n - 0.2)

    # (d) scatter, each point labelled.
    points = []
    for s in series:
        m = s.metrics
        if math.isnan(m.final_train_loss) or math.isnan(m.final_test_acc):
            continue
        points.append((m.final_train_loss, m.final_test_acc, s))
        ax_d.scatter(
            m.final_train_loss,
            m.final_test_acc,
            s=46,
            color=s.color,
            edgecolor="white" if s.finished else s.color,
            facecolor=s.color if s.finished else "white",
            lw=1.2,
            zorder=3,
        )
    ax_d.margins(x=0.25, y=0.15)
    ax_d.autoscale_view()
    _label_points(ax_d, points, fig)
    ax_d.set_title("(d) Final training loss vs final test accuracy", loc="left")
    ax_d.set_xlabel("final training loss")
    ax_d.set_ylabel("final test accuracy")

    for ax in (ax_b, ax_c, ax_d):  # whole percents, unless the axis spans only a few
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if hi - lo >= 0.05 else 1))
    fig.legend(
        *ax_b.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=n if n <= 4 else math.ceil(n / 2),
    )
    if not all(s.finished for s in series):
        fig.text(
            0.995,
            0.005,
            "dotted / hatched / hollow: run not finished",
            ha="right",
            va="bottom",
            fontsize=7,
            color="#666666",
        )
    return fig


def _label_points(ax: Axes, points: list[tuple[float, float, Series]], fig: Figure) -> None:
    """Label each scatter point, nudging labels up so that close points stay readable; a
    thin leader line joins a label that had to move to its point."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fig_w, fig_h = fig.get_size_inches()
    box = ax.get_position()
    size_in = 8 / 72  # 8 pt labels
    line_h = 1.3 * size_in / (box.height * fig_h)  # in axes fractions

    def width(text: str) -> float:
        ems = sum(1.0 if ord(c) > 0x2E7F else 0.6 for c in text)
        return ems * size_in / (box.width * fig_w)

    placed: list[tuple[float, float, float]] = []  # left, bottom, width
    for x, y, s in sorted(points, key=lambda p: p[1]):
        fx, fy = (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)
        w = width(s.label)
        lx = fx + 0.02 if fx + 0.02 + w <= 1.0 else fx - 0.02 - w
        home = fy - line_h / 2

        def free(bottom: float, lx: float = lx, w: float = w) -> bool:
            return not any(
                left < lx + w and lx < left + pw and abs(b - bottom) < 0.999 * line_h
                for left, b, pw in placed
            )

        # Nearest free slot, half a line at a time, above or below: a cluster of points
        # gets its labels stacked around it. 4n + 2 half-lines each way always hold one.
        steps = (k // 2 * (-1 if k % 2 else 1) for k in range(2, 8 * len(placed) + 6))
        ly = next((home + d * line_h / 2 for d in (0, *steps) if free(home + d * line_h / 2)), home)
        placed.append((lx, ly, w))
        moved = abs(ly - home) > 0.3 * line_h
        ax.annotate(
            s.label,
            (x, y),
            xytext=(lx, ly + line_h / 2),
            textcoords="axes fraction",
            va="center",
            fontsize=8,
            color=s.color,
            arrowprops={"arrowstyle": "-", "color": s.color, "lw": 0.6, "shrinkB": 4}
            if moved
            else None,
        )
