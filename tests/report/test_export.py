"""Report exports, read back from disk: the npz against the run, each PNG at its size, the
tables' numbers against the run's metrics, Chinese titles with and without a CJK font."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimage

from cnntui.core import config
from cnntui.core.config import class_names
from cnntui.core.engine import train
from cnntui.core.events import EpochEnd, Failed
from cnntui.core.history import History, metrics
from cnntui.report import export as export_mod
from cnntui.report import figures, stats, tables
from cnntui.report.export import ExportError, export_all
from cnntui.runs import store as store_mod
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment

NPZ_KEYS = {
    "batch_losses",
    "batch_indices",
    "epoch_losses",
    "train_acc",
    "test_loss",
    "test_acc",
    "epoch_seconds",
    "val_loss",
    "val_acc",
    "lr",
    "confusion",
}
FAST_DPI = 40  # for tests that do not look at the pixels


def experiments():
    """Two compared experiments with Chinese titles, a third alone in its group, and one that
    never ran."""
    return [
        tiny_experiment(name="base", title="基准配置", group="hp", train_size=128),
        tiny_experiment(name="fast", title="高学习率", group="hp", train_size=128, lr=0.05),
        tiny_experiment(name="solo", title="LeNet", group="arch", train_size=128),
        tiny_experiment(name="never", title="无动量", group="hp"),
    ]


def glyph_problems(records: list[warnings.WarningMessage], logs: list[logging.LogRecord]):
    texts = [str(w.message) for w in records] + [r.getMessage() for r in logs]
    return [t for t in texts if "missing from" in t or "findfont" in t or "Glyph" in t]


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def export_capturing(*args, **kwargs):
    """export_all, returning also every warning and matplotlib log line it caused."""
    handler = _Logs()
    logger = logging.getLogger("matplotlib")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = export_all(*args, **kwargs)
    finally:
        logger.removeHandler(handler)
    return result, caught, handler.records


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Train the three runnable experiments once and export them (at a low dpi: the layout
    is in inches, and print resolution is checked once, below)."""
    root = tmp_path_factory.mktemp("suite")
    store = RunStore(root / "runs")
    exps = experiments()
    for exp in exps[:3]:
        list(train(exp, None, store.create(exp)))
    result, caught, logs = export_capturing(store, exps, root / "exports", dpi=FAST_DPI)
    return store, exps, result, caught, logs


@pytest.mark.slow
def test_every_file_the_issue_lists_is_written(suite) -> None:
    _, _, result, _, _ = suite
    out = result.folder
    expected = {
        *(
            out / n / f
            for n in ("base", "fast", "solo")
            for f in ("loss_history.npz", "loss_curves.png", "confusion.png")
        ),
        *(out / g / f for g in ("hp", "arch") for f in ("comparison.png", "loss_grid.png")),
        *(
            out / g / f
            for g in ("hp", "arch")
            for f in ("results.csv", "results.md", "results.tex", "results_full.tex")
        ),
        *(out / g / f for g in ("hp", "arch") for f in ("per_class.csv", "per_class.md")),
        out / "results.csv",
        out / "results.md",
        out / "results.tex",
        out / "results_full.tex",
    }
    assert set(result.files) == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in expected)
    assert result.missing == ["never"] and not (out / "never").exists()
    assert result.warnings == []
    # Shareable like any new file, not the 0600 of the temp file behind the atomic write.
    assert (out / "results.csv").stat().st_mode & 0o777 == store_mod.file_mode()
    assert not list(out.rglob("*.tmp"))


def test_npz_holds_every_key_with_the_runs_lengths_and_values(suite) -> None:
    store, exps, result, _, _ = suite
    for exp in exps[:3]:
        history = store.latest(exp.name).history()
        with np.load(result.folder / exp.name / "loss_history.npz") as npz:
            assert set(npz.files) == NPZ_KEYS
            assert len(npz["batch_losses"]) == len(npz["batch_indices"]) == 2 * 4  # 128 / 32
            for key in NPZ_KEYS - {"batch_losses", "batch_indices", "confusion"}:
                assert len(npz[key]) == exp.epochs
            assert npz["confusion"].shape == (10, 10)
            assert npz["confusion"].sum() == 128  # the test set
            assert npz["batch_losses"].tolist() == history.batch_losses
            assert npz["batch_indices"].tolist() == list(range(8))
            assert npz["test_acc"].tolist() == history.test_acc


@pytest.mark.parametrize(
    ("path", "inches"),
    [
        ("base/loss_curves.png", (7, 5.5)),
        ("hp/comparison.png", (10, 7.75)),
        ("arch/comparison.png", (10, 7.75)),
        ("hp/loss_grid.png", (2 * 3 + 0.5, 2.5 + 0.5)),  # two panels side by side
        ("arch/loss_grid.png", (3 + 0.5, 2.5 + 0.5)),
        ("base/confusion.png", (9, 8)),  # ten classes
    ],
)
def test_png_decodes_at_the_expected_size(suite, path: str, inches: tuple[float, float]) -> None:
    _, _, result, _, _ = suite
    pixels = mpimage.imread(result.folder / path)
    w, h = inches
    assert pixels.shape[:2] == (round(h * FAST_DPI), round(w * FAST_DPI))
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank page


def test_png_is_print_resolution_by_default(suite, tmp_path) -> None:
    store, exps, _, _, _ = suite
    assert inspect.signature(export_all).parameters["dpi"].default == figures.DPI >= 300
    fonts = figures.Fonts.detect()
    entries = export_mod.read_entries(store, exps[:1], fonts, export_mod.ExportResult(tmp_path))
    with figures.drawing(fonts):
        png = figures.render_all(figures.loss_curves(entries[0].series), ("png",))["png"]
    (tmp_path / "f.png").write_bytes(png)
    assert mpimage.imread(tmp_path / "f.png").shape[:2] == (5.5 * 300, 7 * 300)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # BOM: for spreadsheet programs
        return list(csv.DictReader(f))


def test_group_csv_has_the_differing_settings_and_the_runs_metrics(suite) -> None:
    store, exps, result, _, _ = suite
    rows = _rows(result.folder / "hp" / "results.csv")
    assert [r["name"] for r in rows] == ["base", "fast"]
    assert [r["title"] for r in rows] == ["基准配置", "高学习率"]
    assert "lr" in rows[0] and "momentum" not in rows[0]  # only what differs within the group
    assert [float(r["lr"]) for r in rows] == [0.01, 0.05]
    for row, exp in zip(rows, exps, strict=False):
        record = store.latest(exp.name)
        m = metrics(record.history(), exp.target_acc, record.summary.total_seconds)
        assert row["status"] == "finished" and int(row["epochs_done"]) == 2
        assert int(row["params"]) == 62_006
        for key in ("final_test_acc", "epoch1_test_acc", "final_train_loss"):
            assert float(row[key]) == getattr(m, key)
        assert row["best_test_acc"] == "" and math.isnan(m.best_test_acc)  # no split
        for key in ("gap", "total_seconds", "seconds_per_epoch", "smoothness"):
            assert float(row[key]) == getattr(m, key)
        # ...which is what the engine recorded in the run's summary, too.
        assert float(row["final_test_acc"]) == record.summary.final_test_acc
        reached = row["epochs_to_target"]
        assert (int(reached) if reached else None) == m.epochs_to_target


def test_top_level_tables_have_one_row_per_experiment_and_every_column(suite) -> None:
    _, _, result, _, _ = suite
    rows = _rows(result.folder / "results.csv")
    assert [(r["name"], r["group"]) for r in rows] == [
        ("base", "hp"),
        ("fast", "hp"),
        ("solo", "arch"),
    ]
    for column in (
        "lr",
        "final_test_acc",
        "best_test_acc",
        "epoch1_test_acc",
        "final_train_loss",
        "gap",
        "params",
        "total_seconds",
        "seconds_per_epoch",
        "epochs_to_target",
        "smoothness",
    ):
        assert column in rows[0]
    md = (result.folder / "results.md").read_text(encoding="utf-8")
    assert "基准配置 (`base`)" in md and "LeNet (`solo`)" in md
    assert md.count("\n| ") == 1 + 3  # header + one row each
    assert "**Smoothness** is the standard deviation" in md
    assert "`never`" in md  # listed as not run yet


def test_group_markdown_reads_as_the_reports_tables(suite) -> None:
    _, _, result, _, _ = suite
    md = (result.folder / "hp" / "results.md").read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| #"))
    assert "Learning rate" in header and "Final test acc" in header and "Smoothness" in header
    assert "Momentum" not in header
    row = next(line for line in md.splitlines() if "基准配置" in line)
    assert "62,006" in row and "%" in row


@pytest.mark.slow
def test_without_a_validation_split_the_tables_say_final_and_never_best(suite) -> None:
    _, _, result, _, _ = suite
    md = (result.folder / "hp" / "results.md").read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| #"))
    assert "Final test acc" in header and "Best" not in header
    assert "so none has a *best* epoch: the test set does not choose the model" in md
    assert "*best* the highest of any epoch" not in md
    text = (result.folder / "hp" / "results.csv").read_text(encoding="utf-8-sig")
    for row in csv.DictReader(io.StringIO(text)):
        assert row["final_test_acc"] != ""
        assert row["best_test_acc"] == row["best_epoch"] == row["best_test_acc_mean"] == ""


SUITE_DATA = "synthetic data (not CIFAR-10), 128 train / 128 test images"


@pytest.mark.slow
def test_every_figure_and_table_names_the_data_and_its_sizes(suite, tmp_path, monkeypatch):
    """A synthetic quick-try cannot be pasted as CIFAR-10: every exported figure's title,
    every Markdown table's caption line and every CSV row say what the numbers come from."""
    store, exps, _, _, _ = suite
    titles = []
    real = figures.render_all

    def spy(fig, formats, dpi=figures.DPI):
        titles.append(fig.get_suptitle())
        return real(fig, formats, dpi)

    monkeypatch.setattr(figures, "render_all", spy)
    export_all(store, exps, tmp_path, dpi=FAST_DPI)
    # three loss curves and confusion matrices; a comparison and a grid per group
    assert len(titles) == 3 * 2 + 2 * 2
    assert all(SUITE_DATA in t for t in titles), titles
    for md in ("results.md", "hp/results.md", "arch/results.md"):
        lines = (tmp_path / md).read_text("utf-8").splitlines()
        table = next(i for i, line in enumerate(lines) if line.startswith("| #"))
        assert f"Data: {SUITE_DATA}." in lines[:table], md
    for path in ("results.csv", "hp/results.csv", "arch/results.csv"):
        for row in _rows(tmp_path / path):
            assert (row["dataset"], row["train_images"], row["test_images"]) == (
                "synthetic",
                "128",
                "128",
            )


@pytest.mark.slow
def test_a_run_from_before_sizes_were_recorded_gets_them_from_its_settings(suite, tmp_path):
    store, exps, _, _, _ = suite
    shutil.copytree(store.root, tmp_path / "runs")
    old = RunStore(tmp_path / "runs")
    record = old.latest("solo")
    summary = json.loads((record.path / "summary.json").read_text("utf-8"))
    del summary["train_images"], summary["test_images"]
    (record.path / "summary.json").write_text(json.dumps(summary), "utf-8")
    export_all(old, exps[2:3], tmp_path / "out", dpi=FAST_DPI)
    assert f"Data: {SUITE_DATA}." in (tmp_path / "out" / "results.md").read_text("utf-8")
    assert tables.images_used("cifar10", None, 1000) == (50_000, 1_000)
    assert tables.images_used("fashion-mnist", 100_000, None) == (60_000, 10_000)
    assert tables.images_used("synthetic", None, 500) == (50_000, 500)


def test_a_table_over_two_datasets_says_which_row_used_which(suite) -> None:
    store, exps, _, _, _ = suite
    fonts = figures.Fonts(("DejaVu Sans",))
    entries = export_mod.read_entries(store, exps[:2], fonts, export_mod.ExportResult(Path()))
    a, b = (e.row for e in entries)
    a = dataclasses.replace(
        a,
        ran_with=dataclasses.replace(a.ran_with, dataset="cifar10", train_size=None),
        train_images=50_000,
        test_images=10_000,
    )
    md = tables.to_markdown([a, b], "t").decode()
    assert (
        f"Data: CIFAR-10, 50,000 train / 10,000 test images (`base`); {SUITE_DATA} (`fast`)."
    ) in md
    rows = list(csv.DictReader(io.StringIO(tables.to_csv([a, b]).decode("utf-8-sig"))))
    assert [r["dataset"] for r in rows] == ["cifar10", "synthetic"]
    assert list(rows[0]).count("dataset") == 1  # not again among the differing settings


@pytest.mark.slow
def test_model_args_read_as_keyword_arguments_in_every_table(suite) -> None:
    store, exps, _, _, _ = suite
    fonts = figures.Fonts(("DejaVu Sans",))
    entries = export_mod.read_entries(store, exps[:2], fonts, export_mod.ExportResult(Path()))
    a, b = (e.row for e in entries)
    args = (("depth", 2), ("width", 8))
    b = dataclasses.replace(
        b, ran_with=dataclasses.replace(b.ran_with, model="nets.py:Net", model_args=args)
    )
    md = tables.to_markdown([a, b], "t").decode()
    assert "| depth=2, width=8 |" in md and "('width'" not in md and "| () |" not in md
    rows = list(csv.DictReader(io.StringIO(tables.to_csv([a, b]).decode("utf-8-sig"))))
    assert [r["model_args"] for r in rows] == ["", "depth=2, width=8"]
    tex = tables.to_latex([a, b], "t").decode()
    assert "depth=2, width=8" in tex and "('width'" not in tex


def test_a_pipe_in_a_title_does_not_split_its_markdown_row(suite) -> None:
    store, exps, _, _, _ = suite
    fonts = figures.Fonts(("DejaVu Sans",))
    (entry,) = export_mod.read_entries(store, exps[:1], fonts, export_mod.ExportResult(Path()))
    row = dataclasses.replace(
        entry.row, experiment=dataclasses.replace(entry.row.experiment, title="a|b")
    )
    lines = tables.to_markdown([row], "t").decode().splitlines()
    header = next(x for x in lines if x.startswith("| "))
    (line,) = [x for x in lines if "a\\|b" in x]
    cells = line.replace("\\|", "").count("|")  # the cell borders, the escaped bar aside
    assert cells == header.count("|")


def test_chinese_titles_export_without_glyph_warnings(suite) -> None:
    if figures.find_cjk_font() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install a CJK font (fonts-wqy-microhei)")
        pytest.skip("no CJK font installed here (apt install fonts-wqy-microhei)")
    _, _, result, caught, logs = suite
    assert glyph_problems(caught, logs) == []
    assert result.warnings == []


@pytest.mark.slow
def test_without_a_cjk_font_export_succeeds_says_so_once_and_uses_names(
    suite, tmp_path, monkeypatch
) -> None:
    store, exps, _, _, _ = suite
    monkeypatch.setattr(figures, "find_cjk_font", lambda: None)
    labels = []
    real = figures.comparison
    monkeypatch.setattr(
        figures, "comparison", lambda s, t: labels.extend(x.label for x in s) or real(s, t)
    )
    result, caught, logs = export_capturing(store, exps[:2], tmp_path, ("png", "svg"), dpi=FAST_DPI)
    assert len(result.warnings) == 1 and "fonts-noto-cjk" in result.warnings[0]
    assert "fonts-wqy-microhei" in result.warnings[0]
    assert glyph_problems(caught, logs) == []
    assert labels == ["base", "fast"]  # names where the title can't be drawn
    for stem in ("base/loss_curves", "hp/comparison", "hp/loss_grid"):  # the formats asked for
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert b"<svg" in (tmp_path / f"{stem}.svg").read_bytes()[:2000]
        assert not (tmp_path / f"{stem}.pdf").exists()
    with pytest.raises(ValueError, match="png, svg, pdf"):
        export_all(store, exps, tmp_path, ("jpg",))
    # The tables are text: they keep the titles.
    assert "基准配置" in (tmp_path / "hp" / "results.md").read_text(encoding="utf-8")


def test_svg_and_pdf_render_chinese_titles(suite) -> None:
    store, _, _, _, _ = suite
    fonts = figures.Fonts.detect()
    entries = export_mod.read_entries(
        store, experiments()[:1], fonts, export_mod.ExportResult(Path())
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with figures.drawing(fonts):
            out = figures.render_all(figures.loss_curves(entries[0].series), ("svg", "pdf"), 40)
    assert out["pdf"].startswith(b"%PDF") and b"<svg" in out["svg"][:2000]
    if fonts.has_cjk:
        assert glyph_problems(caught, []) == []


@pytest.mark.slow
def test_a_partial_run_is_exported_with_what_it_completed(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="part", title="部分", group="p", epochs=3, train_size=128)
    cancel = threading.Event()
    for event in train(exp, cancel, store.create(exp)):
        if isinstance(event, EpochEnd):
            cancel.set()
    result = export_all(store, [exp], tmp_path / "out", dpi=FAST_DPI)
    assert result.missing == []
    with np.load(tmp_path / "out" / "part" / "loss_history.npz") as npz:
        assert len(npz["test_acc"]) == 1 and len(npz["batch_losses"]) >= 4
    row = _rows(tmp_path / "out" / "p" / "results.csv")[0]
    assert row["status"] == "cancelled" and row["epochs_done"] == "1"
    assert "cancelled, 1/3 ep." in (tmp_path / "out" / "p" / "results.md").read_text("utf-8")


@pytest.mark.slow
def test_a_run_that_recorded_nothing_is_not_exported(tmp_path, monkeypatch) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="broken", group="b", dataset="cifar10", data_dir=str(tmp_path))
    events = list(train(exp, None, store.create(exp)))  # no CIFAR-10 here: fails at start
    assert isinstance(events[-1], Failed) and store.latest("broken").status == "failed"
    ok = tiny_experiment(name="ok", group="b", epochs=1, train_size=64)
    list(train(ok, None, store.create(ok)))
    result = export_all(store, [exp, ok], tmp_path / "out", dpi=FAST_DPI)
    assert result.missing == ["broken"] and not (tmp_path / "out" / "broken").exists()
    assert (tmp_path / "out" / "ok" / "loss_curves.png").exists()
    for md in ("results.md", "b/results.md"):
        note = (tmp_path / "out" / md).read_text("utf-8")
        assert "Nothing recorded yet, so not in the table: `broken`" in note


def test_a_newer_run_that_never_finished_an_epoch_does_not_hide_an_older_one(suite) -> None:
    store, exps, _, _, _ = suite
    older = store.latest("solo")
    newer = store.create(exps[2])  # e.g. launched and failed at once: no epoch
    try:
        assert export_mod.latest_runs(store, exps[2:3])["solo"].run_id == older.run_id
    finally:
        shutil.rmtree(newer.path)


@pytest.mark.slow
def test_exporting_again_replaces_cleanly_and_threads_give_the_same_bytes(suite, tmp_path) -> None:
    store, exps, result, _, _ = suite
    shutil.copytree(result.folder, tmp_path / "a")
    # Two exports at once, from two threads (as the TUI's worker and another could), one of
    # them over a previous export.
    results = {}

    def run(folder: str) -> None:
        results[folder] = export_all(store, exps[2:3], tmp_path / folder, dpi=FAST_DPI)

    threads = [threading.Thread(target=run, args=(d,)) for d in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    for p in results["b"].files:
        rel = p.relative_to(tmp_path / "b")
        # PNG carries no timestamp: same run, same pixels, same bytes, whichever thread.
        assert (tmp_path / "a" / rel).read_bytes() == p.read_bytes()
        if p.suffix == ".png":  # and the same as the first export of it
            assert p.read_bytes() == (result.folder / rel).read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_exports_dir_that_is_a_file_is_one_clear_error(suite, tmp_path) -> None:
    store, exps, _, _, _ = suite
    (tmp_path / "exports").write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export_all(store, exps, tmp_path / "exports")


def test_colours_follow_the_place_in_the_group(suite) -> None:
    store, exps, _, _, _ = suite
    result = export_mod.ExportResult(Path("."))
    fonts = figures.Fonts(("DejaVu Sans",))
    # "never" has no run; its siblings keep the colours they have when it does.
    entries = export_mod.read_entries(store, exps, fonts, result)
    palette = figures.colors(3)
    assert [e.series.color for e in entries] == [palette[0], palette[1], figures.colors(1)[0]]
    assert len(set(figures.colors(10))) == 10


def test_envelope_keeps_every_extreme_and_leaves_short_curves_alone() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(2, 0.5, 125_000)
    y[5000] = 9.0
    x = np.arange(y.size)
    mid, lo, hi = figures.envelope(x, y)
    assert mid.size <= 1500 and lo.min() == y.min() and hi.max() == 9.0
    assert figures.envelope(x[:3000], y[:3000]) is None


def test_labels_fall_back_to_names_only_where_the_font_lacks_glyphs() -> None:
    latin = figures.Fonts(("DejaVu Sans",))
    assert latin.label("基准配置", "baseline") == "baseline"
    assert latin.label("LeNet 5", "lenet") == "LeNet 5"
    assert latin.label("", "lenet") == "lenet"


def _cjk_fonts() -> figures.Fonts:
    cjk = figures.find_cjk_font()
    if cjk is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install a CJK font (fonts-wqy-microhei)")
        pytest.skip("no CJK font installed here (apt install fonts-wqy-microhei)")
    return figures.Fonts((figures.BASE_FONT, cjk))


@pytest.mark.slow
def test_an_emoji_title_with_a_cjk_font_installed_does_not_ask_for_one(suite, tmp_path) -> None:
    _cjk_fonts()
    store, exps, _, _, _ = suite
    solo = dataclasses.replace(exps[2], title="LeNet 🧪")  # solo's run, another title
    result = export_all(store, [solo], tmp_path, dpi=FAST_DPI)
    assert result.warnings == [
        "no installed font draws 🧪 (U+1F9EA), used in the title of solo; "
        "figures show it by experiment name"
    ]


def test_font_notes_name_what_is_missing() -> None:
    cjk, latin = _cjk_fonts(), figures.Fonts((figures.BASE_FONT,))
    assert figures.font_notes(cjk, {"a": "基准配置", "b": "❤️ ok"}) == []  # VS16 is no glyph
    assert cjk.label("❤️ ok", "b") == "❤ ok"
    (note,) = figures.font_notes(cjk, {"a": "基准 🧪", "b": "ok"})
    assert "no CJK font" not in note and "🧪 (U+1F9EA)" in note and "title of a;" in note
    (note,) = figures.font_notes(latin, {"a": "🧪"})  # emoji only: no CJK font asked for
    assert note.startswith("no installed font draws 🧪")
    assert figures.font_notes(latin, {"a": "基准"}) == [figures.FONT_HINT]
    hint, note = figures.font_notes(latin, {"a": "基准", "b": "🧪", "c": "中 🧪"})
    assert hint == figures.FONT_HINT and "used in the title of b, c; figures show them" in note


def test_table_formatting() -> None:
    assert tables.duration(49.14) == "49.1 s"
    assert tables.duration(725) == "12 min 05 s"
    assert tables.duration(3725) == "1 h 02 min"
    assert tables.duration(math.nan) == "–"


def test_per_class_tables_read_back_from_the_confusion_matrices(suite) -> None:
    _, _, result, _, _ = suite
    text = (result.folder / "hp" / "per_class.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ["base", "fast"]
    for r in rows:
        with np.load(result.folder / r["name"] / "loss_history.npz") as npz:
            counts = npz["confusion"]
        assert int(r["test_images"]) == counts.sum() == 128
        for k in range(10):
            assert float(r[f"class {k}"]) == pytest.approx(counts[k, k] / counts[k].sum())
        assert float(r["overall"]) == pytest.approx(npz_acc(result.folder / r["name"]))
    md = (result.folder / "hp" / "per_class.md").read_text(encoding="utf-8")
    assert "| Class | 基准配置 (`base`) | 高学习率 (`fast`) |" in md
    assert md.count("\n| class ") == 10


def npz_acc(folder: Path) -> float:
    with np.load(folder / "loss_history.npz") as npz:
        return float(npz["test_acc"][-1])


def test_per_class_table_and_confusion_figure_name_the_classes() -> None:
    exp = tiny_experiment(name="c", dataset="cifar10")
    counts = [[0] * 10 for _ in range(10)]
    counts[0][0], counts[0][1], counts[3][3], counts[3][5] = 3, 1, 1, 1
    h = History()
    h.add(EpochEnd("c", 0, 1.0, 0.5, 1.0, 4 / 6, 1.0, confusion=tuple(map(tuple, counts))))
    row = tables.Row(exp, exp, "finished", 1, 10, metrics(h, 0.5, 1.0), "cpu", "r", 50, 6)
    row = dataclasses.replace(row, confusion=h.confusion)
    acc = row.class_accuracy()
    assert (acc[0], acc[3]) == (0.75, 0.5) and math.isnan(acc[1])  # class 1 has no images
    md = tables.per_class_markdown([row], "t").decode()
    assert "| airplane | 75.00% |" in md and "| cat | 50.00% |" in md and "| bird | – |" in md
    names = class_names("cifar10")
    series = figures.Series("c", "c", "C0", h, row.metrics)
    fig = figures.confusion(series, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(names)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(names)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 100 and cells[0] == "3" and cells[1] == "1"
    shown = ax.images[0].get_array()
    assert shown[0, 0] == pytest.approx(0.75) and shown[3, 5] == pytest.approx(0.5)


def tex_balanced(tex: str) -> None:
    """Every \\begin has its \\end in order, and braces balance outside escapes."""
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close"
    assert not stack, f"unclosed: {stack}"
    code = "\n".join(
        line.split("%")[0] if not line.startswith("%") else ""
        for line in re.sub(r"\\\\|\\[{}%&$#_]", "", tex).splitlines()
    )
    depth = 0
    for ch in code:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0


def tex_tables(tex: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each table's header cells and body rows (cells), nested line breaks read as spaces."""
    out = []
    for table in tex.split(r"\begin{table}")[1:]:
        flat = re.sub(
            r"\\begin\{tabular\}\[[bt]\]\{@\{\}[lr]@\{\}\}(.*?)\\end\{tabular\}",
            lambda m: m.group(1).replace(r"\\{}", " "),
            table,
        )
        header = flat.split(r"\toprule")[1].split(r"\midrule")[0].strip("\n").removesuffix(r"\\")
        body = flat.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        cells = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in body]
        out.append(([c.strip() for c in header.split(" & ")], cells))
    return out


def test_latex_tables_are_booktabs_balanced_and_keep_chinese_titles(suite) -> None:
    _, _, result, _, _ = suite
    group = (result.folder / "hp" / "results.tex").read_text(encoding="utf-8")
    full = (result.folder / "hp" / "results_full.tex").read_text(encoding="utf-8")
    every = (result.folder / "results_full.tex").read_text(encoding="utf-8")
    for tex in (group, full, every):
        tex_balanced(tex)
        assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
        assert "synthetic data (not CIFAR-10), 128 train / 128 test images" in tex
        assert r"\resizebox" not in tex
    # Two experiments: the report's small comparison, experiments across (as its Table 3).
    [(header, body)] = tex_tables(group)
    assert header == ["", "基准配置", "高学习率"]
    assert body[0] == ["lr", "0.01", "0.05"]  # the setting that differs, then the metrics
    assert [b[0] for b in body[1:]] == [r"Test acc. (\%)", r"Epochs to 50\%", "Time (s)"]
    # The full table keeps every column, in parts after # and Experiment.
    parts = tex_tables(full)
    assert all(h[:2] == [r"\#", "Experiment"] for h, _ in parts)
    # lr and the 9 metrics of results.md (no *best* without a validation split)
    assert sum(len(h) - 2 for h, _ in parts) == 10
    assert parts[0][1][0][:2] == ["1", r"基准配置 (\texttt{base})"]
    assert len(tex_tables(every)[0][1]) == 3


def study_rows(seeds: int = 1) -> list[tables.Row]:
    """The shipped study's experiments with the report's numbers, as table rows."""
    report = {  # final and epoch-1 test accuracy, final train loss, seconds
        "baseline": (0.5068, 0.30, 1.4336, 1500),
        "high-lr": (0.2229, 0.2, 2.06, 1480),
        "low-lr": (0.4021, 0.25, 1.7, 1510),
        "more-epochs": (0.5493, 0.3, 1.3792, 3000),
        "no-reg": (0.6135, 0.35, 1.0241, 1400),
        "strong-reg": (0.10, 0.1, 2.3029, 1450),
        "no-momentum": (0.3651, 0.2, 1.8, 1390),
        "arch-lenet": (0.3630, 0.1501, 1.768, 49.1),
        "arch-resnet": (0.6337, 0.4468, 0.936, 53.0),
    }
    rows = []
    for e in config.load(Path(__file__).parents[2] / "experiments.toml").experiments:
        acc, acc1, loss, secs = report[e.name]
        h = History()
        for i in range(e.epochs):
            a = acc1 + (acc - acc1) * i / (e.epochs - 1)
            h.add(EpochEnd(e.name, i, loss + 0.1 * (e.epochs - 1 - i), a, 1.5, a, secs / e.epochs))
        m = metrics(h, e.target_acc, secs)
        per_seed = tuple(
            tables.SeedResult(s, f"r{s}", dataclasses.replace(m, final_test_acc=acc + 0.01 * s))
            for s in range(seeds if seeds > 1 else 0)
        )
        params = 308_650 if e.model == "resnet" else 62_006
        rows.append(
            tables.Row(
                e,
                e,
                "finished",
                e.epochs,
                params,
                m,
                "cuda",
                "r",
                50_000,
                10_000,
                seed_results=per_seed,
            )
        )
    return rows


def test_the_shipped_study_exports_exactly_the_reports_three_tables() -> None:
    rows = study_rows()
    tex = tables.to_latex(rows).decode()
    assert r"\resizebox" not in tex and r"\small" not in tex  # the document's type size
    (h1, t1), (h2, t2), (h3, t3) = tex_tables(tex)
    # Table 1: each configuration, its settings, final accuracy, convergence, time.
    assert h1 == [
        "Experiment",
        "Epochs",
        "lr",
        "Mom.",
        "L2",
        "Dropout",
        r"Test acc. (\%)",
        r"Epochs to 40\%",
        "Time (min)",
    ]
    assert [r[:7] for r in t1] == [
        ["基准配置", "5", "0.001", "0.9", "0.01", "0.5", "50.68"],
        ["高学习率", "5", "0.01", "0.9", "0.01", "0.5", "22.29"],
        ["低学习率", "5", "0.0001", "0.9", "0.01", "0.5", "40.21"],
        ["更多 epoch", "10", "0.001", "0.9", "0.01", "0.5", "54.93"],
        ["无正则化", "5", "0.001", "0.9", "0", "0", "61.35"],
        ["强正则化", "5", "0.001", "0.9", "0.1", "0.7", "10.00"],
        ["无动量", "5", "0.001", "0", "0.01", "0.5", "36.51"],
    ]
    assert t1[0][7:] == ["3", "25.0"] and t1[1][7] == "$>$5"  # never reached 40 %
    assert "lr: learning rate; Mom.: SGD momentum; L2: weight decay." in tex
    # Table 2: regularisation strength, strongest first, against train loss and accuracy.
    assert h2 == ["Experiment", "L2", "Dropout", "Epochs", "Final train loss", r"Test acc. (\%)"]
    assert t2 == [
        ["强正则化", "0.1", "0.7", "5", "2.3029", "10.00"],
        ["基准配置", "0.01", "0.5", "5", "1.4336", "50.68"],
        ["更多 epoch", "0.01", "0.5", "10", "1.3792", "54.93"],
        ["无正则化", "0", "0", "5", "1.0241", "61.35"],
    ]
    # Table 3: the two architectures side by side, as the report has them.
    assert h3 == ["", "LeNet", "轻量级 ResNet"]
    assert t3 == [
        ["Model", "lenet", "resnet"],
        [r"Test acc. (\%)", "36.30", "63.37"],
        [r"Epoch-1 test acc. (\%)", "15.01", "44.68"],
        ["Final train loss", "1.7680", "0.9360"],
        ["Params", "62,006", "308,650"],
        ["Time (s)", "49.1", "53.0"],
    ]
    assert all(len(h) <= tables.MAX_COLUMNS for h, _ in tex_tables(tex))
    # With seeds: mean ± std of the accuracy over them, and the caption says so.
    seeded = tables.to_latex(study_rows(seeds=3)).decode()
    assert tex_tables(seeded)[0][1][0][6] == r"51.7\,$\pm$\,1.0"
    assert "mean $\\pm$ std over 3 seeds" in seeded


def _wqy_font() -> bool:
    fc = shutil.which("fc-list")
    listed = subprocess.run([fc, ":family"], capture_output=True, text=True).stdout if fc else ""
    return "WenQuanYi Micro Hei" in listed


@pytest.mark.skipif(
    not shutil.which("xelatex"),
    reason="xelatex is not installed (Debian: texlive-xetex, as .ci/run installs)",
)
@pytest.mark.process
@pytest.mark.skipif(not _wqy_font(), reason="no CJK font (Debian: fonts-wqy-microhei)")
def test_every_exported_latex_table_prints_at_text_width(suite, tmp_path) -> None:
    _, _, result, _, _ = suite
    study = tmp_path / "study"
    for name, rows in (("one", study_rows()), ("seeds", study_rows(seeds=3))):
        (study / name).mkdir(parents=True)
        (study / name / "results.tex").write_bytes(tables.to_latex(rows))
        full = tables.to_latex_full(rows, "All experiments: results", True)
        (study / name / "results_full.tex").write_bytes(full)
    files = sorted(result.folder.rglob("*.tex")) + sorted(study.rglob("*.tex"))
    assert len(files) == 10
    for i, tex in enumerate(files):
        doc = tmp_path / f"doc{i}.tex"
        doc.write_text(
            "\\documentclass{article}\\usepackage{booktabs,pdflscape,fontspec}"
            "\\setmainfont{WenQuanYi Micro Hei}\\begin{document}"
            f"\\input{{{tex.as_posix()}}}\\end{{document}}",
            encoding="utf-8",
        )
        run = subprocess.run(
            ["xelatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        log = (tmp_path / f"doc{i}.log").read_text("utf-8", errors="replace")
        assert run.returncode == 0, f"{tex}: {log[-2000:]}"
        assert "Overfull \\hbox" not in log, f"{tex} is wider than the text"
        assert "Missing character" not in log, f"{tex}: a glyph is missing"
        pages = int(re.search(r"Output written on .*\((\d+) pages?", log).group(1))
        source = tex.read_text("utf-8")
        if tex.name == "results_full.tex":  # a landscape page for each part
            assert pages == source.count(r"\begin{landscape}"), tex
        elif tex.parent in (result.folder, study / "one", study / "seeds"):
            assert pages == (2 if "architectures" in source else 1), tex  # Tables 1-2, 3
        else:
            assert pages == 1, tex


def test_latex_escapes_what_tex_would_read_as_commands() -> None:
    assert tables.latex_escape("50% & a_b #1 $x {y} ~^\\") == (
        r"50\% \& a\_b \#1 \$x \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    exp = tiny_experiment(name="odd", title="100% 测试 & more_x")
    row = tables.Row(exp, exp, "finished", 0, None, metrics(History(), 0.5, 0.0), "", "r")
    tex = tables.to_latex([row], "g_1").decode()
    tex_balanced(tex)
    assert r"\caption{g\_1: results." in tex
    assert r"100\%" in tex and r"\&" in tex and r"more\_x" in tex
    full = tables.to_latex_full([row], "g_1: results").decode()
    tex_balanced(full)
    assert r"100\% 测试 \& more\_x\\{}(\texttt{odd})" in full  # the name under the title


@pytest.mark.slow
def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text(suite, tmp_path):
    """OWASP's CSV injection: text starting =, +, -, @, tab or CR gets a leading ' in every
    CSV an export writes; numbers, negative ones included, stay numbers."""
    store, exps, _, _, _ = suite
    titles = {"base": '=HYPERLINK("http://x","y")', "fast": "-2+3", "solo": "@SUM(A1)"}
    hostile = [dataclasses.replace(e, title=titles.get(e.name, e.title)) for e in exps[:3]]
    result = export_all(store, hostile, tmp_path, dpi=FAST_DPI)
    assert not result.skipped
    quoted = {name: "'" + title for name, title in titles.items()}
    for csv_file in ("hp/results.csv", "arch/results.csv", "results.csv", "hp/per_class.csv"):
        for row in _rows(tmp_path / csv_file):
            assert row["title"] == quoted[row["name"]], csv_file
    # The tables meant for reading keep the titles as written.
    assert "@SUM(A1)" in (tmp_path / "results.md").read_text("utf-8")
    (entry,) = export_mod.read_entries(
        store, exps[:1], figures.Fonts(("DejaVu Sans",)), export_mod.ExportResult(Path())
    )
    rows = []
    for title in ("+1", "\tx", "a=b", "1-2"):
        exp = dataclasses.replace(entry.row.experiment, title=title)
        diff = stats.Comparison(-0.05, -0.5, 0.25, 3.0, stats.WITHIN)
        rows.append(dataclasses.replace(entry.row, experiment=exp, comparison=diff))
    text = tables.to_csv(rows).decode("utf-8-sig")
    got = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["title"] for r in got] == ["'+1", "'\tx", "a=b", "1-2"]
    assert {(r["test_acc_diff"], r["test_acc_diff_ci95_low"]) for r in got} == {("-0.05", "-0.5")}
    # A title never holds a carriage return (the loader refuses control characters); a cell
    # that starts with one is neutralised all the same.
    assert (tables.csv_text("\rx"), tables.csv_text(-0.05)) == ("'\rx", -0.05)


@pytest.mark.slow
def test_a_title_matplotlib_cannot_read_as_math_is_drawn_as_plain_text(
    suite, tmp_path, monkeypatch
):
    """'costs $5 {and $6' and '$\\textbf{lr}$ high' stopped the export at its first figure;
    they are drawn as written, and the export says so once. A title that is valid math is
    left to matplotlib, and one with a single $ is plain text already."""
    store, exps, _, _, _ = suite
    titles = {"base": "costs $5 {and $6", "fast": r"$\textbf{lr}$ high", "solo": r"$\alpha$ = 0.1"}
    odd = [dataclasses.replace(e, title=titles.get(e.name, e.title)) for e in exps]
    labels: list[str] = []
    real = figures.comparison
    monkeypatch.setattr(
        figures, "comparison", lambda s, t: labels.extend(x.label for x in s) or real(s, t)
    )
    result = export_all(store, odd, tmp_path, ("png", "svg"), dpi=FAST_DPI)
    assert not result.skipped and result.missing == ["never"]
    for stem in ("base/loss_curves", "fast/confusion", "hp/comparison", "hp/loss_grid"):
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(b"\x89PNG"), stem
        assert b"<svg" in (tmp_path / f"{stem}.svg").read_bytes()[:2000], stem
    assert (tmp_path / "results.md").is_file()
    notes = [w for w in result.warnings if "mathtext" in w]
    assert notes == [
        "the titles of base, fast are not valid matplotlib mathtext (between $ signs); "
        "figures draw them as plain text"
    ]
    # Escaped $ are drawn as dollar signs; valid math is left as written.
    assert labels == [r"costs \$5 {and \$6", r"\$\textbf{lr}\$ high", r"$\alpha$ = 0.1"]
    assert figures.plain_unless_math(r"$\alpha$ = 0.1") == r"$\alpha$ = 0.1"
    assert figures.plain_unless_math("costs $5") == "costs $5"
