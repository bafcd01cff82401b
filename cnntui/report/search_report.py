"""A `[[search]]`'s report: its trials as one table (CSV, Markdown, LaTeX) and what its
figures draw, read from the run store and the search's Optuna study, never written.

One row per trial: its number, the values it sampled, its metric (the best validation value
of any epoch it trained: what a finished trial was told; for a pruned one, the best before it
was stopped), its status as the store shows it (`finished`, `pruned at epoch 2`, ...) and the
epochs it trained. Rows are sorted by the metric, best first; the study's best trial (the best
finished one) is marked. The importance of each searched setting comes from Optuna's PED-ANOVA
evaluator (`optuna.importance`; its default fANOVA needs scikit-learn, which cnntui does not
install) once IMPORTANCE_MIN_TRIALS trials have finished: with fewer, its top tenth of trials,
which it contrasts with the rest, would be a single trial.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from ..core.config import Experiment, images_used
from ..core.search_space import Search
from ..runs import searches
from ..runs.records import RunStatus
from ..runs.search import RUN_ID, read_study
from ..runs.store import RunRecord, RunStore
from . import tables

IMPORTANCE_MIN_TRIALS = 10  # finished trials before the importance of settings is shown
METRIC_NAMES = {"val_acc": "validation accuracy", "val_loss": "validation loss"}
_STATES = {
    TrialState.COMPLETE: "finished",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "queued",
}


@dataclass(frozen=True)
class TrialRow:
    """One trial of a search as its table shows it."""

    number: int
    name: str  # its run's name, `<search>.t<N>`
    values: dict[str, Any]  # searched setting -> the value sampled
    metric: float  # the best validation value of any epoch (NaN: none yet)
    status: str  # `finished`, `pruned at epoch 2`, `failed`, `running`, ...
    epochs: int  # epochs trained
    run_id: str  # empty when no run was made for it
    pruned: bool
    finished: bool  # told to the study with a metric
    best: bool = False


@dataclass(frozen=True)
class SearchReport:
    """What a search's exports show: its rows sorted by the metric, and the importances."""

    search: Search[Experiment]
    rows: list[TrialRow]  # best first; trials without a metric last
    importance: dict[str, float] | None  # None below IMPORTANCE_MIN_TRIALS finished trials
    data: str  # what the trials were measured on, for captions and figure titles

    @property
    def finished(self) -> int:
        """How many trials finished with a metric."""
        return sum(r.finished for r in self.rows)

    @property
    def best(self) -> TrialRow | None:
        """The study's best trial (the best finished one), if any finished."""
        return next((r for r in self.rows if r.best), None)

    def in_order(self) -> list[TrialRow]:
        """The rows in the order the trials were asked."""
        return sorted(self.rows, key=lambda r: r.number)

    @property
    def metric_name(self) -> str:
        """The metric as a caption names it: `best validation accuracy`."""
        return f"best {METRIC_NAMES.get(self.search.metric, self.search.metric)}"

    def importance_note(self) -> str:
        """Why the importance figure is there or not, for the Markdown notes."""
        if self.importance is not None:
            return (
                "**Importance** of each searched setting: Optuna's PED-ANOVA evaluator over "
                f"the {self.finished} finished trials (how much each setting tells the top "
                "tenth of trials from the rest; the importances sum to 1)."
            )
        return (
            f"No importance figure: {self.finished} trial(s) finished, and the importance of "
            f"the settings is shown from {IMPORTANCE_MIN_TRIALS} finished trials on."
        )


def read_all(store: RunStore) -> tuple[list[SearchReport], list[str]]:
    """The report of every search recorded in the store that has a study, by name, and one
    line for each that could not be read."""
    reports, problems = [], []
    for search, _state in searches.queued(store):
        try:
            report = read(store, search)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            problems.append(f"search {search.name}: not exported ({e})")
            continue
        if report is not None:
            reports.append(report)
    return reports, problems


def read(store: RunStore, search: Search[Experiment]) -> SearchReport | None:
    """Search `search`'s report; None before its study began."""
    study = read_study(store, search)
    if study is None:
        return None
    records = {r.run_id: r for r in searches.trial_runs(store, search.name)}
    trials = study.get_trials(deepcopy=False)
    best = _best_number(study)
    rows = [_row(search, t, records.get(t.user_attrs.get(RUN_ID, "")), best) for t in trials]
    sign = -1.0 if search.maximise else 1.0
    rows.sort(key=lambda r: (not math.isfinite(r.metric), sign * r.metric, r.number))
    finished = sum(r.finished for r in rows)
    importance = _importance(study) if finished >= IMPORTANCE_MIN_TRIALS else None
    return SearchReport(search, rows, importance, _data(search, list(records.values())))


def _best_number(study: optuna.Study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no trial finished yet
        return None


def _row(
    search: Search[Experiment], t: FrozenTrial, record: RunRecord | None, best: int | None
) -> TrialRow:
    """Trial `t` as a row: its status and epochs from its run where one was made."""
    status = _STATES.get(t.state, str(t.state.name).lower())
    epochs = len(t.intermediate_values)
    if record is not None:
        status = str(record.status)
        if record.status is RunStatus.PRUNED and record.summary.reason:
            status = record.summary.reason
        epochs = record.summary.epochs_done or 0
    return TrialRow(
        number=t.number,
        name=f"{search.name}.t{t.number}",
        values={p.key: t.params.get(p.key) for p in search.space},
        metric=_metric(search, t),
        status=status,
        epochs=epochs,
        run_id=record.run_id if record is not None else "",
        pruned=t.state is TrialState.PRUNED,
        finished=t.state is TrialState.COMPLETE,
        best=t.number == best,
    )


def _metric(search: Search[Experiment], t: FrozenTrial) -> float:
    """What the study was told, or for a trial not told a value its best epoch so far."""
    if t.state is TrialState.COMPLETE and t.value is not None:
        return float(t.value)
    values = [v for v in t.intermediate_values.values() if math.isfinite(v)]
    if not values:
        return math.nan
    return max(values) if search.maximise else min(values)


def _importance(study: optuna.Study) -> dict[str, float] | None:
    """Each searched setting's importance (PED-ANOVA), most important first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a setting that took a single value
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator()
            )
        except (ValueError, RuntimeError):
            return None
    return {k: float(v) for k, v in found.items()}


def _data(search: Search[Experiment], records: list[RunRecord]) -> str:
    """The data line: the images a trial's run recorded, else as the settings give them."""
    base = search.base
    for r in records:
        s = r.summary
        if s.train_images is not None and s.test_images is not None:
            return tables.describe_data(
                base.dataset, s.train_images, s.test_images, s.val_images or 0
            )
    train, test = images_used(base.dataset, base.train_size, base.test_size)
    return tables.describe_data(base.dataset, train, test, base.val_size)


# --- tables -----------------------------------------------------------------------------


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def _shown_metric(report: SearchReport, v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v * 100:.2f}%" if report.search.metric == "val_acc" else f"{v:.4f}"


def to_csv(report: SearchReport) -> bytes:
    """The trials as CSV, best first: raw values, the metric at full precision (a fraction
    for val_acc), `best` 1 on the best trial; cells neutralised as every cnntui CSV's."""
    keys = [p.key for p in report.search.space]
    header = ["trial", "name", *keys, report.search.metric, "status", "epochs", "best", "run_id"]
    out: list[list[object]] = [list(header)]
    for r in report.rows:
        metric = r.metric if math.isfinite(r.metric) else ""
        line: list[object] = [r.number, r.name, *(r.values[k] for k in keys)]
        out.append([*line, metric, r.status, r.epochs, int(r.best), r.run_id])
    return tables.write_csv(out)


def _md_cells(report: SearchReport, r: TrialRow) -> list[str]:
    name = f"`{r.name}`" + (" **best**" if r.best else "")
    values = [_value(r.values[p.key]) for p in report.search.space]
    return [name, *values, _shown_metric(report, r.metric), r.status, str(r.epochs)]


def to_markdown(report: SearchReport) -> bytes:
    """The trials as a Markdown table, best first, with what the search was and notes."""
    s = report.search
    header = ["Trial", *(p.key for p in s.space), report.metric_name, "Status", "Epochs"]
    aligns = ["---", *("---:" for _ in s.space), "---:", "---", "---:"]
    lines = [f"# {s.name}: trials", "", f"Data: {report.data}.", ""]
    lines += [f"{s.describe()}.", "", tables.markdown_row(header), "|" + "|".join(aligns) + "|"]
    lines += [tables.markdown_row(_md_cells(report, r)) for r in report.rows]
    notes = [
        f"Sorted by the {report.metric_name} of any epoch a trial trained, best first; a "
        "pruned trial's is its best before it was stopped. **best** marks the study's best "
        "trial (the best finished one).",
        report.importance_note(),
    ]
    if report.importance:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in report.importance.items())
        notes.append(f"Importances: {shown}.")
    lines += ["", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines).encode("utf-8")


def to_latex(report: SearchReport) -> bytes:
    r"""The trials as a booktabs table, ready to `\input`; the best trial's row in bold."""
    s = report.search
    esc = tables.latex_escape
    header = ["Trial", *(p.key for p in s.space), report.metric_name, "Status", "Epochs"]
    body = []
    for r in report.rows:
        cells = [esc(r.name), *(esc(c) for c in _md_cells(report, r)[1:])]
        body.append([f"\\textbf{{{c}}}" for c in cells] if r.best else cells)
    aligns = "l" + "r" * len(s.space) + "rlr"
    columns = [
        tables.TexColumn(h, aligns[j], [cells[j] for cells in body]) for j, h in enumerate(header)
    ]
    caption = esc(
        f"{s.name}: trials, sorted by the {report.metric_name}, best first (bold: the best "
        f"trial). {report.data}."
    )
    label = "tab:search-" + "".join(c if c.isalnum() else "-" for c in s.name)
    lines = ["% Written by cnntui. Needs \\usepackage{booktabs} in the preamble."]
    lines += tables.tex_table(caption, label, columns, None)
    return "\n".join(lines).encode("utf-8")
