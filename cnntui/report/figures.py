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

Math: matplotlib reads text between two `$` as mathtext, and a title it cannot parse
(`costs $5 {and $6`, `$\\textbf{lr}$`) would stop the export at its first figure. Such a
title is drawn as plain text instead (`plain_unless_math`), and the export says so once.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.mathtext import MathTextParser, VectorParse
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from matplotlib.transforms import Bbox

from ..core.history import MA_WINDOW, History, Metrics, moving_average
from ..runs.records import RunStatus
from . import stats

DPI = 300  # print resolution for PNG, and for the rasterised raw curve inside SVG/PDF
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
_math_lock = threading.Lock()  # the parser caches what it parsed; one thread at a time


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
    known = [f for f in CJK_FAMILIES if f in by_name]
    hinted = [f for f in sorted(by_name) if any(h in f.lower() for h in _CJK_HINTS)]
    return next((f for f in known + hinted if _covers(by_name[f], _CJK_PROBE)), None)


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
        """The fonts this machine has for figures: the base font, and a CJK one if any."""
        cjk = find_cjk_font()
        return cls((BASE_FONT, cjk) if cjk else (BASE_FONT,))

    @property
    def has_cjk(self) -> bool:
        """Whether a font for Chinese, Japanese and Korean text was found."""
        return len(self.families) > 1

    def missing(self, text: str) -> str:
        """The characters of `text` that none of the families draws, each once."""
        maps = [_charmap(_font_path(f)) for f in self.families]
        text = text.translate(_VARIATION_SELECTORS)
        lacking = (c for c in text if not c.isspace() and not any(ord(c) in m for m in maps))
        return "".join(dict.fromkeys(lacking))

    def label(self, title: str, name: str) -> str:
        """The title when it can be drawn (as plain text where it is not valid math), else
        the (ASCII) experiment name."""
        if not title or self.missing(title):
            return name
        return plain_unless_math(title.translate(_VARIATION_SELECTORS))


@functools.cache
def _math_parser() -> MathTextParser[VectorParse]:
    return MathTextParser("path")


def _bad_math(text: str) -> bool:
    """Whether matplotlib would read `text` as mathtext (an even number of unescaped `$`,
    its own rule) and fail to parse it."""
    dollars = text.count("$") - text.count(r"\$")
    if dollars == 0 or dollars % 2:
        return False  # drawn as plain text already
    with _math_lock:
        try:
            _math_parser().parse(text)
        except Exception:  # ValueError for bad syntax; no title may stop an export
            return True
    return False


def plain_unless_math(text: str) -> str:
    """`text` as figures draw it: unchanged where it is plain text or valid mathtext, with
    every `$` escaped (drawn as a dollar sign) where matplotlib could not parse it."""
    if not _bad_math(text):
        return text
    return text.replace(r"\$", "$").replace("$", r"\$")


def math_notes(titles: dict[str, str]) -> list[str]:
    """One note naming the experiments whose title is not valid mathtext (figures draw those
    as plain text); none when every title is fine."""
    bad = [name for name, title in titles.items() if _bad_math(title)]
    if not bad:
        return []
    which = f"title of {bad[0]} is" if len(bad) == 1 else f"titles of {', '.join(bad)} are"
    return [
        f"the {which} not valid matplotlib mathtext (between $ signs); figures draw "
        f"{'it' if len(bad) == 1 else 'them'} as plain text"
    ]


def is_cjk(ch: str) -> bool:
    """Whether `ch` is a Chinese, Japanese or Korean character."""
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
    with _render_lock, matplotlib.rc_context(style(fonts)):  # type: ignore[arg-type]  # str keys
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
    status: RunStatus = RunStatus.FINISHED  # anything else is marked in the figures
    planned_epochs: int = 0
    data: str = ""  # what it was measured on: "CIFAR-10, 50,000 train / 10,000 test images"
    seeds: tuple[History, ...] = ()  # each seed's counted run, for mean ± std (stats.py)

    @property
    def finished(self) -> bool:
        """Whether the run trained every epoch (figures mark the others)."""
        return self.status == RunStatus.FINISHED


def colors(n: int) -> list[str]:
    """`n` distinct colours; tab10 (the report's colours, in the report's order) up to 10."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [matplotlib.colors.to_hex(cmap(i % cmap.N)) for i in range(n)]


# Runs whose curves coincide (the same losses, or several at chance level) must all stay
# visible: each series of a figure gets its own marker and dash pattern, and a series drawn
# earlier is drawn a little wider, with a larger marker, so one drawn on top of it leaves its
# outline showing. Marker and dash pairs repeat only after 40 series.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
DASHES = ("-", (0, (5, 1.6)), (0, (5, 1.5, 1.2, 1.5)), (0, (1.3, 1.3)), (0, (8, 2, 1.3, 2, 1.3, 2)))


@dataclass(frozen=True)
class Look:
    """How one series of a multi-series figure is drawn."""

    marker: str
    dashes: Any  # a Line2D linestyle
    lw: float
    ms: float  # marker size in points
    zorder: float


def looks(n: int) -> list[Look]:
    """The look of each of `n` series, in drawing order: widest and largest first."""
    spread = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]  # 0 for the first, 1 the last
    return [
        Look(marker, dashes, lw=2.2 - 0.9 * t, ms=7.5 - 2.5 * t, zorder=2 + 0.01 * i)
        for i, (t, marker, dashes) in enumerate(zip(spread, cycle(MARKERS), cycle(DASHES)))
    ]


def _data_line(series: list[Series]) -> str:
    """What the series were measured on; which ones used which, when they differ."""
    by_data: dict[str, list[str]] = {}
    for s in series:
        if s.data:
            by_data.setdefault(s.data, []).append(s.label)
    if len(by_data) <= 1:
        return next(iter(by_data), "")
    return "\n".join(f"{d} ({', '.join(labels)})" for d, labels in by_data.items())


def _suptitle(fig: Figure, title: str, series: list[Series]) -> None:
    """The figure's title, with the data it was measured on as its second line: a figure
    pasted into a report must not pass synthetic data off as CIFAR-10."""
    data = _data_line(series)
    fig.suptitle(f"{title}\n{data}" if data else title)


def _legend_above(ax: Axes) -> Any:
    """The axes' legend in one row above its top right corner, outside the data; the axes'
    title goes on the left of the same strip."""
    return ax.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.01),
        ncol=len(ax.get_legend_handles_labels()[0]),
        borderaxespad=0.0,
        borderpad=0.2,
        columnspacing=1.2,
        frameon=False,
    )


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
    if v.size < 2 * MA_WINDOW:
        return None
    lo, top = float(v.min()), float(np.percentile(v, 99.5))
    if float(v.max()) - lo <= 1.5 * (top - lo):
        return None
    return top + 0.1 * (top - lo)


def _smoothed(raw: np.ndarray) -> np.ndarray:
    return moving_average(np.nan_to_num(raw, nan=np.nanmean(raw)), MA_WINDOW)


def _shared_ylim(series: list[Series]) -> tuple[float, float, float | None] | None:
    """One y range for every panel of a grid: from the lowest batch loss up to the highest
    panel top, where each panel's top is its highest loss, or a robust top when a few of its
    losses spike far above the rest (as one divergent batch does), so that a spike in one
    panel does not flatten them all. Never below a moving average. Also the cut, if any."""
    parts = [_finite(s.history.batch_losses) for s in series]
    parts = [p for p in parts if np.isfinite(p).any()]
    if not parts:
        return None
    lo = min(float(np.nanmin(p)) for p in parts)
    hi = max(float(np.nanmax(p)) for p in parts)
    top = max(_robust_top(p) or float(np.nanmax(p)) for p in parts)
    top = max(top, max(float(_smoothed(p).max()) for p in parts))
    if top >= hi:
        pad = 0.04 * (hi - lo) or 0.05
        return lo - pad, hi + pad, None
    return lo - 0.04 * (top - lo), top, top


def _thousands(value: float, _pos: int | None = None) -> str:
    """Batch indices as 25k, 100k: CIFAR at batch size 4 runs to 125,000 batches."""
    return f"{value / 1000:g}k" if abs(value) >= 10_000 else f"{value:g}"


def _batch_panel(ax: Axes, s: Series) -> None:
    """The batch losses (faint, or their envelope when dense) and their moving average."""
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
    smooth = _smoothed(raw)
    step = max(1, raw.size // 4000)  # the average is smooth: every step-th point will do
    keep = np.r_[np.arange(0, raw.size, step), raw.size - 1]
    ax.plot(x[keep], smooth[keep], color=s.color, lw=1.6, label=f"{MA_WINDOW}-batch moving average")
    ax.set_xlim(x[0], x[-1] if x[-1] > x[0] else x[0] + 1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))


def _above(s: Series, cut: float) -> int:
    return int(np.sum(_finite(s.history.batch_losses) > cut))


def _status_note(s: Series) -> str:
    if s.finished:
        return ""
    return f" ({s.status}, {s.history.epochs_done}/{s.planned_epochs} epochs)"


def loss_curves(s: Series) -> Figure:
    """Figure 1: batch loss with its moving average; mean train and test loss per epoch."""
    rates = _finite(s.history.lr)
    known = rates[np.isfinite(rates)]
    varies = known.size > 1 and float(known.min()) != float(known.max())
    if varies:  # a schedule: the rate of every epoch in a small panel of its own
        fig = Figure(figsize=(7, 7), layout="constrained")
        top, bottom, rate = fig.subplots(3, 1, height_ratios=(3, 2, 1.2), sharex=False)
    else:
        fig = Figure(figsize=(7, 5.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    _suptitle(fig, f"{s.label}{_status_note(s)}: training loss", [s])
    _loss_per_batch(top, s)
    constant = f" (lr {known[0]:.3g} throughout)" if known.size and not varies else ""
    _loss_per_epoch(bottom, s, f"Mean loss per epoch{constant}")
    if varies:
        epochs = _epochs(s.history.lr)
        rate.plot(epochs, rates, color="#555555", marker=".", ms=5, drawstyle="steps-mid")
        rate.set_title("Learning rate per epoch", loc="left")
        rate.set(xlabel="epoch", ylabel="lr", xlim=bottom.get_xlim())
        rate.xaxis.set_major_locator(MaxNLocator(integer=True))
        rate.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return fig


def _loss_per_batch(ax: Axes, s: Series) -> None:
    """Figure 1's top panel: every batch's loss and its moving average, a spike cut off."""
    _batch_panel(ax, s)
    title = "Loss per batch"
    raw = _finite(s.history.batch_losses)
    cut = _robust_top(raw)
    if cut is not None:  # the margin below as for the range shown, not the spike's
        lo = float(np.nanmin(raw))
        ax.set_ylim(lo - 0.04 * (cut - lo), cut)
        title += f" ({_above(s, cut)} above {cut:.3g} not shown)"
    ax.set_title(title, loc="left")
    ax.set(xlabel="batch (global index)", ylabel="cross-entropy loss")
    if s.history.batch_losses:
        leg = _legend_above(ax)
        for handle in leg.legend_handles:  # the faint raw curve needs a visible key
            handle.set_alpha(min(1.0, 2.5 * (handle.get_alpha() or 0.4)))


def _loss_per_epoch(ax: Axes, s: Series, title: str) -> None:
    """Figure 1's lower panel: mean train loss, test loss (and validation loss) per epoch."""
    h = s.history
    curves: list[tuple[str, list[float], dict[str, Any]]] = [
        ("train loss (epoch mean)", h.epoch_losses, {"marker": "o"}),
        ("test loss", h.test_loss, {"ls": "--", "marker": "s", "mfc": "white"}),
    ]
    if h.has_validation:
        curves.append(("validation loss", h.val_loss, {"ls": ":", "marker": "^"}))
    if h.epoch_losses:
        for label, values, look in curves:
            ax.plot(_epochs(values), _finite(values), color=s.color, ms=4, label=label, **look)
        _legend_above(ax)
        ax.set_xlim(0.75, max(len(h.epoch_losses), 2) + 0.25)
    else:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", transform=ax.transAxes)
    ax.set_title(title, loc="left")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grid_shape(n: int) -> tuple[int, int]:
    ncols = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3, 9: 3}.get(n, 4)
    return math.ceil(n / ncols), ncols


def loss_grid(series: list[Series], title: str) -> Figure:
    """Figure 2: one panel per experiment, its batch loss and moving average, all on one y
    scale so that a flat run looks flat beside one that learns."""
    rows, cols = _grid_shape(len(series))
    fig = Figure(figsize=(3 * cols + 0.5, 2.5 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    _suptitle(fig, f"{title}: loss per batch, with {MA_WINDOW}-batch moving average", series)
    limits = _shared_ylim(series)
    cut = limits[2] if limits else None
    clipped = []
    for i, ax in enumerate(axes):
        if i >= len(series):
            ax.set_axis_off()
            continue
        s = series[i]
        _batch_panel(ax, s)
        ax.set_title(s.label + _status_note(s), color=s.color)
        if i // cols == rows - 1 or i + cols >= len(series):
            ax.set_xlabel("batch")
        if i % cols == 0:
            ax.set_ylabel("loss")
        if cut is not None and _above(s, cut):
            clipped.append(f"{s.label}: {_above(s, cut)}")
    if limits:
        axes[0].set_ylim(limits[0], limits[1])  # shared: every panel
    if clipped:
        fig.supxlabel(
            f"y axis cut at {cut:.3g}; batch losses above it not shown ({', '.join(clipped)})",
            fontsize=7.5,
            color="#666666",
        )
    return fig


def comparison(series: list[Series], title: str) -> Figure:
    """Figure 3 (and 4): (a) train loss per epoch, (b) test accuracy per epoch, (c) final test
    accuracy, (d) final train loss against final test accuracy, one colour per experiment."""
    n = len(series)
    fig = Figure(figsize=(10, 7.75), layout="constrained")
    (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    _suptitle(fig, f"{title}: {n} experiment{'s' if n != 1 else ''} compared", series)
    styles = looks(n)
    _epoch_panels(ax_a, ax_b, series, styles)
    _final_bars(ax_c, series)
    points = _final_scatter(ax_d, series, styles)
    for ax in (ax_b, ax_c, ax_d):  # whole percents, unless the axis spans only a few
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if hi - lo >= 0.05 else 1))
    fig.legend(
        *ax_b.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=n if n <= 4 else math.ceil(n / 2),
        title=None if all(s.finished for s in series) else "hollow / hatched: run not finished",
        title_fontsize=7.5,
    )
    _label_points(ax_d, points, fig)  # last: it places labels on the solved layout
    return fig


def _line_style(s: Series, look: Look) -> dict[str, Any]:
    """The Line2D keywords of one series in the comparison's curves."""
    return {
        "color": s.color,
        "ls": look.dashes,
        "lw": look.lw,
        "marker": look.marker,
        "ms": look.ms,
        "zorder": look.zorder,
        # White-edged filled markers keep stacked ones apart; hollow: not finished.
        "mec": "white" if s.finished else s.color,
        "mew": 0.6 if s.finished else 1.3,
        "mfc": s.color if s.finished else "white",
    }


def _epoch_panels(ax_a: Axes, ax_b: Axes, series: list[Series], styles: list[Look]) -> None:
    """Panels (a) train loss and (b) test accuracy per epoch; several seeds: mean ± std."""
    max_epochs = max((len(s.history.test_acc) for s in series), default=1)
    max_epochs = max([max_epochs] + [len(h.test_acc) for s in series for h in s.seeds])
    for s, look in zip(series, styles, strict=True):
        h, line = s.history, _line_style(s, look)
        if len(s.seeds) > 1:  # the mean over seeds, with a shaded band of ± one std
            _band(ax_a, s, "epoch_losses", line)
            _band(ax_b, s, "test_acc", line, f"{s.label} (mean ± std, n={len(s.seeds)})")
            continue
        ax_a.plot(_epochs(h.epoch_losses), _finite(h.epoch_losses), **line)
        ax_b.plot(_epochs(h.test_acc), _finite(h.test_acc), label=s.label + _status_note(s), **line)
    for ax, name, ylabel in (
        (ax_a, "(a) Training loss per epoch", "mean cross-entropy loss"),
        (ax_b, "(b) Test accuracy per epoch", "test accuracy"),
    ):
        ax.set_title(name, loc="left")
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.75, max(max_epochs, 2) + 0.25)
    ax_b.set_ylim(bottom=0)


def _final_bars(ax: Axes, series: list[Series]) -> None:
    """Panel (c): final test accuracy bars, labelled with their value; unfinished runs
    hatched. With several seeds: the mean, an error bar of ± one std, every seed as a dot."""
    n = len(series)
    x = np.arange(n)
    finals = [seed_finals(s) for s in series]
    final = np.array([s.metrics.final_test_acc for s in series], dtype=np.float64)
    spread = np.zeros(n)
    for i, f in enumerate(finals):
        if len(f) > 1:
            final[i], spread[i] = f.mean(), f.std(ddof=1)
    width = 0.6 if n > 2 else 0.45
    bars = ax.bar(
        x,
        np.nan_to_num(final, nan=0.0),
        width=width,
        color=[s.color for s in series],
        hatch=[None if s.finished else "//" for s in series],
        edgecolor="white",
    )
    seeded = any(len(f) > 1 for f in finals)
    if seeded:
        _seed_spread(ax, final, spread, finals, width)
    else:
        ax.bar_label(bars, labels=[_percent(v) for v in final], padding=2, fontsize=8)
    labels = [s.label for s in series]
    if n > 4 or sum(len(label) for label in labels) > 60:  # side by side they would overlap
        ax.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, labels)
    tops = np.concatenate([final + spread, *finals]) if seeded else final
    top = np.nanmax(tops) if np.isfinite(tops).any() else 1.0
    room = top * (1.25 if seeded else 1.18) if top > 0 else 1.0
    if room > 1.0 and top > 0.9:  # labels over bars near 100 %: room above, no tick past it
        ax.set_ylim(0, room)
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 1.0])
    else:
        ax.set_ylim(0, min(1.0, room))
    ax.set_title(
        "(c) Final test accuracy" + (" (mean ± std; dots: seeds)" if seeded else ""), loc="left"
    )
    ax.set_ylabel("test accuracy")
    ax.grid(axis="x", visible=False)
    if n <= 2:
        ax.set_xlim(-0.8, n - 0.2)


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.1f}%"


def _seed_spread(
    ax: Axes, final: np.ndarray, spread: np.ndarray, finals: list[np.ndarray], width: float
) -> None:
    """On panel (c): ± one std error bars, each seed as a dot, and each bar's mean ± std
    written above its error bar and its highest seed, so nothing hides the numbers."""
    x = np.arange(len(final))
    ax.errorbar(
        x, final, yerr=spread, fmt="none", ecolor="#222222", elinewidth=1.1, capsize=4, zorder=3
    )
    for i, f in enumerate(finals):
        if len(f) > 1:
            jitter = np.linspace(-width / 5, width / 5, len(f))
            ax.scatter(i + jitter, f, s=14, color="white", edgecolor="#222222", lw=0.8, zorder=4)
    sep = "\n" if len(final) > 4 else " "  # narrow bars: the spread under the mean
    for i, (v, d, f) in enumerate(zip(final, spread, finals, strict=True)):
        top_here = np.nanmax([np.nan_to_num(v) + d, *f]) if len(f) else np.nan_to_num(v)
        shown = _percent(v)
        if len(f) > 1 and not math.isnan(v):
            shown += f"{sep}± {d * 100:.1f}"
        ax.annotate(
            shown,
            (i, top_here),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _final_scatter(
    ax: Axes, series: list[Series], styles: list[Look]
) -> list[tuple[float, float, Series, float]]:
    """Panel (d): final train loss against final test accuracy, each point in its series'
    marker (larger first, so that points at one place all show); the points, for labels."""
    points = []
    for s, look in zip(series, styles, strict=True):
        loss, acc = s.metrics.final_train_loss, s.metrics.final_test_acc
        if len(s.seeds) > 1:  # the seeds' means
            loss = float(np.mean([_last(h.epoch_losses) for h in s.seeds]))
            acc = float(np.mean([_last(h.test_acc) for h in s.seeds]))
        if math.isnan(loss) or math.isnan(acc):
            continue
        size = 1.5 * look.ms  # marker diameter, points
        points.append((loss, acc, s, size / 2))
        ax.scatter(
            loss,
            acc,
            s=size**2,
            marker=look.marker,
            edgecolor="white" if s.finished else s.color,
            facecolor=s.color if s.finished else "white",
            lw=0.7 if s.finished else 1.3,
            zorder=look.zorder + 1,
        )
    ax.margins(x=0.25, y=0.15)
    ax.autoscale_view()
    ax.set_title("(d) Final training loss vs final test accuracy", loc="left")
    ax.set(xlabel="final training loss", ylabel="final test accuracy")
    return points


def _last(values: list[float]) -> float:
    return float(values[-1]) if len(values) else math.nan


def seed_finals(s: Series) -> np.ndarray:
    """The final test accuracy of each seed's counted run."""
    return np.array([_last(h.test_acc) for h in s.seeds], dtype=np.float64)


def _band(ax: Axes, s: Series, field: str, line: dict[str, Any], label: str | None = None) -> None:
    means, stds = stats.seed_band([getattr(h, field) for h in s.seeds])
    epochs, mean, std = _epochs(means), np.array(means), np.array(stds)
    low, high = mean - std, mean + std
    if "acc" in field:  # an accuracy is in [0, 1]: so is its band
        low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    ax.fill_between(epochs, low, high, color=s.color, alpha=0.2, lw=0)
    ax.plot(epochs, mean, label=label, **line)


Cells = dict[tuple[Any, Any], tuple[float, float, int]]  # (row, column) -> (mean, std, n)


def heatmap(
    cells: Cells, rows: tuple[str, list[Any]], cols: tuple[str, list[Any]], title: str, data: str
) -> Figure:
    """Mean final test accuracy over a sweep of two settings: `rows` and `cols` are (setting,
    values in sweep order); `cells[(row value, col value)]` is (mean, std, n). Each cell
    says its mean, and ± std with several seeds; a cell with no finished run says so."""
    (ykey, yvals), (xkey, xvals) = rows, cols
    empty = (math.nan, math.nan, 0)
    grid = np.array([[cells.get((y, x), empty)[0] for x in xvals] for y in yvals], dtype=np.float64)
    fig = Figure(
        figsize=(max(4.8, 1.25 * len(xvals) + 2.6), max(3.6, 0.8 * len(yvals) + 2.2)),
        layout="constrained",
    )
    ax = fig.subplots()
    fig.suptitle(f"{title}: mean final test accuracy\n{data}" if data else title)
    finite = grid[np.isfinite(grid)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    image = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
    ax.grid(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.85, format=PercentFormatter(1.0, decimals=1))
    bar.set_label("mean final test accuracy")
    for (i, y), (j, x) in itertools.product(enumerate(yvals), enumerate(xvals)):
        mean, std, n = cells.get((y, x), empty)
        if n == 0 or math.isnan(mean):
            _cell(ax, i, j, "no finished\nrun", 8, light=False)
            continue
        shown = f"{mean * 100:.1f}%"
        shown += f"\n± {std * 100:.1f} (n={n})" if n > 1 else "\n(n=1)"
        _cell(ax, i, j, shown, 8, light=(mean - lo) / (hi - lo) > 0.6 if hi > lo else True)
    ax.set_xticks(range(len(xvals)), [tick_label(v) for v in xvals])
    ax.set_yticks(range(len(yvals)), [tick_label(v) for v in yvals])
    ax.set(xlabel=xkey, ylabel=ykey)
    return fig


def tick_label(value: Any) -> str:
    """A setting's value as an axis tick: floats short, anything else as figures draw text."""
    return f"{value:g}" if isinstance(value, float) else plain_unless_math(str(value))


def _cell(ax: Axes, row: int, col: int, shown: str, size: float, light: bool) -> None:
    """Text centred on a cell of an image: dark on a light colour, white on a dark one."""
    color = "#222222" if light else "white"
    ax.text(col, row, shown, ha="center", va="center", fontsize=size, color=color)


def _clash(a: Bbox, b: Bbox, pad: float) -> bool:
    return bool(a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad)


def _free_spot(
    centre: tuple[float, float],
    size: tuple[float, float],
    gap: float,
    frame: Bbox,
    taken: list[Bbox],
    steps: list[int],
    pad: float,
) -> tuple[Bbox, bool, int] | None:
    """The nearest place for a label of `size` beside the point at `centre` (pixels), half a
    line at a time up and down, right before left, inside `frame` and clear of `taken`: its
    box, whether it is on the right, and how many half lines it moved; None if none is."""
    (cx, cy), (w, h) = centre, size
    for k in steps:
        bottom = cy - h / 2 + k * 0.55 * h
        for right in (True, False):
            box = Bbox.from_bounds(cx + gap if right else cx - gap - w, bottom, w, h)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(_clash(box, o, pad) for o in taken):
                return box, right, k
    return None


def _label_points(ax: Axes, points: list[tuple[float, float, Series, float]], fig: Figure) -> None:
    """Label each scatter point (x, y, series, marker radius in points) beside it, clear of
    every other label and point: the labels of points at (or near) one place stack above and
    below it, each joined to its point by a thin leader line. Labels are placed on the solved
    layout with the sizes the renderer measures; they stay inside the axes, so placing them
    does not change the layout."""
    if not points:
        return
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    pt = fig.dpi / 72  # pixels per point
    frame = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((x, y)) for x, y, _, _ in points]
    marks = [
        Bbox.from_bounds(cx - r * pt, cy - r * pt, 2 * r * pt, 2 * r * pt)
        for (cx, cy), (_, _, _, r) in zip(centres, points, strict=True)
    ]
    placed: list[Bbox] = []
    steps = [0] + [k * sign for k in range(1, 4 * len(points) + 4) for sign in (1, -1)]
    for i in sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0])):
        x, y, s, r = points[i]
        cx, cy = centres[i]
        probe = ax.text(0, 0, s.label, fontsize=8)
        w, h = probe.get_window_extent(renderer).size
        probe.remove()
        gap = (r + 3) * pt
        taken = placed + marks
        spot = _free_spot((cx, cy), (w, h), gap, frame, taken, steps, pt)
        box, right, k = spot or (Bbox.from_bounds(cx + gap, cy - h / 2, w, h), True, 0)
        placed.append(box)
        ax.annotate(
            s.label,
            (x, y),
            xytext=(((box.x0 if right else box.x1) - cx) / pt, (box.y0 + h / 2 - cy) / pt),
            textcoords="offset points",
            ha="left" if right else "right",
            va="center",
            fontsize=8,
            color=s.color,
            zorder=4,
            arrowprops={
                "arrowstyle": "-",
                "color": s.color,
                "lw": 0.6,
                "shrinkA": 1,
                "shrinkB": r + 1,
                "relpos": (0.0 if right else 1.0, 0.5),
            }
            if abs(k) > 1
            else None,
        )


def confusion(s: Series, names: tuple[str, ...]) -> Figure:
    """The last epoch's confusion matrix on the test set: true class down, predicted across,
    colours by the share of each true class (rows sum to 1), the counts in the cells."""
    counts = np.asarray(s.history.confusion, dtype=np.int64)
    k = counts.shape[0]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = max(4.5, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    epoch = s.history.epochs_done
    _suptitle(fig, f"{s.label}{_status_note(s)}: confusion matrix, test set, epoch {epoch}", [s])
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(1.0))
    bar.set_label("share of the true class")
    size = 8 if k <= 10 else 6
    for (i, j), count in np.ndenumerate(counts):
        _cell(ax, i, j, f"{count:,}", size, light=share[i, j] <= 0.55)
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / counts.sum() if counts.sum() else math.nan
    ax.set_title(f"{counts.sum():,} test images, {accuracy:.2%} correct", loc="left")
    return fig
