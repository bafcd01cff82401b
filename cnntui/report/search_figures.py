"""A `[[search]]`'s figures, drawn as the report's others are (figures.py: the object API,
built and rendered under `figures.drawing`): the metric of each trial in trial order with the
best so far, each searched setting against the metric, and the settings' importance.

Finished trials are filled dots, pruned ones hollow grey rings (their metric is the best
before they were stopped), the best trial a star.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..core.search_space import Param
from . import figures
from .search_report import SearchReport, TrialRow

FINISHED = "#1f77b4"
PRUNED = "#8c8c8c"
BEST = "#d62728"


def _percent(report: SearchReport, ax: Axes, axis: str = "y") -> None:
    if report.search.metric == "val_acc":
        which = ax.yaxis if axis == "y" else ax.xaxis
        which.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _scatter(ax: Axes, xs: list[Any], rows: list[TrialRow]) -> None:
    """The trials at `xs`: finished filled, pruned hollow, the best a star."""
    looks: tuple[tuple[bool, dict[str, Any]], ...] = (
        (False, {"s": 22, "color": FINISHED, "label": "finished"}),
        (True, {"s": 26, "facecolors": "none", "edgecolors": PRUNED, "label": "pruned"}),
    )
    for pruned, look in looks:
        at = [(x, r.metric) for x, r in zip(xs, rows, strict=True) if r.pruned is pruned]
        at = [(x, y) for x, y in at if math.isfinite(y)]
        if at:
            ax.scatter([x for x, _ in at], [y for _, y in at], zorder=3, **look)
    best = [(x, r.metric) for x, r in zip(xs, rows, strict=True) if r.best]
    if best:
        (bx, by), *_ = best
        ax.scatter([bx], [by], s=140, marker="*", color=BEST, label="best", zorder=4)


def trials(report: SearchReport) -> Figure:
    """The metric of each trial in the order they were asked, and the best so far."""
    rows = report.in_order()
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    fig.suptitle(f"{report.search.name}: {report.metric_name} per trial\n{report.data}")
    _scatter(ax, [r.number for r in rows], rows)
    done = [r.metric if r.finished and math.isfinite(r.metric) else math.nan for r in rows]
    line = (np.fmax if report.search.maximise else np.fmin).accumulate(done)  # NaN: none yet
    ax.step([r.number for r in rows], line, where="post", color=BEST, lw=1.4, label="best so far")
    ax.set(xlabel="trial", ylabel=report.metric_name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _percent(report, ax)
    ax.legend(loc="best")
    return fig


def settings(report: SearchReport) -> Figure:
    """Each searched setting against the metric, one panel each (a log axis for a log range,
    the choices in the file's order for a choice)."""
    space = report.search.space
    cols = min(3, len(space))
    nrows = math.ceil(len(space) / cols)
    fig = Figure(figsize=(3.4 * cols + 0.6, 3.0 * nrows + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    fig.suptitle(f"{report.search.name}: each searched setting\n{report.data}")
    for ax, param in zip(axes, space, strict=False):
        _setting_panel(ax, param, report)
    for ax in axes[len(space) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles))
    return fig


def _setting_panel(ax: Axes, param: Param, report: SearchReport) -> None:
    rows = report.rows
    values = [r.values.get(param.key) for r in rows]
    if param.kind == "choice":
        place = {repr(c): i for i, c in enumerate(param.choices)}
        xs: list[Any] = [place.get(repr(v), math.nan) for v in values]
        ax.set_xticks(range(len(param.choices)), [figures.tick_label(c) for c in param.choices])
        ax.set_xlim(-0.5, len(param.choices) - 0.5)
    else:
        xs = [math.nan if v is None else float(v) for v in values]
        low, high = float(param.low or 0), float(param.high or 0)
        if param.kind == "log":  # the whole range searched, with a margin of a twentieth
            ax.set_xscale("log")
            pad = (high / low) ** 0.05
            ax.set_xlim(low / pad, high * pad)
        else:
            pad = (high - low) * 0.05
            ax.set_xlim(low - pad, high + pad)
    _scatter(ax, xs, rows)
    ax.set(xlabel=f"{param.key} ({param.describe()})", ylabel=report.metric_name)
    _percent(report, ax)


def importance(report: SearchReport) -> Figure:
    """The importance of each searched setting (Optuna's PED-ANOVA), most important on top."""
    found = report.importance or {}
    keys = list(found)[::-1]
    fig = Figure(figsize=(6.4, 1.6 + 0.45 * len(keys)), layout="constrained")
    ax = fig.subplots()
    fig.suptitle(
        f"{report.search.name}: importance of each setting ({report.finished} finished "
        f"trials)\n{report.data}"
    )
    ax.barh(keys, [found[k] for k in keys], color=FINISHED)
    for i, k in enumerate(keys):
        ax.text(found[k], i, f" {found[k]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, *found.values()) * 1.1 if found else 1.0)
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.grid(axis="y", visible=False)
    return fig
