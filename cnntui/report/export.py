"""Exports for a written report, built from the run store: the report's figures 1–4 and
tables 1–3, for the latest run of each experiment (finished or partial).

    exports/<name>/loss_history.npz   batch_losses, batch_indices, epoch_losses, train_acc,
                                      test_loss, test_acc, epoch_seconds, val_loss, val_acc,
                                      lr, confusion
    exports/<name>/loss_curves.png    Figure 1: batch loss + moving average; epoch losses
    exports/<name>/confusion.png      the last epoch's test confusion matrix, by class name
    exports/<group>/loss_grid.png     Figure 2: one batch-loss panel per experiment
    exports/<group>/comparison.png    Figures 3 and 4: the four quadrants
    exports/<group>/results.{csv,md}  Tables 1–3: differing settings, then every metric
    exports/<group>/per_class.{csv,md} per-class test accuracy of each experiment
    exports/<group>/results.tex       the report's tables 1-3 in LaTeX (booktabs), to \\input:
                                      a few columns each, at the document's type size
    exports/<group>/results_full.tex  every column of results.md, landscape, in parts
    exports/results.{csv,md}          every experiment, one row each
    exports/results.tex               every group's results.tex, one after the other
    exports/results_full.tex          every experiment, every column
    exports/<group>/<sweep>_heatmap.png  a sweep over two settings: mean final test accuracy
    exports/<group>/<search>.{csv,md,tex}  a [[search]]'s trials, sorted by its metric, the
                                      best marked (search_report.py); its trials are rows of
                                      the group's results tables too (`search_best` column)
    exports/<group>/<search>_trials.png    the metric per trial and the best so far
    exports/<group>/<search>_settings.png  each searched setting against the metric
    exports/<group>/<search>_importance.png  the settings' importance, from
                                      search_report.IMPORTANCE_MIN_TRIALS finished trials

An experiment with several seeds also gets mean ± std and n over the latest finished run of
each seed (stats.seed_runs), and each one a comparison with its group's reference (Welch).

Every figure's title and every table's caption line (and the CSV's `dataset`,
`train_images`, `test_images` columns) say what the numbers were measured on, so synthetic
data cannot pass for CIFAR-10. Figures come in each requested format (png, svg, pdf). Every
file is rendered in memory and then written atomically, so an export never leaves a
half-written file and exporting again replaces the old files cleanly. Safe to call from a
worker thread.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from pickle import UnpicklingError
from typing import TYPE_CHECKING, Any
from zipfile import BadZipFile

import numpy as np

from ..core import text
from ..core.config import UNGROUPED, Experiment, class_names
from ..core.history import History, metrics
from ..runs.store import RunRecord, RunStore, StoreError, atomic_write_bytes
from . import figures, search_figures, search_report, stats, tables

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
# What reading one run's files can raise when one is truncated, corrupt or hand-edited with
# values of the wrong type: that run is skipped, and the others are exported.
UNREADABLE = (OSError, ValueError, LookupError, TypeError, EOFError, BadZipFile, UnpicklingError)


class ExportError(OSError):
    """The exports directory cannot be written; the message names it."""


@dataclass
class ExportResult:
    """What an export wrote, and what it could not, for the front end to say."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # experiments with no recorded run
    skipped: dict[str, str] = field(default_factory=dict)  # experiment -> why its run was not
    warnings: list[str] = field(default_factory=list)  # for the user: e.g. no CJK font


@dataclass
class _Entry:
    """One experiment with its latest run, read once and shared by every export."""

    experiment: Experiment
    record: RunRecord
    history: History
    row: tables.Row
    series: figures.Series


def latest_runs(store: RunStore, experiments: list[Experiment]) -> dict[str, RunRecord]:
    """The newest stored run of each experiment with something to show: a newer run that
    never finished an epoch (just launched, cancelled early) does not hide an older one that
    did, and a run that recorded no batch at all (failed at start) is never exported."""
    out = {}
    for exp in experiments:
        runs = store.runs(exp.name)
        with_epochs = [r for r in runs if (r.summary.epochs_done or 0) > 0]
        with_batches = [r for r in runs if (r.summary.batches_done or 0) > 0]
        if with_epochs or with_batches:
            out[exp.name] = (with_epochs or with_batches)[-1]
    return out


def _prepare(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"exports dir {str(folder)!r} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"exports dir {str(folder)!r} cannot be created: {e.strerror}") from None


def _write(result: ExportResult, path: Path, data: bytes) -> None:
    """Write one export (with the umask's mode, as every atomic_write does)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ExportError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    result.files.append(path)


def _why(e: Exception) -> str:
    """Why a run could not be read: the store's own errors already name the file; others
    get their type."""
    return text.safe(str(e) if isinstance(e, StoreError) else text.one_line(e))


def _ran_with(record: RunRecord, exp: Experiment) -> Experiment:
    try:
        return record.experiment()
    except (OSError, ValueError, TypeError):
        return exp  # no readable config.toml: assume the current settings


def _images(record: RunRecord, ran: Experiment) -> tuple[int, int]:
    """The train and test images the run used: as its summary recorded them, or (a run from
    before they were recorded) as its settings give them."""
    train, test = record.summary.train_images, record.summary.test_images
    if train is not None and test is not None:
        return train, test
    return tables.images_used(ran.dataset, ran.train_size, ran.test_size, ran.base_dir)


def _entries(
    store: RunStore, experiments: list[Experiment], fonts: figures.Fonts, result: ExportResult
) -> list[_Entry]:
    records = latest_runs(store, experiments)
    entries = []
    for exp in experiments:
        record = records.get(exp.name)
        if record is None:
            result.missing.append(exp.name)
            continue
        # A colour by its place in its group, so it is the same in every figure and does not
        # change when a sibling gains or loses a run.
        siblings = [x.name for x in experiments if x.group == exp.group]
        color = figures.colors(len(siblings))[siblings.index(exp.name)]
        try:
            entry = _entry(exp, record, fonts, color)
            entries.append(_with_seeds(entry, store, result))
        except UNREADABLE as e:
            result.skipped[exp.name] = f"run {text.safe(record.run_id)} is unreadable ({_why(e)})"
    return entries


def read_entries(
    store: RunStore, experiments: list[Experiment], fonts: figures.Fonts, result: ExportResult
) -> list[_Entry]:
    """What every export is drawn from: each experiment's latest run with its seeds' runs and
    its comparison with its group's reference; what is missing or unreadable goes to `result`."""
    entries = _entries(store, experiments, fonts, result)
    _compare(entries, experiments)
    return entries


def _with_seeds(entry: _Entry, store: RunStore, result: ExportResult) -> _Entry:
    """The entry with the runs its mean ± std count: the latest finished run of each seed
    (stats.seed_runs). A seed's run that cannot be read is left out, and said."""
    exp = entry.experiment
    counted = stats.seed_runs(store.runs(exp.name), key=lambda r: r.settings_key)
    results, histories = [], []
    environments = list(entry.row.environments)
    for record in counted:
        try:
            history = entry.history if record.path == entry.record.path else record.history()
            ran = _ran_with(record, exp)
            m = metrics(history, ran.target_acc, record.summary.total_seconds or 0.0)
        except UNREADABLE as e:
            why = f"seed {record.seed} run {record.run_id} not counted ({_why(e)})"
            result.warnings.append(f"{exp.name}: {why}")
            continue
        results.append(tables.SeedResult(record.seed, record.run_id, m))
        histories.append(history)
        environments.append((record.run_id, record.summary.environment()))
    entry.row = dataclasses.replace(
        entry.row, seed_results=tuple(results), environments=tuple(environments)
    )
    entry.series = dataclasses.replace(entry.series, seeds=tuple(histories))
    return entry


def _compare(entries: list[_Entry], experiments: list[Experiment]) -> None:
    """Each entry's comparison with its group's reference (Welch, on final test accuracy;
    Holm-adjusted where the group has more than one)."""
    for group, members in _by_group(entries).items():
        ref_exp = stats.reference_of([x for x in experiments if (x.group or UNGROUPED) == group])
        ref = next((m for m in members if m.experiment.name == ref_exp.name), None)
        compared = [m for m in members if ref and m is not ref and ref.row.n and m.row.n]
        found = stats.compare_group(_finals(ref), [_finals(m) for m in compared]) if ref else []
        by_entry = {id(m): c for m, c in zip(compared, found, strict=True)}
        for m in members:
            comparison: stats.Comparison | None = by_entry.get(id(m))
            if m is ref:
                nan = math.nan
                comparison = stats.Comparison(nan, nan, nan, nan, stats.REFERENCE)
            m.row = dataclasses.replace(m.row, comparison=comparison)


def _by_group(entries: list[_Entry]) -> dict[str, list[_Entry]]:
    by_group: dict[str, list[_Entry]] = {}
    for e in entries:
        by_group.setdefault(e.experiment.group or UNGROUPED, []).append(e)
    return by_group


Heatmap = tuple[figures.Cells, tuple[str, list[Any]], tuple[str, list[Any]], str]


def sweep_cells(members: list[_Entry]) -> dict[str, Heatmap]:
    """For each sweep over two settings among `members`: the heatmap's cells (mean, std, n of
    the final test accuracy over seeds), its rows and columns (setting, values in sweep
    order), and the data line: the arguments of figures.heatmap but the title."""
    out: dict[str, Heatmap] = {}
    sweeps: dict[str, list[_Entry]] = {}
    for m in members:
        if m.experiment.sweep and len(m.experiment.swept) == 2:
            sweeps.setdefault(m.experiment.sweep, []).append(m)
    for sweep, entries in sweeps.items():
        ykey, xkey = entries[0].experiment.swept
        yvals = list(dict.fromkeys(getattr(e.experiment, ykey) for e in entries))
        xvals = list(dict.fromkeys(getattr(e.experiment, xkey) for e in entries))
        cells: figures.Cells = {}
        for e in entries:
            agg = e.row.aggregate("final_test_acc")
            at = (getattr(e.experiment, ykey), getattr(e.experiment, xkey))
            cells[at] = (agg.mean, agg.std, agg.n)
        out[sweep] = (cells, (ykey, yvals), (xkey, xvals), entries[0].row.data)
    return out


def _finals(e: _Entry) -> list[float]:
    return [s.metrics.final_test_acc for s in e.row.seed_results]


def _entry(exp: Experiment, record: RunRecord, fonts: figures.Fonts, color: str) -> _Entry:
    """One experiment's latest run read for export; raises one of UNREADABLE when it cannot be."""
    if record.dropped:  # its numbers would be silently missing from the tables
        raise ValueError(f"summary.json: {'; '.join(record.dropped)}")
    s = record.summary
    history = record.history()
    ran = _ran_with(record, exp)
    m = metrics(history, ran.target_acc, s.total_seconds or 0.0)
    train_images, test_images = _images(record, ran)
    row = tables.Row(
        experiment=exp,
        ran_with=ran,
        status=record.status,
        epochs_done=history.epochs_done,
        params=s.params,
        metrics=m,
        device=s.device or "",
        run_id=record.run_id,
        train_images=train_images,
        test_images=test_images,
        confusion=history.confusion,
        val_images=s.val_images or 0,
        class_names=s.class_names or (),
        environments=((record.run_id, s.environment()),),
    )
    series = figures.Series(
        name=exp.name,
        label=fonts.label(exp.display_title, exp.name),
        color=color,
        history=history,
        metrics=m,
        status=row.status,
        planned_epochs=ran.epochs,
        data=row.data,
    )
    return _Entry(exp, record, history, row, series)


def export_all(
    store: RunStore,
    experiments: list[Experiment],
    exports_dir: Path,
    formats: tuple[str, ...] = ("png",),
    *,
    dpi: int = figures.DPI,
) -> ExportResult:
    """Write every export for `experiments` into `exports_dir`; figures in each of `formats`."""
    if not formats or not set(formats) <= set(FORMATS):
        raise ValueError(f"figure formats must be among {', '.join(FORMATS)}, got {formats!r}")
    exports_dir = Path(exports_dir)
    _prepare(exports_dir)
    result = ExportResult(exports_dir)
    fonts = figures.Fonts.detect()
    entries = read_entries(store, experiments, fonts, result)
    titles = {e.experiment.name: e.experiment.display_title for e in entries}
    result.warnings += figures.font_notes(fonts, titles)
    result.warnings += figures.math_notes(titles)
    draw = _Drawer(result, fonts, formats, dpi)
    for e in entries:
        _export_experiment(e, exports_dir / e.experiment.name, draw)
    reports, trials = _searches(store, fonts, result)
    by_group = _by_group(entries)
    for group in trials:
        by_group.setdefault(group, [])
    for group, members in by_group.items():
        names = [x.name for x in experiments if (x.group or UNGROUPED) == group]
        _export_group(group, members, names, exports_dir / group, draw, trials.get(group, []))
    for report in reports:
        _export_search(report, exports_dir / report.search.group, draw)
    rows = [e.row for e in entries] + [t.row for group in trials.values() for t in group]
    if rows:  # every experiment's results at the top of the exports dir
        _results(result, exports_dir, rows, None, result.missing, list(result.skipped))
    return result


def _searches(
    store: RunStore, fonts: figures.Fonts, result: ExportResult
) -> tuple[list[search_report.SearchReport], dict[str, list[_Entry]]]:
    """Every search recorded in the store with its report, and its trials' runs by group,
    each row marked as its search's best trial or not (for the group's results tables)."""
    reports, problems = search_report.read_all(store)
    result.warnings += problems
    trials: dict[str, list[_Entry]] = {}
    for report in reports:
        exps, best = [], {r.name: r.best for r in report.rows}
        for r in report.in_order():
            record = next((x for x in store.runs(r.name) if x.run_id == r.run_id), None)
            if record is not None:
                group = report.search.group
                exps.append(dataclasses.replace(_ran_with(record, report.search.base), group=group))
        found = ExportResult(result.folder)
        entries = _entries(store, exps, fonts, found)
        result.warnings += [f"{name}: {why}" for name, why in found.skipped.items()]
        for e in entries:
            e.row = dataclasses.replace(e.row, search_best=best.get(e.experiment.name, False))
            trials.setdefault(report.search.group, []).append(e)
    return reports, trials


def _export_search(report: search_report.SearchReport, folder: Path, draw: _Drawer) -> None:
    """A search's files in its group's folder: its trials' table (CSV, Markdown, LaTeX), the
    metric per trial, each setting against it, and the settings' importance when known."""
    _prepare(folder)
    name = report.search.name
    _write(draw.result, folder / f"{name}.csv", search_report.to_csv(report))
    _write(draw.result, folder / f"{name}.md", search_report.to_markdown(report))
    _write(draw.result, folder / f"{name}.tex", search_report.to_latex(report))
    draw(folder, f"{name}_trials", functools.partial(search_figures.trials, report))
    draw(folder, f"{name}_settings", functools.partial(search_figures.settings, report))
    if report.importance:
        draw(folder, f"{name}_importance", functools.partial(search_figures.importance, report))


@dataclass
class _Drawer:
    """Renders figures in every requested format and writes them, counting the files."""

    result: ExportResult
    fonts: figures.Fonts
    formats: tuple[str, ...]
    dpi: int

    def __call__(self, folder: Path, stem: str, build: Callable[[], Figure]) -> None:
        """Draw `build`'s figure and write it as folder/stem.<format> for each format."""
        with figures.drawing(self.fonts):
            fig = build()
            rendered = figures.render_all(fig, self.formats, self.dpi)
        for fmt, data in rendered.items():
            _write(self.result, folder / f"{stem}.{fmt}", data)


def _export_experiment(e: _Entry, folder: Path, draw: _Drawer) -> None:
    """One experiment's folder: its loss history, loss curves and confusion matrix."""
    _prepare(folder)
    npz = io.BytesIO()
    # numpy's stub: the arrays' names vs allow_pickle
    np.savez(npz, **e.history.arrays())  # type: ignore[arg-type]
    _write(draw.result, folder / "loss_history.npz", npz.getvalue())
    draw(folder, "loss_curves", functools.partial(figures.loss_curves, e.series))
    if e.history.confusion:
        ran = e.row.ran_with
        classes = class_names(
            ran.dataset, len(e.history.confusion), e.row.class_names, ran.base_dir
        )
        draw(folder, "confusion", functools.partial(figures.confusion, e.series, classes))


def _export_group(
    group: str,
    members: list[_Entry],
    names: list[str],
    folder: Path,
    draw: _Drawer,
    trials: list[_Entry],
) -> None:
    """One group's folder: its comparison figures, results tables, sweep heatmaps and
    per-class tables; `names` are all the group's experiments, recorded or not. A search's
    `trials` are rows of its tables, not curves of its figures (a search has its own)."""
    result = draw.result
    _prepare(folder)
    series = [m.series for m in members]
    if series:
        draw(folder, "comparison", functools.partial(figures.comparison, series, group))
        draw(folder, "loss_grid", functools.partial(figures.loss_grid, series, group))
    rows = [m.row for m in members] + [t.row for t in trials]
    missing = [n for n in names if n in result.missing]
    skipped = [n for n in names if n in result.skipped]
    _results(result, folder, rows, group, missing, skipped)
    for sweep, (cells, rows_, cols, data) in sweep_cells(members).items():
        heatmap = functools.partial(figures.heatmap, cells, rows_, cols, sweep, data)
        draw(folder, f"{sweep}_heatmap", heatmap)
    if any(r.confusion for r in rows):
        _write(result, folder / "per_class.csv", tables.per_class_csv(rows))
        heading = f"{group}: per-class test accuracy"
        _write(result, folder / "per_class.md", tables.per_class_markdown(rows, heading))


def _results(
    result: ExportResult,
    folder: Path,
    rows: list[tables.Row],
    group: str | None,
    missing: list[str],
    skipped: list[str],
) -> None:
    """The results tables (CSV, Markdown, LaTeX, full LaTeX) of one group, or of every
    experiment with a column for its group when `group` is None."""
    every = group is None
    heading = f"{'All experiments' if every else group}: results"
    _write(result, folder / "results.csv", tables.to_csv(rows, with_group=every))
    md = tables.to_markdown(rows, heading, every, missing, skipped)
    _write(result, folder / "results.md", md)
    _write(result, folder / "results.tex", tables.to_latex(rows, group))
    _write(result, folder / "results_full.tex", tables.to_latex_full(rows, heading, every))
