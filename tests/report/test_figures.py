"""The report's figures as a reader sees them, built from made-up histories (no training):
one y scale per loss grid, every run visible where curves coincide, scatter labels that do
not collide, legends clear of the data, and the data named in every title."""

from __future__ import annotations

import itertools
import math

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from cnntui.core.history import History, metrics
from cnntui.report import figures

FONTS = figures.Fonts(("DejaVu Sans",))
DATA = "synthetic data (not CIFAR-10), 1,000 train / 500 test images"


def history(batch: np.ndarray, epoch_losses, test_acc, per_epoch: int | None = None) -> History:
    epochs = len(test_acc)
    per_epoch = per_epoch or max(1, len(batch) // max(epochs, 1))
    return History(
        batch_losses=[float(v) for v in batch],
        batch_indices=list(range(len(batch))),
        epoch_losses=list(epoch_losses),
        train_acc=[min(1.0, a + 0.05) for a in test_acc],
        test_loss=[v + 0.1 for v in epoch_losses],
        test_acc=list(test_acc),
        epoch_seconds=[1.0] * epochs,
    )


def series(name: str, color: str, h: History, status: str = "finished", **kw) -> figures.Series:
    return figures.Series(
        name=name,
        label=name,
        color=color,
        history=h,
        metrics=metrics(h, 0.4, 10.0),
        status=status,
        planned_epochs=len(h.test_acc),
        **kw,
    )


def flat(seed: int, n: int = 1250, level: float = 2.30, noise: float = 0.05) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, noise, n)


def learning(seed: int, n: int = 1250) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return 2.3 - 1.6 * t + np.random.default_rng(seed).normal(0, 0.3, n)


def built(make):
    """The figure `make()` builds, built and drawn in the report style as an export does."""
    with figures.drawing(FONTS):
        fig = make()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    return fig, canvas.get_renderer()


def chance_group(n_same: int = 3) -> list[figures.Series]:
    """Two runs that learn, and `n_same` runs with one identical history at chance level."""
    palette = figures.colors(2 + n_same)
    same = history(flat(7), [2.30, 2.30, 2.30], [0.10, 0.10, 0.10])
    out = [
        series("learns", palette[0], history(learning(1), [2.0, 1.5, 1.1], [0.3, 0.5, 0.6])),
        series("faster", palette[1], history(learning(2), [1.8, 1.2, 0.9], [0.4, 0.6, 0.7])),
    ]
    out += [series(f"chance-{i}", palette[2 + i], same) for i in range(n_same)]
    return out


# --- 7: one y scale per loss grid ----------------------------------------------------------


def test_loss_grid_panels_share_one_y_range_that_one_spike_does_not_flatten() -> None:
    spiky = learning(3)
    spiky[600] = 50.0  # one divergent batch
    group = [
        series("flat-a", "C0", history(flat(1), [2.3] * 5, [0.1] * 5)),
        series("flat-b", "C1", history(flat(2, noise=0.02), [2.3] * 5, [0.1] * 5)),
        series("learns", "C2", history(learning(4), [2.0, 1.6, 1.2, 1.0, 0.8], [0.2] * 5)),
        series("spike", "C3", history(spiky, [2.0, 1.6, 1.2, 1.0, 0.8], [0.2] * 5)),
        series("short", "C4", history(flat(5, n=300), [2.3], [0.1])),
    ]
    fig, _ = built(lambda: figures.loss_grid(group, "g"))
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 5
    limits = {tuple(round(v, 9) for v in ax.get_ylim()) for ax in panels}
    assert len(limits) == 1, limits  # the same y range in every panel
    lo, hi = limits.pop()
    # The spike does not set the scale; the other panels show every loss, and the spiky one
    # its moving average.
    others = np.concatenate(
        [np.asarray(s.history.batch_losses) for s in group if s is not group[3]]
    )
    assert lo <= min(others.min(), spiky.min()) and hi >= others.max() and hi < 5
    assert hi > figures.moving_average(spiky).max()
    # The flat runs read as flat: their noise spans a small part of the shared axis.
    assert np.ptp(flat(1)) < 0.25 * (hi - lo)
    # The cut is said, with the panel it hides a loss of.
    texts = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "not shown" in texts and f"spike: {int((spiky > hi).sum())})" in texts


def test_loss_grid_without_spikes_shows_every_loss() -> None:
    group = [
        series("a", "C0", history(flat(1), [2.3] * 5, [0.1] * 5)),
        series("b", "C1", history(learning(2), [2.0, 1.6, 1.2, 1.0, 0.8], [0.2] * 5)),
    ]
    fig, _ = built(lambda: figures.loss_grid(group, "g"))
    lo, hi = fig.axes[0].get_ylim()
    assert fig.axes[1].get_ylim() == (lo, hi)
    everything = np.concatenate([np.asarray(s.history.batch_losses) for s in group])
    assert lo < everything.min() and hi > everything.max()
    assert "not shown" not in " ".join(t.get_text() for t in fig.findobj(Text))


# --- 8: coinciding runs stay visible ---------------------------------------------------------


def _lines(ax) -> list[Line2D]:
    return [line for line in ax.get_lines() if len(line.get_xdata())]


def test_coinciding_runs_get_their_own_marker_and_dash() -> None:
    group = chance_group()
    fig, _ = built(lambda: figures.comparison(group, "g"))
    ax_a, ax_b, _, ax_d = fig.axes[:4]
    for ax in (ax_a, ax_b):
        markers = [line.get_marker() for line in _lines(ax)]
        assert len(markers) == 5 and len(set(markers)) == 5
        # The dash patterns as drawn (Line2D keeps no public getter for them).
        dashes = [str(line._unscaled_dash_pattern) for line in _lines(ax)[2:]]
        assert len(set(dashes)) == 3  # the three that coincide
        # Drawn in order, each later one slightly above and narrower, so the earlier ones
        # still show around it.
        lines = _lines(ax)[2:]
        assert [line.get_zorder() for line in lines] == sorted(line.get_zorder() for line in lines)
        assert all(a.get_linewidth() > b.get_linewidth() for a, b in itertools.pairwise(lines))
        assert all(a.get_markersize() > b.get_markersize() for a, b in itertools.pairwise(lines))
    # The legend shows each run's marker, so it tells them apart too.
    handles = fig.legends[0].legend_handles
    assert len({h.get_marker() for h in handles}) == 5
    # (d): the three points at one place get different markers, larger ones below.
    points = [c for c in ax_d.collections if len(c.get_offsets())]
    same = points[2:]
    assert len({c.get_paths()[0].vertices.tobytes() for c in same}) == 3
    assert all(a.get_sizes()[0] > b.get_sizes()[0] for a, b in itertools.pairwise(same))


def _pixels_of(rgba: np.ndarray, color: str, box) -> int:
    """Pixels inside the display-space `box` that are (nearly) exactly `color`."""
    h = rgba.shape[0]
    x0, x1 = int(box.x0), int(box.x1)
    y0, y1 = h - int(box.y1), h - int(box.y0)  # image rows run top down
    patch = rgba[y0:y1, x0:x1, :3].astype(int)
    target = np.array([round(255 * c) for c in mcolors.to_rgb(color)])
    return int((np.abs(patch - target).sum(axis=2) < 40).sum())


def test_every_coinciding_run_shows_in_the_rendered_curves() -> None:
    """A reader looking at panels (a) and (b) sees a trace of each run's colour, even where
    three runs have the same curve."""
    group = chance_group()
    fig, _ = built(lambda: figures.comparison(group, "g"))
    rgba = np.asarray(fig.canvas.buffer_rgba())
    for ax in fig.axes[:2]:
        box = ax.get_window_extent()
        for s in group:
            assert _pixels_of(rgba, s.color, box) > 20, (s.name, ax.get_title(loc="left"))


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _near_group() -> list[figures.Series]:
    """Three runs at exactly one final loss and accuracy, and two just beside them."""
    near = [
        series(
            f"near-{i}",
            c,
            history(flat(9 + i), [2.29 + 0.005 * i] * 3, [0.1, 0.1, 0.105 + 0.002 * i]),
        )
        for i, c in enumerate(("#17becf", "#bcbd22"))
    ]
    return chance_group() + near


def _leader_points(annotation) -> np.ndarray:
    """Points every pixel or so along an annotation's leader line, in display coordinates."""
    patch = annotation.arrow_patch
    path = patch.get_transform().transform_path(patch.get_path())
    v = path.vertices
    steps = [np.linspace(a, b, 50) for a, b in itertools.pairwise(v)]
    return np.concatenate(steps) if steps else v


@pytest.mark.parametrize("group", [_near_group, lambda: chance_group(5)], ids=["3+2", "5"])
def test_scatter_labels_of_points_at_one_place_stay_readable(group) -> None:
    """Panel (d): runs at exactly the same final loss and accuracy (and some just beside
    them). Every label is readable: none overlaps another label or a point, none leaves the
    axes, and no leader line runs through another label."""
    group = group()
    fig, renderer = built(lambda: figures.comparison(group, "g"))
    ax_d = fig.axes[3]
    labels = [t for t in ax_d.texts if t.get_text()]
    assert sorted(t.get_text() for t in labels) == sorted(s.label for s in group)
    # The text itself (an annotation's own extent takes in its leader line too).
    boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in labels}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not _overlap(box_a, box_b), (a, b)
    frame = ax_d.get_window_extent(renderer)
    dots = []  # each marker's square, from its centre and size (points squared)
    for c in ax_d.collections:
        cx, cy = c.get_offset_transform().transform(c.get_offsets())[0]
        r = math.sqrt(c.get_sizes()[0]) / 2 * fig.dpi / 72
        dots.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    assert len(dots) == len(group)
    for name, box in boxes.items():
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, name
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1, name
        assert not any(_overlap(box, dot) for dot in dots), name
    for t in labels:
        if t.arrow_patch is None:
            continue
        line = _leader_points(t)
        for name, box in boxes.items():
            if name == t.get_text():
                continue
            crossing = (
                (line[:, 0] > box.x0 + 1)
                & (line[:, 0] < box.x1 - 1)
                & (line[:, 1] > box.y0 + 1)
                & (line[:, 1] < box.y1 - 1)
            )
            assert not crossing.any(), f"{t.get_text()}'s leader line crosses {name}"


# --- 9: legends clear of the data ----------------------------------------------------------


def _data_points(fig) -> np.ndarray:
    """Every plotted data point of every axes, in display coordinates."""
    out = []
    for ax in fig.axes:
        for line in _lines(ax):
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            out.append(ax.transData.transform(xy[np.isfinite(xy).all(axis=1)]))
        for c in ax.collections:
            if isinstance(c, PathCollection):  # scatter: the points are the offsets
                out.append(c.get_offset_transform().transform(c.get_offsets()))
                continue
            for path in c.get_paths():  # fill_between: the band's outline
                v = path.vertices
                out.append(c.get_transform().transform(v[np.isfinite(v).all(axis=1)]))
    return np.concatenate(out)


def _legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]


def _assert_legends_clear(fig, renderer) -> None:
    points = _data_points(fig)
    legends = _legends(fig)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        inside = (
            (points[:, 0] >= box.x0)
            & (points[:, 0] <= box.x1)
            & (points[:, 1] >= box.y0)
            & (points[:, 1] <= box.y1)
        )
        assert not inside.any(), f"{int(inside.sum())} data points under a legend"
        for ax in fig.axes:  # nor over a title
            for loc in ("left", "center", "right"):
                title = ax.get_title(loc=loc)
                if title:
                    (t,) = [
                        c
                        for c in ax.get_children()
                        if isinstance(c, Text) and c.get_text() == title
                    ]
                    assert not _overlap(box, t.get_window_extent(renderer)), title


@pytest.mark.slow
def test_no_legend_covers_data_or_a_title() -> None:
    """In every figure, even where the data fill every corner of the axes (noisy batch
    losses, a spike at the top right where the legend used to sit, epoch curves through every
    corner), no legend lies over a data point or a panel title."""
    rng = np.random.default_rng(0)
    figs = []
    for n in (2000, 10_000):  # drawn as a line, and as a min/max band
        batch = rng.uniform(0.2, 3.0, n)  # noise filling the whole panel
        batch[-5] = 9.0  # a spike at the top right
        h = history(batch, [2.5, 0.5, 2.4, 0.4, 2.5], [0.1, 0.3, 0.2, 0.4, 0.5])
        for s in (series("noisy", "C0", h), series("part", "C1", h, status="cancelled")):
            figs.append(lambda s=s: figures.loss_curves(s))
    group = chance_group()
    group[0] = series("part", "C0", group[0].history, status="cancelled")
    figs.append(lambda: figures.comparison(group, "g"))
    for make in figs:
        fig, renderer = built(make)
        _assert_legends_clear(fig, renderer)


# --- 6: the data the numbers come from ------------------------------------------------------


@pytest.mark.parametrize("which", ["loss_curves", "loss_grid", "comparison"])
def test_every_figure_title_names_the_data(which: str) -> None:
    group = [s.__class__(**{**s.__dict__, "data": DATA}) for s in chance_group()]
    if which == "loss_curves":
        fig, _ = built(lambda: figures.loss_curves(group[0]))
    else:
        fig, _ = built(lambda: getattr(figures, which)(group, "g"))
    title = fig.get_suptitle()
    assert DATA in title and "not CIFAR-10" in title


def test_a_group_on_two_datasets_says_which_run_used_which() -> None:
    a, b, *_ = chance_group()
    cifar = "CIFAR-10, 50,000 train / 10,000 test images"
    a = a.__class__(**{**a.__dict__, "data": cifar})
    b = b.__class__(**{**b.__dict__, "data": DATA})
    fig, _ = built(lambda: figures.comparison([a, b], "g"))
    title = fig.get_suptitle()
    assert f"{cifar} (learns)" in title and f"{DATA} (faster)" in title


def test_looks_stay_distinct_for_many_series() -> None:
    styles = figures.looks(12)
    assert len({(s.marker, str(s.dashes)) for s in styles}) == 12
    assert all(math.isfinite(s.lw) and s.lw > 1 and s.ms >= 5 for s in styles)


def test_loss_curves_draw_a_scheduled_rate_and_the_validation_loss() -> None:
    h = history(learning(0), [2.0, 1.5, 1.2, 1.1], [0.2, 0.4, 0.5, 0.55])
    h.lr = [0.01, 0.1, 0.05, 0.001]
    h.val_loss = [2.1, 1.6, 1.3, 1.25]
    h.val_acc = [0.2, 0.4, 0.5, 0.5]
    fig = figures.loss_curves(series("sched", "C0", h))
    _top, bottom, rate = fig.axes
    assert rate.get_title(loc="left") == "Learning rate per epoch"
    assert rate.lines[0].get_ydata().tolist() == h.lr
    assert "validation loss" in [ln.get_label() for ln in bottom.lines]
    png = figures.render(fig, "png", dpi=40)
    assert png.startswith(b"\x89PNG")

    h.lr = [0.01] * 4  # constant: no panel, the title says the rate
    h.val_loss = h.val_acc = []
    fig = figures.loss_curves(series("flat", "C0", h))
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title(loc="left") == "Mean loss per epoch (lr 0.01 throughout)"
    assert "validation loss" not in [ln.get_label() for ln in fig.axes[1].lines]


def test_a_swept_text_value_matplotlib_cannot_read_as_math_is_a_plain_tick() -> None:
    """A sweep over two data_dir values like '$a{$' drew its heatmap ticks as mathtext."""
    cells = {("$a{$", 0.1): (0.5, 0.0, 1), ("b", 0.1): (0.6, 0.0, 1)}
    with figures.drawing(FONTS):
        fig = figures.heatmap(cells, ("data_dir", ["$a{$", "b"]), ("lr", [0.1]), "s", DATA)
        png = figures.render(fig, "png", 30)
        ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert png.startswith(b"\x89PNG")
    assert ticks == [r"\$a{\$", "b"]


def test_a_group_near_100_percent_with_long_names_stays_readable() -> None:
    """Seeds near 100 %: panel (c) leaves room for its value labels under its title (no
    tick past 100 %), long experiment names are set at an angle instead of running into
    each other, and panel (b)'s seed band never goes past 100 %."""
    palette = figures.colors(3)
    names = ["LeNet (built in)", "SmallVGG (model_args=width-8)", "SmallVGG (model_args=width-16)"]
    group = []
    finals = [(0.9, 0.91), (0.6, 1.0), (1.0, 1.0)]
    for name, color, (a, b) in zip(names, palette, finals, strict=True):
        seeds = tuple(history(learning(i), [1.0, 0.5], [0.7, x]) for i, x in enumerate((a, b)))
        group.append(series(name, color, seeds[0], seeds=seeds))
    fig, renderer = built(lambda: figures.comparison(group, "near 100"))
    _loss, acc, bars, _scatter = fig.axes[:4]
    assert bars.get_ylim()[1] > 1.0 and max(bars.get_yticks()) <= 1.0
    title = bars.title.get_window_extent(renderer)
    labels = [t for t in bars.texts if "%" in t.get_text()]
    assert labels and not any(_overlap(t.get_window_extent(renderer), title) for t in labels)
    assert all(t.get_rotation() > 0 for t in bars.get_xticklabels())  # flat, they overlap
    for band in acc.collections:
        assert band.get_paths()[0].vertices[:, 1].max() <= 1.0
