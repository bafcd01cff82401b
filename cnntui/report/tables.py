"""The results tables: the report's Tables 1–3 in one, as CSV (for a spreadsheet) and
Markdown (for the report).

Columns: who the experiment is, the settings that differ between the rows (Table 1's
controlled variables), then the metrics from `history.metrics` — nothing is recomputed here.
What the numbers were measured on (the dataset and the images used) is a caption line above
the Markdown table and three columns of the CSV.
CSV holds raw numbers (accuracies as fractions, times in seconds) at full precision, empty
where a value is unknown; Markdown holds the same numbers formatted for reading.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.config import SPEED_KEYS, UNGROUPED, Experiment, class_names
from ..core.config import images_used as images_used  # where callers have read data sizes from
from ..core.history import Metrics
from ..core.text import duration, safe, width
from ..runs.records import RunStatus
from . import stats

# CSV column, Markdown header (None: CSV only), in the order.
METRIC_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("final_test_acc", "Final test acc"),
    ("best_test_acc", "Best test acc"),
    ("epoch1_test_acc", "Epoch-1 test acc"),
    ("final_train_loss", "Final train loss"),
    ("final_test_loss", None),
    ("final_train_acc", None),
    ("gap", "Gap (train − test acc)"),
    ("params", "Params"),
    ("total_seconds", "Total time"),
    ("seconds_per_epoch", "Time / epoch"),
    ("epochs_to_target", "Epochs to target"),
    ("smoothness", "Smoothness"),
    ("best_epoch", None),
    ("best_val_acc", None),
)
SETTING_HEADERS = {
    "model": "Model",
    "dataset": "Dataset",
    "batch_size": "Batch size",
    "epochs": "Epochs",
    "optimizer": "Optimizer",
    "lr": "Learning rate",
    "momentum": "Momentum",
    "weight_decay": "Weight decay (L2)",
    "dropout": "Dropout",
    "seed": "Seed",
    "train_size": "Train images",
    "test_size": "Test images",
    "target_acc": "Target acc",
}
# How tables and figures name each dataset; synthetic data must never pass for a real one.
DATASET_NAMES = {
    "cifar10": "CIFAR-10",
    "fashion-mnist": "Fashion-MNIST",
    "synthetic": "synthetic data (not CIFAR-10)",
}

# The headline metrics aggregated over seeds: CSV stem, Metrics field.
AGGREGATES: tuple[tuple[str, str], ...] = (
    ("test_acc", "final_test_acc"),
    ("best_test_acc", "best_test_acc"),
    ("epoch1_test_acc", "epoch1_test_acc"),
    ("train_loss", "final_train_loss"),
    ("gap", "gap"),
)

SMOOTHNESS_NOTE = (
    "**Smoothness** is the standard deviation of the per-batch training losses around their "
    "100-batch moving average, divided by the mean batch loss: 0 is a perfectly smooth curve, "
    "and it grows with the batch-to-batch noise (small batches, a high learning rate)."
)


@dataclass(frozen=True)
class SeedResult:
    """One seed's counted run: its latest finished one."""

    seed: int | None
    run_id: str
    metrics: Metrics


@dataclass(frozen=True)
class Row:
    """One experiment's latest run, as a table row."""

    experiment: Experiment  # as in the experiments file: name, title, group
    ran_with: Experiment  # the resolved settings the run trained with
    status: RunStatus
    epochs_done: int
    params: int | None
    metrics: Metrics
    device: str
    run_id: str
    train_images: int | None = None  # the images the run used (None: not known)
    test_images: int | None = None
    # The last epoch's test-set confusion matrix, [true][predicted] (empty: not recorded).
    confusion: list[list[int]] = field(default_factory=list)
    val_images: int = 0  # held out of the training images for validation
    # Each seed's counted run (stats.seed_runs), for the mean ± std columns.
    seed_results: tuple[SeedResult, ...] = ()
    comparison: stats.Comparison | None = None  # against the group's reference
    class_names: tuple[str, ...] = ()  # as the run recorded them (empty: the dataset's own)
    # A [[search]]'s trial: whether it is its search's best (None: no trial).
    search_best: bool | None = None
    # Where each run the row counts ran (run id, RunSummary.environment()).
    environments: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def aggregate(self, key: str) -> stats.Aggregate:
        """A Metrics field over the seeds' counted runs."""
        return stats.aggregate(getattr(s.metrics, key) for s in self.seed_results)

    @property
    def n(self) -> int:
        """How many seeds' runs the row's aggregates count."""
        return len(self.seed_results)

    def class_accuracy(self) -> list[float]:
        """Per true class, the share of its test images predicted right (NaN: none)."""
        return [row[i] / sum(row) if sum(row) else math.nan for i, row in enumerate(self.confusion)]

    @property
    def data(self) -> str:
        """The data line under a table: dataset and the images the run used."""
        return describe_data(
            self.ran_with.dataset, self.train_images, self.test_images, self.val_images
        )

    def value(self, key: str) -> Any:
        """A table column's value: the parameter count or a Metrics field."""
        if key == "params":
            return self.params
        return getattr(self.metrics, key)


def describe_data(
    dataset: str, train_images: int | None, test_images: int | None, val_images: int = 0
) -> str:
    """`CIFAR-10, 50,000 train / 10,000 test images` (`45,000 train / 5,000 validation /
    10,000 test images` with a validation split), for a caption."""
    name = DATASET_NAMES.get(dataset, dataset)
    if train_images is None or test_images is None:
        return name
    val = f" / {val_images:,} validation" if val_images else ""
    return f"{name}, {train_images:,} train{val} / {test_images:,} test images"


def data_caption(rows: list[Row]) -> str:
    """One line saying what data the rows were measured on; which experiment used which
    when they differ."""
    if not rows:
        return ""
    by_data: dict[str, list[str]] = {}
    for r in rows:
        by_data.setdefault(r.data, []).append(r.experiment.name)
    if len(by_data) == 1:
        return f"Data: {next(iter(by_data))}."
    each = (f"{d} ({', '.join(f'`{n}`' for n in names)})" for d, names in by_data.items())
    return f"Data: {'; '.join(each)}."


def differing_keys(rows: list[Row]) -> list[str]:
    """The settings whose value is not the same in every row, in settings order."""
    if len(rows) < 2:
        return []
    ran = [r.ran_with for r in rows]
    # A row of several seeds stands for all of them: its latest run's seed is no setting.
    hidden = {"seeds"} | ({"seed"} if any(r.ran_with.seeds for r in rows) else set())
    return [k for k in ran[0].differing(ran) if k not in hidden]


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, tuple):
        return _keywords(v)
    return v


def _keywords(items: tuple[Any, ...]) -> str:
    """A tuple setting as text: model_args (sorted (name, value) pairs) as keyword arguments,
    `depth=2, width=8`; a list such as seeds as `0,1,2`; "" when empty."""
    if all(isinstance(p, tuple) and len(p) == 2 for p in items):
        return ", ".join(f"{k}={v}" for k, v in items)
    return ",".join(str(v) for v in items)


# What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> Any:
    """A CSV cell as a spreadsheet should show it: text that would start a formula
    (`=HYPERLINK(...)`, `-2+3`) gets a leading `'`; numbers, negative ones too, stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Iterable[Any]]) -> bytes:
    """Every CSV cnntui writes: each cell through `csv_text`, in UTF-8 with a byte-order
    mark, so spreadsheet programs show the Chinese titles."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([csv_text(c) for c in row] for row in rows)
    return buf.getvalue().encode("utf-8-sig")


def to_csv(rows: list[Row], with_group: bool = False) -> bytes:
    """The results table as CSV (see `write_csv`)."""
    # The data every row was measured on is always a column; `dataset` is not repeated as a
    # differing setting.
    keys = [k for k in differing_keys(rows) if k != "dataset"]
    header = ["name", "title", *(["group"] if with_group else []), "status", "epochs_done"]
    header += ["dataset", "train_images", "val_images", "test_images"]
    header += keys + [k for k, _ in METRIC_COLUMNS]
    header += [k for k in ("target_acc",) if k not in keys] + ["device", "run_id"]
    header += ["n", "seeds"] + [f"{stem}_{x}" for stem, _ in AGGREGATES for x in ("mean", "std")]
    header += ["reference", "test_acc_diff", "test_acc_diff_ci95_low", "test_acc_diff_ci95_high"]
    header += ["verdict", "ci_level", "holm_comparisons"]
    trials = any(r.search_best is not None for r in rows)
    header += ["search_best"] if trials else []  # 1: its search's best trial, 0: another
    out: list[list[object]] = [list(header)]
    for r in rows:
        e = r.experiment
        line: list[object] = [e.name, e.display_title, *([e.group] if with_group else [])]
        line += [r.status, r.epochs_done, r.ran_with.dataset]
        line += [_csv_value(r.train_images), r.val_images, _csv_value(r.test_images)]
        line += [_csv_value(getattr(r.ran_with, k)) for k in keys]
        line += [_csv_value(r.value(k)) for k, _ in METRIC_COLUMNS]
        if "target_acc" not in keys:
            line.append(r.ran_with.target_acc)
        line += [r.device, r.run_id]
        line += [r.n, " ".join(str(x.seed) for x in r.seed_results)]
        for _, key in AGGREGATES:
            agg = r.aggregate(key)
            line += [_csv_value(agg.mean), _csv_value(agg.std)]
        c = r.comparison
        if c is None:
            line += [""] * 7
        else:
            ref = c.verdict == stats.REFERENCE
            line += [int(ref), *(_csv_value(v) for v in (c.diff, c.low, c.high)), c.verdict]
            line += ["", ""] if ref or not math.isfinite(c.low) else [c.level, c.holm]
        if trials:
            line.append("" if r.search_best is None else int(r.search_best))
        out.append(line)
    return write_csv(out)


def _setting(v: Any) -> str:
    if v is None:
        return "all"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):  # model_args ("–": a built-in model takes none)
        return _keywords(v) or "–"
    return str(v)


def _metric(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not reached" if key == "epochs_to_target" else "–"
    if key.endswith("_acc"):  # accuracies are fractions, read as percentages
        return f"{v * 100:.2f}%"
    if key == "gap":
        return f"{v * 100:+.2f} pp"
    if key == "params":
        return f"{v:,}"
    if key in ("total_seconds", "seconds_per_epoch"):
        return duration(v)
    if key == "epochs_to_target":
        return str(v)
    if key == "smoothness":
        return f"{v:.3f}"
    return f"{v:.4f}"


def markdown_row(cells: Iterable[str]) -> str:
    """A Markdown table's row, its cells escaped (`|` and line breaks)."""
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _who(e: Experiment) -> str:
    return f"{e.display_title} (`{e.name}`)" if e.title and e.title != e.name else f"`{e.name}`"


def to_markdown(
    rows: list[Row],
    heading: str,
    with_group: bool = False,
    missing: list[str] | None = None,
    skipped: list[str] | None = None,
) -> bytes:
    """The results table as Markdown for a report, with notes on missing and skipped runs."""
    cols = _Columns.of(rows, with_group)
    aligns = ["---" if a == "l" else "---:" for a in cols.aligns(rows, "rrrr")]
    lines = [f"# {heading}", "", data_caption(rows), "", markdown_row(cols.header())]
    lines.append("|" + "|".join(aligns) + "|")
    lines += [markdown_row(_markdown_cells(i, r, cols)) for i, r in enumerate(rows, 1)]
    notes = _markdown_notes(rows, cols.unfinished, missing, skipped)
    lines += ["", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines).encode("utf-8")


@dataclass(frozen=True)
class _Columns:
    """Which optional columns a results table has: the group, the status (some run not
    finished), the settings that differ, the seeds' mean ± std, and the *best* test
    accuracy (only where some run has a validation split to choose its best epoch)."""

    with_group: bool
    unfinished: bool
    keys: list[str]
    seeded: bool
    validated: bool = True
    holm: bool = False  # some verdict is Holm-adjusted (its interval is not a 95% one)

    @classmethod
    def of(cls, rows: list[Row], with_group: bool) -> _Columns:
        """The columns `rows` need."""
        unfinished = any(r.status != RunStatus.FINISHED for r in rows)
        seeded, validated = has_seeds(rows), has_validation(rows)
        holm = any(r.comparison is not None and r.comparison.holm > 1 for r in rows)
        return cls(with_group, unfinished, differing_keys(rows), seeded, validated, holm)

    @property
    def metrics(self) -> list[tuple[str, str]]:
        """The metric columns shown: key, heading."""
        return [(k, h) for k, h in METRIC_COLUMNS if h and (self.validated or k != "best_test_acc")]

    def header(self) -> list[str]:
        """The full table's column headings, in order."""
        header = ["#", "Experiment", *(["Group"] if self.with_group else [])]
        header += ["Status"] if self.unfinished else []
        header += [SETTING_HEADERS.get(k, k) for k in self.keys]
        if self.seeded:
            header += [*SEED_HEADERS[:2], HOLM_HEADER if self.holm else SEED_HEADERS[2]]
            header += SEED_HEADERS[3:]
        return header + [h for _, h in self.metrics]

    def aligns(self, rows: list[Row], seeds: str) -> str:
        """Each column's alignment, `l` (text) or `r` (numbers); `seeds` for the seeds' four."""
        out = "rl" + "l" * (self.with_group + self.unfinished)
        out += "".join("l" if self.is_text(rows, k) else "r" for k in self.keys)
        return out + (seeds if self.seeded else "") + "r" * len(self.metrics)

    @staticmethod
    def is_text(rows: list[Row], key: str) -> bool:
        """Whether a setting's column holds text (left-aligned) rather than numbers."""
        return any(isinstance(getattr(r.ran_with, key), str) for r in rows)


def _markdown_cells(i: int, r: Row, cols: _Columns) -> list[str]:
    """Row `i` of the Markdown table, unescaped."""
    e = r.experiment
    cells = [str(i), _who(e), *([e.group or "–"] if cols.with_group else [])]
    if cols.unfinished:
        cells.append(r.status if r.status == RunStatus.FINISHED else f"{_progress(r)} ep.")
    cells += [_setting(getattr(r.ran_with, k)) for k in cols.keys]
    cells += seed_cells(r) if cols.seeded else []
    if r.epochs_done:
        cells += [_metric(k, r.value(k)) for k, _ in cols.metrics]
    else:  # nothing measured yet
        cells += [_metric(k, r.value(k)) if k == "params" else "–" for k, _ in cols.metrics]
    return cells


def _progress(r: Row) -> str:
    """`cancelled, 2/5`: the status and the epochs done of those planned."""
    return f"{r.status}, {r.epochs_done}/{r.ran_with.epochs}"


def _markdown_notes(
    rows: list[Row], unfinished: bool, missing: list[str] | None, skipped: list[str] | None
) -> list[str]:
    """The notes under the Markdown table: what each metric means, and what is left out."""
    targets = sorted({r.ran_with.target_acc for r in rows})
    devices = sorted({r.device for r in rows if r.device})
    notes = [
        "Accuracies are on the test set, measured after every epoch: *final* after the last "
        "epoch run, *epoch-1* after the first. No run has a validation split (`val_size`), "
        "so none has a *best* epoch: the test set does not choose the model."
        if not has_validation(rows)
        else "Accuracies are on the test set, measured after every epoch: *final* after the "
        "last epoch run, *best* at the epoch of highest validation accuracy, *epoch-1* after "
        "the first. A run without a validation split has no *best* (–): the test set does "
        "not choose the model.",
        "**Gap** is final training accuracy minus final test accuracy, in percentage points "
        "(training accuracy is measured on the fly during the epoch, with dropout active).",
        "**Epochs to target**: the first epoch whose test accuracy reached "
        + " / ".join(f"{t * 100:g}%" for t in targets)
        + " (the `target_acc` setting).",
        SMOOTHNESS_NOTE,
        "**Total time** is the wall-clock time of training and evaluation"
        + (f" on {', '.join(devices)}" if devices else "")
        + "; *time / epoch* is its mean per epoch.",
    ]
    if unfinished:
        notes.append("Runs not *finished* are shown with the epochs they completed.")
    notes += seed_notes(rows)
    notes += environment_notes([e for r in rows for e in r.environments], markdown=True)
    if missing:
        notes.append(
            "Nothing recorded yet, so not in the table: " + ", ".join(f"`{m}`" for m in missing)
        )
    if skipped:
        notes.append(
            "Not in the table, because the files of its latest run could not be read: "
            + ", ".join(f"`{m}`" for m in skipped)
        )
    return notes


NOT_RECORDED = "not recorded"
MODEL_FILE = "model file "  # RunSummary.environment()'s label of a user model's hash


def environment_notes(
    environments: Iterable[tuple[str, Mapping[str, str]]], markdown: bool = False
) -> list[str]:
    """What the runs (run id, RunSummary.environment()) ran with: one line of what they all
    agree on, one of where they differ (`runs differ in torch (2.14.1 on 5 runs, 2.13.0 on
    2)`); none where no run recorded any (runs from before it was recorded)."""
    runs = dict(environments)  # a run counted twice (latest and a seed's) is one run
    labels = list(dict.fromkeys(label for env in runs.values() for label in env))
    agreed, differ = [], []
    for label in labels:
        if label.startswith(MODEL_FILE):
            continue  # each experiment's own model, a setting: not where the runs ran
        counts = Counter(safe(env.get(label, NOT_RECORDED)) for env in runs.values())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if len(ranked) == 1:
            agreed.append(f"{label} {ranked[0][0]}")
            continue
        (first, n), *rest = ranked
        shares = [f"{first} on {n} run{'s' if n != 1 else ''}", *(f"{v} on {k}" for v, k in rest)]
        differ.append(f"{label} ({', '.join(shares)})")
    notes = []
    if agreed:
        every = f"all {len(runs)} runs" if len(runs) > 1 else "1 run"
        head = "**Environment**" if markdown else "environment"
        notes.append(f"{head} ({every}): {', '.join(agreed)}.")
    if differ:
        notes.append(f"Runs differ in {'; '.join(differ)}: compare their results with care.")
    return notes


SEED_HEADERS = ["n", "Test acc (mean ± std)", "Δ vs reference [95% CI]", "Beyond noise?"]
HOLM_HEADER = "Δ vs reference [Holm CI]"  # where some verdict is Holm-adjusted


def has_validation(rows: list[Row]) -> bool:
    """Whether any row's run had a validation split, so has a *best* epoch."""
    return any(r.val_images > 0 or math.isfinite(r.metrics.best_val_acc) for r in rows)


def has_seeds(rows: list[Row]) -> bool:
    """Whether any row aggregates several seeds (then the tables show mean ± std)."""
    return any(r.n > 1 for r in rows)


def seed_cells(r: Row) -> list[str]:
    """n, mean ± std of the final test accuracy, the difference from the reference with its
    interval, and the verdict."""
    agg = r.aggregate("final_test_acc")
    if agg.n == 0:
        return ["0", "–", "–", "no finished run"]
    mean = f"{agg.mean * 100:.2f}%" + (f" ± {agg.std * 100:.2f}" if agg.n > 1 else "")
    c = r.comparison
    if c is None:
        return [str(agg.n), mean, "–", "–"]
    verdict = stats.ONE_SEED if agg.n == 1 and c.verdict != stats.REFERENCE else c.verdict
    return [str(agg.n), mean, stats.pp_interval(c), verdict]


def seed_notes(rows: list[Row]) -> list[str]:
    """What a reader of the tables should know about seeds: error bars and their absence."""
    if not has_seeds(rows):
        if rows and all(r.n == 1 for r in rows):
            return [
                "One seed per experiment: no error bars, so a small difference may be noise "
                "(`seeds = [0, 1, 2]` trains each with three)."
            ]
        return []
    return [
        "**n** is the number of seeds counted: the latest finished run of each seed, with "
        "the settings of the experiment's newest finished run. **Mean ± std** is over them "
        "(sample standard deviation); the other metric columns are the latest run's.",
        "**Δ vs reference** is the difference of mean final test accuracy from the group's "
        "reference (its first experiment, or the one with `reference = true`), in percentage "
        "points, with Welch's 95% confidence interval. *Within noise*: the interval "
        "contains 0; with one seed on either side there is no interval.",
        *holm_notes(rows),
    ]


def holm_notes(rows: list[Row]) -> list[str]:
    """The note on the verdicts Holm adjusted: over how many comparisons, in which group."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.comparison is not None and r.comparison.holm > 1:
            counts[r.experiment.group or "–"] = r.comparison.holm
    if not counts:
        return []
    several = len(counts) > 1
    each = (f"{k} comparisons" + (f" in group {g}" if several else "") for g, k in counts.items())
    over = "Holm-adjusted over " + ", ".join(each)
    return [
        f"Verdicts are {over} with the group's reference, so that the group's chance of "
        "any false *beyond noise* stays at 5%: the comparison with the smallest p-value is "
        "tested at 5%/K, the next at 5%/(K − 1), ..., and from the first within noise on, "
        "all the rest are within noise. Each interval is at the level its comparison was "
        "tested at (e.g. 98.33% for the first of 3), so it contains 0 exactly when the "
        "verdict is *within noise*."
    ]


def _class_header(rows: list[Row]) -> list[str]:
    """The class names of the rows' dataset; "class i" when the rows disagree on it."""
    sizes = {len(r.confusion) for r in rows if r.confusion}
    if not sizes:
        return []
    k = max(sizes)
    datasets = {(r.ran_with.dataset, r.class_names) for r in rows if r.confusion}
    if len(datasets) == 1 and len(sizes) == 1:
        row = next(r for r in rows if r.confusion)
        return list(class_names(row.ran_with.dataset, k, row.class_names, row.ran_with.base_dir))
    return [f"class {i}" for i in range(k)]


def per_class_csv(rows: list[Row]) -> bytes:
    """Per-class test accuracy (fractions) of the last epoch, one row per experiment."""
    classes = _class_header(rows)
    out: list[list[object]] = [["name", "title", "dataset", "test_images", *classes, "overall"]]
    for r in rows:
        acc = r.class_accuracy()
        acc += [math.nan] * (len(classes) - len(acc))
        total = sum(map(sum, r.confusion))
        overall = sum(r.confusion[i][i] for i in range(len(r.confusion))) / total if total else None
        line: list[object] = [r.experiment.name, r.experiment.display_title, r.ran_with.dataset]
        line += [_csv_value(total or None), *(_csv_value(a) for a in acc), _csv_value(overall)]
        out.append(line)
    return write_csv(out)


def per_class_markdown(rows: list[Row], heading: str) -> bytes:
    """The per-class accuracy table for a report: classes down, experiments across (ten
    classes read better as rows than as ten columns)."""
    classes = _class_header(rows)
    lines = [f"# {heading}", "", data_caption(rows), ""]
    shown = [r for r in rows if r.confusion]
    if not classes or not shown:
        lines += ["No run recorded a confusion matrix yet.", ""]
        return "\n".join(lines).encode("utf-8")
    lines.append(markdown_row(["Class", *(_who(r.experiment) for r in shown)]))
    lines.append("|---|" + "---:|" * len(shown))
    accs = [r.class_accuracy() for r in shown]
    for i, name in enumerate(classes):
        cells = [_metric("final_test_acc", a[i] if i < len(a) else math.nan) for a in accs]
        lines.append(markdown_row([name, *cells]))
    lines += [
        "",
        "- Per-class accuracy: the share of each class's test images predicted as that class, "
        "after the last epoch run (the diagonal of `confusion.png` over its row).",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` as LaTeX source that prints it as is (any other character, CJK included,
    passes through: the document's engine and fonts draw it)."""
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)
    out = out.replace("–", "--").replace("−", "$-$")  # dashes every engine has
    return out.replace("±", "$\\pm$").replace("Δ", "$\\Delta$")  # math that pdflatex has


# The report's tables (results.tex) are printed at the document's own type size, so each has
# at most MAX_COLUMNS columns: the experiment, the settings that differ, a few metrics.
MAX_COLUMNS = 9
# Settings the compact tables do not compare in columns: the data (the caption says it), the
# seed (a row stands for all its seeds) and where and how fast a run trained.
NOT_COMPARED = SPEED_KEYS | {"dataset", "train_size", "test_size", "seed", "seeds", "data_dir"}
REGULARISATION_KEYS = ("weight_decay", "dropout")
# Table 1 (configurations) and Table 3 (architectures, when `model` differs): the metrics.
RESULT_METRICS = ("final_test_acc", "epochs_to_target", "total_seconds")
ARCHITECTURE_METRICS = (
    "final_test_acc",
    "epoch1_test_acc",
    "final_train_loss",
    "params",
    "total_seconds",
)
# Table 2: regularisation strength against these.
REGULARISATION_METRICS = ("final_train_loss", "final_test_acc")
REPORT_HEADERS = {
    "final_test_acc": "Test acc. (%)",
    "epoch1_test_acc": "Epoch-1 test acc. (%)",
    "final_train_loss": "Final train loss",
    "params": "Params",
    "total_seconds": "Total time",
}
# The compact tables' setting headers, short as in the report's (its Table 2 says L2), each
# spelled out in the caption.
SHORT_SETTING_HEADERS = {
    "lr": ("lr", "learning rate"),
    "weight_decay": ("L2", "weight decay"),
    "momentum": ("Mom.", "SGD momentum"),
}
# A table of at most this many experiments has them as its columns (if that is narrower).
TRANSPOSE_ROWS = 3
# Between columns in the compact tables: LaTeX's 6 pt each side would push a nine-column
# table past the text width of an article.
COLUMN_SEP = "3pt"
FULL_PART_COLUMNS = 6  # columns after # and Experiment in each part of the full table
LATEX_NOTE = (
    "% Written by cnntui. Needs \\usepackage{booktabs}{extra} in the preamble; Chinese titles",
    "% need a CJK font under xelatex: xeCJK or ctex, or fontspec's \\setmainfont with one.",
)


def _latex_note(extra: str = "") -> list[str]:
    return [LATEX_NOTE[0].replace("{extra}", extra), LATEX_NOTE[1]]


def wrap(text: str, cols: int) -> list[str]:
    """`text` in lines of at most `cols` terminal columns, broken at spaces (a word wider
    than that, such as a CJK title without spaces, is broken between its characters)."""
    pieces: list[str] = []
    for word in text.split():
        while width(word) > cols and width(word) > len(word):  # wide characters
            cut = 1
            while width(word[: cut + 1]) <= cols:
                cut += 1
            pieces.append(word[:cut])
            word = word[cut:]
        pieces.append(word)
    lines: list[str] = []
    for piece in pieces:
        if lines and width(lines[-1]) + 1 + width(piece) <= cols:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return lines or [""]


# A line break in a table that a following `[` cannot turn into \\[<length>].
BREAK = r"\\{}"


def _stack(lines: list[str], align: str, where: str = "t") -> str:
    """LaTeX source lines one above the other in one cell (a nested tabular)."""
    if len(lines) == 1:
        return lines[0]
    return (
        f"\\begin{{tabular}}[{where}]{{@{{}}{align}@{{}}}}" + BREAK.join(lines) + r"\end{tabular}"
    )


def _row(cells: list[str]) -> str:
    """A table row's source; `{}` first where a `[` would be read as the \\\\ before's length."""
    text = " & ".join(cells) + r" \\"
    return "{}" + text if text.startswith("[") else text


def _label(heading: str) -> str:
    return "tab:" + "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in heading)


@dataclass(frozen=True)
class TexColumn:
    """A column of a LaTeX table: its header (plain text), alignment and cells (LaTeX)."""

    header: str
    align: str
    cells: list[str]


def tex_table(
    caption: str, label: str, columns: list[TexColumn], header_cols: int | None, sep: str = ""
) -> list[str]:
    """A booktabs table float; headers are wrapped at `header_cols` columns (None: not)."""
    spec = "".join(c.align for c in columns)
    header = [
        _stack([latex_escape(x) for x in wrap(c.header, header_cols)], c.align, "b")
        if header_cols
        else latex_escape(c.header)
        for c in columns
    ]
    body = [_row(list(row)) for row in zip(*(c.cells for c in columns), strict=True)]
    return [
        r"\begin{table}[htbp]",
        r"\centering",
        *([f"\\setlength{{\\tabcolsep}}{{{sep}}}"] if sep else []),
        r"\caption{" + caption + "}",
        r"\label{" + label + "}",
        r"\begin{tabular}{@{}" + spec + "@{}}",
        r"\toprule",
        _row(header),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ]


def to_latex(rows: list[Row], group: str | None = None) -> bytes:
    r"""The report's tables of a group, ready to `\input`: booktabs, at the document's type
    size, a few columns each. Every group gets its results (Table 1: the settings that
    differ, final test accuracy, epochs to target, time; Table 3 when the architecture
    differs: final and epoch-1 test accuracy, final train loss, parameters, time); a group
    comparing regularisation also Table 2 (its strength against final train loss and test
    accuracy). Without `group`, every group of `rows` in turn."""
    by_group: dict[str, list[Row]] = {}
    for r in rows:
        by_group.setdefault(group or r.experiment.group or UNGROUPED, []).append(r)
    lines = _latex_note()
    for name, members in by_group.items():
        for caption, label, columns in report_tables(members, name):
            lines += tex_table(caption, label, columns, 8, COLUMN_SEP)
    return "\n".join(lines).encode("utf-8")


def report_tables(rows: list[Row], group: str) -> list[tuple[str, str, list[TexColumn]]]:
    """The caption, label and columns of each of a group's compact tables."""
    keys = [k for k in differing_keys(rows) if k not in NOT_COMPARED]
    metric_keys = ARCHITECTURE_METRICS if "model" in keys else RESULT_METRICS
    seeded = has_seeds(rows)
    heading = f"{group}: results"
    settings = [_setting_column(rows, k) for k in keys]
    if 1 + len(keys) + len(metric_keys) + _shows_n(rows, seeded) > MAX_COLUMNS:
        # One wrapped column, whose settings the caption need not spell out.
        settings = [TexColumn("Settings", "l", [_settings_cell(r, keys) for r in rows])]
        keys = []
    columns = _compact(rows, seeded, settings, metric_keys)
    out = [(_caption(heading, rows, seeded, keys), _label(heading), columns)]
    chosen = regularisation_rows(rows)
    if chosen:
        heading = (
            f"{group}: regularisation strength (strongest first) against final training "
            "loss and test accuracy"
        )
        reg_keys = [*REGULARISATION_KEYS]
        reg_keys += ["epochs"] if "epochs" in differing_keys(chosen) else []
        settings = [_setting_column(chosen, k) for k in reg_keys]
        columns = _compact(chosen, seeded, settings, REGULARISATION_METRICS)
        caption = _caption(heading, chosen, seeded, reg_keys)
        out.append((caption, _label(f"{group}: regularisation"), columns))
    return out


def _shows_n(rows: list[Row], seeded: bool) -> bool:
    """Whether a compact table has an n column: its rows count different numbers of seeds."""
    return seeded and len({r.n for r in rows}) > 1


def _compact(
    rows: list[Row], seeded: bool, settings: list[TexColumn], metric_keys: tuple[str, ...]
) -> list[TexColumn]:
    """A compact table's columns: the experiment, `settings`, n where it varies, the metrics."""
    columns = [_experiment_column(rows), *settings]
    columns += [TexColumn("n", "r", [str(r.n) for r in rows])] if _shows_n(rows, seeded) else []
    columns += [_metric_column(rows, k, seeded) for k in metric_keys]
    return _oriented(columns, rows)


def _oriented(columns: list[TexColumn], rows: list[Row]) -> list[TexColumn]:
    """`columns` (the experiment first), or a few experiments as columns, their settings
    and metrics as rows, as the report's Table 3 has its two architectures: narrower."""
    if len(rows) > TRANSPOSE_ROWS or len(columns) <= len(rows) + 1:
        return columns
    out = [TexColumn("", "l", [latex_escape(c.header) for c in columns[1:]])]
    for i, r in enumerate(rows):
        cells = [c.cells[i] for c in columns[1:]]
        out.append(TexColumn(r.experiment.display_title, "r", cells))
    return out


def regularisation_rows(rows: list[Row]) -> list[Row]:
    """Table 2's rows, strongest regularisation first: the group's reference and each
    experiment that differs from it only in regularisation (or training length); none when
    their regularisation is all the same."""
    if not rows:
        return []
    ref_exp = stats.reference_of([r.experiment for r in rows])
    ref = next(r for r in rows if r.experiment is ref_exp)
    allowed = set(REGULARISATION_KEYS) | {"epochs"} | NOT_COMPARED - {"dataset"}
    allowed -= {"train_size", "test_size"}
    chosen = [r for r in rows if set(ref.ran_with.differing([ref.ran_with, r.ran_with])) <= allowed]
    strengths = {_strength(r) for r in chosen}
    if len(strengths) < 2:
        return []
    return sorted(chosen, key=_strength, reverse=True)


def _strength(r: Row) -> tuple[float, ...]:
    return tuple(float(getattr(r.ran_with, k) or 0.0) for k in REGULARISATION_KEYS)


def _caption(heading: str, rows: list[Row], seeded: bool, keys: list[str]) -> str:
    """The caption: the heading, the data, what the short headers of the setting columns
    `keys` stand for, and what a reader must know to read the numbers."""
    parts = [f"{heading}.", data_caption(rows).replace("`", "")]
    short = [SHORT_SETTING_HEADERS[k] for k in keys if k in SHORT_SETTING_HEADERS]
    if short:
        parts.append("; ".join(f"{a}: {b}" for a, b in short) + ".")
    if seeded:
        ns = sorted({r.n for r in rows})
        over = f"{ns[0]} seeds" if len(ns) == 1 else "the n seeds counted"
        parts.append(f"Accuracies and losses: mean ± std over {over}.")
    unfinished = [r for r in rows if r.status != RunStatus.FINISHED]
    if unfinished:
        done = (f"{r.experiment.display_title} ({_progress(r)} epochs)" for r in unfinished)
        parts.append(f"Not finished: {', '.join(done)}.")
    return latex_escape(" ".join(p for p in parts if p))


def _experiment_column(rows: list[Row]) -> TexColumn:
    cells = [
        _stack([latex_escape(x) for x in wrap(r.experiment.display_title, 20)], "l") for r in rows
    ]
    return TexColumn("Experiment", "l", cells)


def _setting_column(rows: list[Row], key: str) -> TexColumn:
    cells = [latex_escape(_setting(getattr(r.ran_with, key))) for r in rows]
    align = "l" if _Columns.is_text(rows, key) else "r"
    header = SHORT_SETTING_HEADERS.get(key, (SETTING_HEADERS.get(key, key), ""))[0]
    return TexColumn(header, align, cells)


def _settings_cell(r: Row, keys: list[str]) -> str:
    text = ", ".join(f"{k} {_setting(getattr(r.ran_with, k))}" for k in keys)
    return _stack([latex_escape(x) for x in wrap(text, 24)], "l")


def _metric_column(rows: list[Row], key: str, seeded: bool) -> TexColumn:
    header = REPORT_HEADERS.get(key, key)
    if key == "epochs_to_target":
        targets = {r.ran_with.target_acc for r in rows}
        header = f"Epochs to {targets.pop() * 100:g}%" if len(targets) == 1 else "Epochs to target"
    if key == "total_seconds":
        unit, per = time_unit([r.metrics.total_seconds for r in rows if r.epochs_done])
        header = f"Time ({unit})"
        cells = [f"{r.metrics.total_seconds / per:.1f}" if r.epochs_done else "--" for r in rows]
        return TexColumn(header, "r", cells)
    return TexColumn(header, "r", [_report_value(r, key, seeded) for r in rows])


def time_unit(seconds: list[float]) -> tuple[str, float]:
    """The unit a column of times reads best in (s, min or h) and its seconds."""
    longest = max((s for s in seconds if math.isfinite(s)), default=0.0)
    if longest < 120:
        return "s", 1.0
    return ("min", 60.0) if longest < 7200 else ("h", 3600.0)


def _report_value(r: Row, key: str, seeded: bool) -> str:
    """A compact table's cell: a percentage without its sign (the header has it), mean ±
    std over the seeds where the table has several."""
    if not r.epochs_done and key != "params":
        return "--"
    if seeded and key in dict(AGGREGATES).values():
        agg = r.aggregate(key)
        if agg.n == 0:
            return "--"
        # Over a few seeds the std is about a point: one decimal of a percentage is enough.
        mean = _number(key, agg.mean, 1, 3)
        return mean + (f"\\,$\\pm$\\,{_number(key, agg.std, 1, 3)}" if agg.n > 1 else "")
    v = r.value(key)
    if key in ("final_test_acc", "epoch1_test_acc", "final_train_loss"):
        return _number(key, v)
    if key == "epochs_to_target" and v is None:  # not reached in the epochs it ran
        return f"$>${r.epochs_done}"
    return latex_escape(_metric(key, v))


def _number(key: str, v: float, pct_digits: int = 2, loss_digits: int = 4) -> str:
    if not math.isfinite(v):
        return "--"
    return f"{v * 100:.{pct_digits}f}" if key.endswith("_acc") else f"{v:.{loss_digits}f}"


def to_latex_full(rows: list[Row], heading: str, with_group: bool = False) -> bytes:
    r"""Every column of the Markdown table in LaTeX, for an appendix: on landscape pages,
    split into tables of at most FULL_PART_COLUMNS columns after # and Experiment."""
    cols = _Columns.of(rows, with_group)
    spec = cols.aligns(rows, "rrll")
    cells = [_latex_cells(i, r, cols) for i, r in enumerate(rows, 1)]
    columns = [TexColumn(h, spec[j], [c[j] for c in cells]) for j, h in enumerate(cols.header())]
    rest = columns[2:]
    parts = [rest[i : i + FULL_PART_COLUMNS] for i in range(0, len(rest), FULL_PART_COLUMNS)]
    lines = _latex_note(" and \\usepackage{pdflscape}")
    data = data_caption(rows).replace("`", "")
    for p, part in enumerate(parts, 1):
        of = f" ({p} of {len(parts)})" if len(parts) > 1 else ""
        caption = latex_escape(f"{heading}, every column{of}. {data}")
        label = _label(f"{heading}-full") + (f"-{p}" if len(parts) > 1 else "")
        # A page of its own each: a float left to a later page would not be turned.
        table = tex_table(caption, label, columns[:2] + part, 14)
        lines += [r"\begin{landscape}", *table[:-1], r"\end{landscape}", ""]
    return "\n".join(lines).encode("utf-8")


def _latex_cells(i: int, r: Row, cols: _Columns) -> list[str]:
    """Row `i` of the full LaTeX table, as LaTeX source: the Markdown table's cells."""
    e = r.experiment
    who = [latex_escape(x) for x in wrap(e.display_title, 24)]
    if e.title and e.title != e.name:
        who.append("(\\texttt{" + latex_escape(e.name) + "})")
    shown = _markdown_cells(i, r, cols)
    cells = [str(i), _stack(who, "l"), *(latex_escape(c) for c in shown[2:])]
    gap = len(shown) - len(cols.metrics) + [k for k, _ in cols.metrics].index("gap")
    if shown[gap].startswith(("-", "+")):  # a sign, not a hyphen
        cells[gap] = f"${shown[gap][0]}${shown[gap][1:]}"
    return cells
