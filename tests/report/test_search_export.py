"""A `[[search]]`'s exports: its trials' table (CSV, Markdown, LaTeX) sorted by the metric with
the best marked, its figures, the best trial marked in its group's results.csv. The studies are
written through SearchStudy with made-up metrics and the trials' runs through the store, so no
trial trains."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
from matplotlib import image as mpimage

from cnntui.core import config
from cnntui.core.events import BatchLosses, EpochEnd
from cnntui.core.history import History
from cnntui.report.export import export_all
from cnntui.runs import searches
from cnntui.runs.records import RunStatus
from cnntui.runs.search import SearchStudy
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment

FAST_DPI = 40
TOML = """\
[defaults]
dataset = "synthetic"
train_size = 256
test_size = 64
val_size = 64
batch_size = 32
epochs = 3
device = "cpu"

[[search]]
name = "small"
group = "few"
trials = 4
sampler = "random"
lr = { log = [1e-4, 0.3] }
batch_size = { choice = [16, 32] }

[[search]]
name = "big"
group = "many"
trials = 14
sampler = "random"
lr = { log = [1e-4, 0.3] }
momentum = { range = [0.0, 0.95] }
"""


def history(val_accs: list[float]) -> History:
    """A run's history of one batch and these validation accuracies per epoch."""
    h = History()
    for epoch, acc in enumerate(val_accs):
        h.add(BatchLosses("t", epoch, epoch, (2.0 - acc,)))
        h.add(EpochEnd("t", epoch, 2.0 - acc, acc, 2.0 - acc, acc, 0.1, 2.0 - acc, acc))
    return h


def run_trials(
    store: RunStore, search, pruned: set[int], reason: str = "pruned at epoch 1"
) -> None:
    """Every trial of `search`: trial N's validation accuracy climbs to a value set by its lr
    (so the metric orders the trials); the trials in `pruned` stop after epoch 1, their runs
    saying `reason`."""
    searches.save(store, search, "active")
    study = SearchStudy(search, store)
    while study.to_ask():
        trial = study.ask()
        run = store.create(trial.experiment)
        study.attach(trial.number, run.run_id)
        top = 0.2 + 0.7 * math.log10(trial.experiment.lr / 1e-4) / math.log10(3000)
        accs = [top * 0.6, top * 0.9, top][: 1 if trial.number in pruned else 3]
        for epoch, acc in enumerate(accs, 1):
            study.report(run.run_id, epoch, acc)
        if trial.number in pruned:
            run.save(history(accs), RunStatus.PRUNED, reason=reason)
            study.tell(run.run_id, "pruned")
        else:
            run.save(history(accs), RunStatus.FINISHED)
            study.tell(run.run_id, max(accs))
        run.release()
    searches.save(store, search, "done")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two searches (4 trials, one pruned with a formula for its reason; 14 trials, two
    pruned), an experiment beside the first in its group, exported once."""
    root = tmp_path_factory.mktemp("search_export")
    store = RunStore(root / "runs")
    small, big = config.parse(TOML, "e.toml").searches
    # A reason as a hand-edited summary.json (or another tool) could leave it: a formula.
    run_trials(store, small, pruned={1}, reason='=HYPERLINK("http://x","y")')
    run_trials(store, big, pruned={3, 7})
    other = tiny_experiment(name="plain", group="few", val_size=64)
    run = store.create(other)
    run.save(history([0.3, 0.4]), RunStatus.FINISHED)
    run.release()
    result = export_all(store, [other], root / "exports", ("png", "pdf"), dpi=FAST_DPI)
    return store, result


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig"))))


def test_each_search_gets_its_table_and_figures_in_its_group(exported) -> None:
    _, result = exported
    out = result.folder
    for group, name in (("few", "small"), ("many", "big")):
        for suffix in (".csv", ".md", ".tex", "_trials.png", "_trials.pdf", "_settings.png"):
            path = out / group / f"{name}{suffix}"
            assert path in result.files and path.stat().st_size > 0, path
    assert (out / "many" / "results.csv").is_file()  # a group of trials alone has its tables
    assert not (out / "many" / "comparison.png").exists()  # ... and no curves of 14 trials
    pixels = mpimage.imread(out / "many" / "big_trials.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > pixels.shape[0]  # a landscape figure


def test_the_trials_table_is_sorted_by_the_metric_with_the_best_marked(exported) -> None:
    store, result = exported
    table = rows(result.folder / "many" / "big.csv")
    assert len(table) == 14
    assert list(table[0]) == [
        "trial",
        "name",
        "lr",
        "momentum",
        "val_acc",
        "status",
        "epochs",
        "best",
        "run_id",
    ]
    metrics = [float(r["val_acc"]) for r in table]
    assert metrics == sorted(metrics, reverse=True)
    finished = [r for r in table if r["status"] == "finished"]
    assert [r["best"] for r in table].count("1") == 1
    assert finished[0]["best"] == "1" and finished[0]["epochs"] == "3"
    best = next(r for r in table if r["best"] == "1")
    ran = store.runs(best["name"])[0].experiment()
    assert float(best["lr"]) == pytest.approx(ran.lr)  # the sampled value the run trained
    md = (result.folder / "many" / "big.md").read_text()
    assert f"| `{best['name']}` **best** |" in md
    assert (
        "\\textbf{" + best["name"].replace("_", "\\_")
        in (result.folder / "many" / "big.tex").read_text()
    )


def test_a_pruned_trial_says_at_which_epoch(exported) -> None:
    _, result = exported
    table = {r["name"]: r for r in rows(result.folder / "many" / "big.csv")}
    for n in (3, 7):
        assert table[f"big.t{n}"]["status"] == "pruned at epoch 1"
        assert table[f"big.t{n}"]["epochs"] == "1" and table[f"big.t{n}"]["best"] == "0"
    md = (result.folder / "many" / "big.md").read_text()
    assert md.count("| pruned at epoch 1 |") == 2


def test_the_importance_figure_needs_enough_finished_trials(exported) -> None:
    from cnntui.report.search_report import IMPORTANCE_MIN_TRIALS

    _, result = exported
    out = result.folder
    assert 3 < IMPORTANCE_MIN_TRIALS <= 12  # small: 3 finished; big: 12
    assert not (out / "few" / "small_importance.png").exists()
    assert (
        f"from {IMPORTANCE_MIN_TRIALS} finished trials on" in (out / "few" / "small.md").read_text()
    )
    assert (out / "many" / "big_importance.png").is_file()
    assert (out / "many" / "big_importance.pdf").is_file()
    md = (out / "many" / "big.md").read_text()
    assert "Importances: " in md and "lr" in md.split("Importances: ")[1]


def test_the_best_trial_is_marked_in_the_groups_results_csv(exported) -> None:
    _, result = exported
    best = next(r["name"] for r in rows(result.folder / "few" / "small.csv") if r["best"] == "1")
    table = {r["name"]: r for r in rows(result.folder / "few" / "results.csv")}
    assert set(table) == {"plain", "small.t0", "small.t1", "small.t2", "small.t3"}
    assert table[best]["search_best"] == "1"
    assert [r["search_best"] for r in table.values()].count("1") == 1
    assert table["plain"]["search_best"] == ""  # no trial: no mark
    assert table["small.t1"]["status"] == "pruned"
    overall = {r["name"]: r for r in rows(result.folder / "results.csv")}
    assert overall[best]["search_best"] == "1" and len(overall) == 1 + 4 + 14


def test_the_search_csv_is_safe_in_a_spreadsheet(exported) -> None:
    _, result = exported
    text = (result.folder / "few" / "small.csv").read_text("utf-8-sig")
    assert """'=HYPERLINK(""http://x"",""y"")""" in text
    assert not any(line.startswith("=") or ",=" in line for line in text.splitlines())


def test_a_store_without_a_search_exports_no_search_column(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="plain")
    run = store.create(exp)
    run.save(history([0.3]), RunStatus.FINISHED)
    run.release()
    result = export_all(store, [exp], tmp_path / "exports", dpi=FAST_DPI)
    assert "search_best" not in (result.folder / "results.csv").read_text("utf-8-sig")
    assert not list(result.folder.rglob("*_trials.png"))
