"""Studies that hold up: several seeds, sweeps, mean ± std and "is it beyond noise?"."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cnntui.core.config import ConfigError, apply_overrides, expand_runs, parse, parse_override
from cnntui.core.events import EpochEnd
from cnntui.core.history import History, metrics
from cnntui.report import stats, tables
from cnntui.runs import lifecycle
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment
from tests.waiting import until

# --- expansion --------------------------------------------------------------------------

SWEEP = """\
[defaults]
dataset = "synthetic"

[[experiment]]
name = "base"
group = "g"

[[sweep]]
name = "lr-wd"
lr = [0.1, 0.01, 0.001]
weight_decay = [0, 0.01]
epochs = 3

[[experiment]]
name = "after"
group = "g"
"""


def test_a_sweep_expands_to_its_grid_in_file_order_with_readable_names() -> None:
    file = parse(SWEEP)
    assert file.names() == [
        "base",
        "lr-wd.lr=0.1+weight_decay=0",
        "lr-wd.lr=0.1+weight_decay=0.01",
        "lr-wd.lr=0.01+weight_decay=0",
        "lr-wd.lr=0.01+weight_decay=0.01",
        "lr-wd.lr=0.001+weight_decay=0",
        "lr-wd.lr=0.001+weight_decay=0.01",
        "after",
    ]
    swept = [e for e in file.experiments if e.sweep == "lr-wd"]
    assert [(e.lr, e.weight_decay, e.epochs) for e in swept[:2]] == [(0.1, 0.0, 3), (0.1, 0.01, 3)]
    assert {e.group for e in swept} == {"lr-wd"} and swept[0].swept == ("lr", "weight_decay")
    # --run takes the sweep's name (its group here) like any group
    assert [e.name for e in file.select("lr-wd")] == [e.name for e in swept]


def test_the_generated_names_are_run_directories_of_their_own(tmp_path: Path) -> None:
    exp = parse(SWEEP).experiments[1]
    run = RunStore(tmp_path).create(exp)
    run.release()
    assert run.path.parent == tmp_path / "lr-wd.lr=0.1+weight_decay=0"
    assert [r.name for r in RunStore(tmp_path).runs()] == [exp.name]


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ('lr = [0.1, -1.0]\nname = "s"', "f.toml:2:1", "value 2 of 'lr'"),
        ('name = "s"\noptimizer = ["sgd", "rmsprop"]', "f.toml:3:1", "unknown optimizer"),
        ('name = "s"\nlr = []', "f.toml:3:1", "sweeps over nothing"),
        ('name = "s"\nlearning_rate = [0.1]', "f.toml:3:1", "did you mean 'lr'"),
        ('name = "s"\nlr = 0.1', "f.toml:1:1", "no list of values"),
        ('name = "s"\nlr = [0.1, 0.1]', "f.toml:3:1", "lists a value twice"),
        ('name = "s"\nseed = 1\nseeds = [0, 1]\nlr = [0.1]', "f.toml:4:1", "(line 3)"),
        (f'name = "{"x" * 60}"\nlr = [0.1]', "f.toml:2:1", "generates the name"),
    ],
)
def test_a_bad_sweep_value_is_reported_at_its_position(body: str, where: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse("[[sweep]]\n" + body + "\n", "f.toml")
    assert str(e.value).startswith(where + ": "), str(e.value)
    assert says in str(e.value)
    assert "\n" not in str(e.value)


def test_seeds_run_once_each_seed_major_and_seed_alone_stays_valid() -> None:
    file = parse(
        "[defaults]\nseeds = [0, 1, 2]\n"
        '[[experiment]]\nname = "a"\n'
        '[[experiment]]\nname = "b"\nseed = 7\n'
        '[[experiment]]\nname = "c"\nseeds = [4, 5]\n'
    )
    a, b, c = file.experiments
    assert (a.seed, a.seeds, b.seed, b.seeds, c.seed, c.seeds) == (0, (0, 1, 2), 7, (), 4, (4, 5))
    runs = expand_runs(file.experiments)
    assert [r.label for r in runs] == [
        "a seed 0", "b", "c seed 4", "a seed 1", "c seed 5", "a seed 2"
    ]  # fmt: skip
    assert expand_runs(runs) == runs  # a run's experiment is one run


def test_seed_and_seeds_in_one_table_is_an_error_naming_the_lines() -> None:
    with pytest.raises(ConfigError, match=r"^f.toml:4:1: 'seeds' and 'seed' \(line 3\)"):
        parse('[[experiment]]\nname = "a"\nseed = 1\nseeds = [0, 1]\n', "f.toml")
    with pytest.raises(ConfigError, match=r"^f.toml:2:1: 'seeds' = \[0, 0\] names seed 0 twice"):
        parse("[defaults]\nseeds = [0, 0]\n", "f.toml")


def test_set_seeds_on_the_command_line() -> None:
    assert parse_override("seeds=0,1,2") == ("seeds", (0, 1, 2))
    assert parse_override("seeds=[3, 4]") == ("seeds", (3, 4))
    with pytest.raises(ConfigError, match="one seed: seed = N"):
        parse_override("seeds=3")
    exp = parse('[defaults]\nseed = 5\n[[experiment]]\nname = "a"\n').experiments
    (over,) = apply_overrides(exp, {"seeds": (0, 1, 2)})
    assert (over.seed, len(over.runs())) == (0, 3)
    (back,) = apply_overrides([over], {"seed": 9})
    assert back.runs() == [back] and back.seed == 9
    with pytest.raises(ConfigError, match="give one of them"):
        apply_overrides(exp, {"seed": 1, "seeds": (0, 1)})


def test_a_sweep_times_seeds_and_one_reference_per_group() -> None:
    file = parse(SWEEP.replace("epochs = 3", "seeds = [0, 1]"))
    assert len(expand_runs(file.experiments)) == 2 + 6 * 2
    with pytest.raises(ConfigError, match=r"^f.toml:8:1: group 'g' already has its reference"):
        parse(
            '[[experiment]]\nname = "a"\ngroup = "g"\nreference = true\n'
            '[[experiment]]\nname = "b"\ngroup = "g"\nreference = true\n',
            "f.toml",
        )


def test_submit_queues_one_run_per_seed_with_its_seed_in_the_summary(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    records = lifecycle.submit(store, [tiny_experiment(seeds=(0, 1, 2))])
    assert [r.status for r in records] == ["queued"] * 3
    summaries = [json.loads((r.path / "summary.json").read_text()) for r in records]
    assert [s["seed"] for s in summaries] == [0, 1, 2]
    assert [r.label for r in records] == ["tiny seed 0", "tiny seed 1", "tiny seed 2"]
    assert [r.experiment().seed for r in records] == [0, 1, 2]  # what the worker trains
    assert store.latest("tiny", seed=1).run_id == records[1].run_id


# --- statistics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "t"),
    [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (120, 1.980)],
)
def test_t_quantiles_match_the_published_table(df: int, t: float) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-t, abs=5e-4)


def test_aggregates_match_numpy() -> None:
    values = [0.512, 0.548, 0.497, 0.530]
    agg = stats.aggregate(values)
    assert agg.n == 4
    assert agg.mean == pytest.approx(np.mean(values))
    assert agg.std == pytest.approx(np.std(values, ddof=1))
    one = stats.aggregate([0.5, math.nan, None])
    assert (one.n, one.mean) == (1, 0.5) and math.isnan(one.std)


def test_welch_interval_against_a_case_worked_by_hand() -> None:
    # reference 0.50 0.52 0.51: mean 0.51, s² = 1e-4; other 0.55 0.56 0.58: mean 0.56333,
    # s² = 2.3333e-4. se² = 1e-4/3 + 2.3333e-4/3 = 1.1111e-4, se = 0.0105409;
    # df = se⁴ / ((3.3333e-5)²/2 + (7.7778e-5)²/2) = 3.4483; t(0.975, 3.4483) = 2.9608.
    c = stats.welch([0.50, 0.52, 0.51], [0.55, 0.56, 0.58])
    assert c.diff == pytest.approx(0.0533333, abs=1e-6)
    assert c.df == pytest.approx(3.44828, abs=1e-4)
    half = 2.9608 * 0.0105409
    assert c.low == pytest.approx(0.0533333 - half, abs=1e-4)
    assert c.high == pytest.approx(0.0533333 + half, abs=1e-4)
    assert c.verdict == stats.BEYOND
    assert stats.welch([0.50, 0.52, 0.51], [0.49, 0.53, 0.52]).verdict == stats.WITHIN
    assert stats.welch([0.5], [0.6, 0.61]).verdict == stats.ONE_SEED


# Made-up final test accuracies over three seeds: a reference and three experiments whose
# Welch p-values are 0.0003, 0.038 and 0.57.
HOLM_REF = [0.50, 0.51, 0.52]
HOLM_OTHERS = {
    "far": [0.60, 0.61, 0.62],
    "near": [0.525, 0.535, 0.545],
    "same": [0.50, 0.52, 0.53],
}


def test_holm_turns_a_lone_95_percent_verdict_within_noise_in_a_group_of_three() -> None:
    alone = stats.welch(HOLM_REF, HOLM_OTHERS["near"])
    assert alone.verdict == stats.BEYOND and alone.p == pytest.approx(0.0376, abs=1e-4)
    far, near, same = stats.compare_group(HOLM_REF, list(HOLM_OTHERS.values()))
    # far: p 0.0003 <= 5%/3, beyond; near: p 0.038 > 5%/2, within; same: within from there on.
    assert [c.verdict for c in (far, near, same)] == [stats.BEYOND, stats.WITHIN, stats.WITHIN]
    assert (far.level, near.level, same.level) == pytest.approx((1 - 0.05 / 3, 0.975, 0.975))
    assert {c.holm for c in (far, near, same)} == {3}
    assert near.p == alone.p and near.low < 0 < near.high  # its interval agrees with its verdict
    assert far.low > 0


def test_holm_steps_down_no_further_than_the_first_within_noise() -> None:
    # p 0.027 and 0.038: each beyond noise alone, but the smaller fails 5%/2, so both are within.
    a, b = stats.compare_group(HOLM_REF, [[0.53, 0.535, 0.55], HOLM_OTHERS["near"]])
    assert stats.welch(HOLM_REF, [0.53, 0.535, 0.55]).verdict == stats.BEYOND
    assert (a.verdict, b.verdict) == (stats.WITHIN, stats.WITHIN)
    assert a.low < 0 < a.high and b.low < 0 < b.high
    # one comparison (the others single seeds): nothing to adjust
    alone, one_seed = stats.compare_group(HOLM_REF, [HOLM_OTHERS["near"], [0.6]])
    assert (alone.verdict, alone.level, alone.holm) == (stats.BEYOND, 0.95, 1)
    assert one_seed.verdict == stats.ONE_SEED


def test_the_study_table_and_the_exported_notes_say_holm_over_three_comparisons() -> None:
    runs = {"ref": HOLM_REF, **HOLM_OTHERS}
    exps = [tiny_experiment(name=n, group="g", seeds=(0, 1, 2)) for n in runs]
    finals = {
        n: [
            SimpleNamespace(
                seed=i,
                status="finished",
                settings_key="k",
                summary=SimpleNamespace(final_test_acc=a),
            )
            for i, a in enumerate(v)
        ]
        for n, v in runs.items()
    }
    verdicts = {r.name: stats.verdict(r) for r in stats.study(exps, finals.__getitem__)}
    assert verdicts == {
        "ref": "reference",
        "far": stats.BEYOND,
        "near": stats.WITHIN,
        "same": stats.WITHIN,
    }
    found = stats.compare_group(HOLM_REF, list(HOLM_OTHERS.values()))
    comparisons = dict(zip(HOLM_OTHERS, found, strict=True))
    rows = []
    for e in exps:
        h = History()
        h.add(EpochEnd(e.name, 0, 1.0, 0.5, 1.0, runs[e.name][0], 1.0))
        m = metrics(h, 0.5, 1.0)
        seeds = tuple(
            tables.SeedResult(i, f"r{i}", dataclasses.replace(m, final_test_acc=a))
            for i, a in enumerate(runs[e.name])
        )
        ref = stats.Comparison(math.nan, math.nan, math.nan, math.nan, stats.REFERENCE)
        rows.append(
            tables.Row(
                e,
                e,
                "finished",
                1,
                10,
                m,
                "cpu",
                "r",
                50,
                6,
                seed_results=seeds,
                comparison=comparisons.get(e.name, ref),
            )
        )
    md = tables.to_markdown(rows, "g").decode()
    assert "Holm-adjusted over 3 comparisons" in md
    assert "| Δ vs reference [Holm CI] | Beyond noise? |" in md
    near = next(line for line in md.splitlines() if "`near`" in line or "NEAR" in line.upper())
    assert "within noise" in near
    csv_rows = list(csv.DictReader(io.StringIO(tables.to_csv(rows).decode("utf-8-sig"))))
    by_name = {r["name"]: r for r in csv_rows}
    assert by_name["near"]["verdict"] == stats.WITHIN and by_name["near"]["holm_comparisons"] == "3"
    assert float(by_name["far"]["ci_level"]) == pytest.approx(1 - 0.05 / 3)


def test_only_the_latest_finished_run_of_each_seed_with_the_newest_settings_counts() -> None:
    def run(seed, status, key="k1"):
        return SimpleNamespace(seed=seed, status=status, settings_key=key)

    runs = [
        run(2, "finished", "k0"),  # an older configuration (lr changed since, say)
        run(0, "finished"),  # replaced by the later seed-0 run
        run(1, "finished"),
        run(0, "finished"),
        run(2, "failed"),  # not finished: not counted
        run(1, "cancelled"),
    ]
    counted = stats.seed_runs(runs, key=lambda r: r.settings_key)
    assert counted == [runs[3], runs[2]]
    assert stats.seed_runs(runs[:1], key=lambda r: r.settings_key) == runs[:1]


# --- a study as a user runs it ----------------------------------------------------------

STUDY = """\
[defaults]
dataset = "synthetic"
train_size = 64
test_size = 32
batch_size = 32
epochs = 2
device = "cpu"
seeds = [0, 1]

[[experiment]]
name = "base"
group = "g"
lr = 0.01

[[experiment]]
name = "fast"
group = "g"
lr = 0.1

[[sweep]]
name = "grid"
lr = [0.1, 0.01]
momentum = [0.0, 0.9]
epochs = 1
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The study trained once for the tests below: 2 experiments and a 2×2 sweep, 2 seeds."""
    root = tmp_path_factory.mktemp("study")
    (root / "experiments.toml").write_text(STUDY, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "cnntui", "--run", "all", "--export", "--jobs", "2"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    root.joinpath("out.txt").write_text(result.stdout)
    return root


@pytest.mark.process
def test_a_study_trains_each_seed_as_a_run_of_its_experiment(study: Path) -> None:
    store = RunStore(study / "runs")
    for name in ("base", "fast", "grid.lr=0.1+momentum=0.0", "grid.lr=0.01+momentum=0.9"):
        runs = store.runs(name)
        assert sorted(r.summary.seed for r in runs) == [0, 1], name
        assert {r.status for r in runs} == {"finished"}
    out = (study / "out.txt").read_text()
    assert "[base seed 1] finished" in out
    # the closing table: mean ± std over the seeds, and the comparison with the reference
    base = [r.summary.final_test_acc for r in store.runs("base")]
    line = next(x for x in out.splitlines() if x.startswith("base ") and "reference" in x)
    assert f"{100 * np.mean(base):.2f}% ± {100 * np.std(base, ddof=1):.2f}" in line


def test_results_csv_has_mean_std_n_and_the_interval(study: Path) -> None:
    text = (study / "exports" / "g" / "results.csv").read_text(encoding="utf-8-sig")
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(text))}
    store = RunStore(study / "runs")
    for name in ("base", "fast"):
        finals = [r.summary.final_test_acc for r in store.runs(name)]
        assert rows[name]["n"] == "2" and rows[name]["seeds"] == "0 1"
        assert float(rows[name]["test_acc_mean"]) == pytest.approx(np.mean(finals))
        assert float(rows[name]["test_acc_std"]) == pytest.approx(np.std(finals, ddof=1))
        for stem in ("epoch1_test_acc", "train_loss", "gap"):
            assert rows[name][f"{stem}_mean"] != ""
        assert rows[name]["best_test_acc_mean"] == ""  # no validation split: no best epoch
    assert rows["base"]["verdict"] == "reference" and rows["base"]["reference"] == "1"
    expected = stats.welch(
        [r.summary.final_test_acc for r in store.runs("base")],
        [r.summary.final_test_acc for r in store.runs("fast")],
    )
    assert float(rows["fast"]["test_acc_diff"]) == pytest.approx(expected.diff)
    assert float(rows["fast"]["test_acc_diff_ci95_low"]) == pytest.approx(expected.low)
    assert rows["fast"]["verdict"] == expected.verdict
    md = (study / "exports" / "g" / "results.md").read_text()
    assert "| n | Test acc (mean ± std) | Δ vs reference [95% CI] |" in md
    assert "Welch" in md
    tex = (study / "exports" / "results.tex").read_text()
    assert r"$\pm$" in tex and "±" not in tex


def test_the_figures_show_error_bars_seeds_and_the_sweep_heatmap(study: Path) -> None:
    from cnntui.report import export, figures

    assert (study / "exports" / "grid" / "grid_heatmap.png").stat().st_size > 10_000
    store = RunStore(study / "runs")
    file = parse((study / "experiments.toml").read_text())
    entries = export.read_entries(
        store, file.experiments, figures.Fonts.detect(), export.ExportResult(study)
    )
    grid = [e for e in entries if e.experiment.group == "grid"]
    cells, rows, cols, _data = export.sweep_cells(grid)["grid"]
    assert rows == ("lr", [0.1, 0.01]) and cols == ("momentum", [0.0, 0.9])
    finals = [r.summary.final_test_acc for r in store.runs("grid.lr=0.01+momentum=0.9")]
    mean, std, n = cells[(0.01, 0.9)]
    assert (mean, n) == (pytest.approx(np.mean(finals)), 2)
    fig = figures.heatmap(cells, rows, cols, "grid", "")
    shown = [t.get_text() for t in fig.axes[0].texts]
    assert f"{mean * 100:.1f}%\n± {std * 100:.1f} (n=2)" in shown

    series = [e.series for e in entries if e.experiment.group == "g"]
    fig = figures.comparison(series, "g")
    ax_c = fig.axes[2]
    bars = [c for c in ax_c.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 1  # one error bar per bar, drawn together
    dots = sum(
        len(c.get_offsets()) for c in ax_c.collections if type(c).__name__ == "PathCollection"
    )
    assert dots == 4  # every seed of both experiments
    ax_b = fig.axes[1]
    assert len(ax_b.collections) == 2  # a shaded ± std band per experiment


async def test_the_tui_curves_overlay_the_seed_band_of_an_experiment(study: Path) -> None:
    from cnntui.tui.app import make_app

    store = RunStore(study / "runs")
    accs = np.array([r.history().test_acc for r in store.runs("base")])
    app = make_app(study / "experiments.toml", {}, store.root, study / "x", device_label="c")
    async with app.run_test(size=(120, 40)) as pilot:
        key = app.main.query_one("#curves-key")
        # "base", highlighted first
        await until(pilot, lambda: "±std of 2 seeds" in str(key.render()), what="the band's key")
        band = app.main.session.seed_band("base")
        mean, std = band.series["test_acc"]
        assert mean == pytest.approx(accs.mean(axis=0).tolist())
        assert std == pytest.approx(accs.std(axis=0, ddof=1).tolist())
        chart = app.main.query_one("#chart-acc")
        drawn = "\n".join(line.text for line in chart.render_lines(chart.region.reset_offset))
        assert "┼" in drawn  # a bar at each epoch's mean


def test_the_tui_and_the_exported_figure_draw_the_same_seed_band() -> None:
    """Three seeds, one stopped after 2 epochs and one with a diverged (NaN) epoch: the TUI's
    band and the figure's band are the same numbers, over the epochs at least two seeds
    reached, and neither shows a ± 0 band where one seed went on alone."""
    from matplotlib.figure import Figure

    from cnntui.core.history import History
    from cnntui.report import figures
    from cnntui.tui.state import SeedBand

    def seed(acc: list[float]) -> History:
        h = History()
        h.test_acc = acc
        h.epoch_losses = [1.0] * len(acc)
        return h

    seeds = (seed([0.1, 0.2, 0.3, 0.4]), seed([0.2, 0.4, math.nan]), seed([0.3, 0.6]))
    tui_mean, tui_std = SeedBand(list(seeds)).series["test_acc"]
    assert len(tui_mean) == 3  # the second-longest seed's epochs
    assert tui_mean[:2] == pytest.approx([0.2, 0.4]) and tui_std[0] == pytest.approx(0.1)
    assert math.isnan(tui_mean[2]) and math.isnan(tui_std[2])  # one finite value: no band

    ax = Figure().add_subplot()
    series = figures.Series("a", "a", "C0", seeds[0], None, seeds=seeds)  # type: ignore[arg-type]
    figures._band(ax, series, "test_acc", {"color": "C0"})
    (line,) = ax.lines
    assert list(line.get_xdata()) == [1, 2, 3]  # not a 4th epoch at std 0
    drawn = list(line.get_ydata())
    assert drawn[:2] == pytest.approx(tui_mean[:2]) and math.isnan(drawn[2])
