"""The command line: `cnntui` opens the TUI; `cnntui --run ...` trains headless.

This module imports only the standard library and the config at start-up, so `--help` and
`--list` answer at once; torch is imported when a run starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .core import text
from .core.config import (
    SETTING_KEYS,
    ConfigError,
    Experiment,
    ExperimentFile,
    apply_overrides,
    check_models,
)
from .options import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    UsageError,
    build_parser,
    load_experiments,
    parse_formats,
)
from .runs.records import RESUMABLE, UNFINISHED, RunStatus, RunSummary

if TYPE_CHECKING:
    from .core.search_space import Search
    from .report.export import ExportResult
    from .runs.executors import Job
    from .runs.store import RunRecord

TUI_STOP_SECONDS = 30.0  # the longest quitting the TUI waits for its cancelled runs to save


def _wrap_items(items: list[str], cols: int) -> list[str]:
    """`key=value` items on lines of at most `cols` columns (an item longer than that alone)."""
    lines: list[str] = []
    for item in items:
        if lines and text.width(lines[-1]) + 1 + text.width(item) <= cols:
            lines[-1] += " " + item
        else:
            lines.append(item)
    return lines or [""]


def latest_status(record: Any) -> str:
    """The latest run's status as the store reads it now: `finished 45.00%`, `interrupted ep
    2/5` (its process is gone), `running` (another process is training it), ..."""
    if record is None:
        return "-"
    status, s = record.status, record.summary
    if status is RunStatus.FINISHED:
        early = f" (early stop ep {s.stopped_early})" if s.stopped_early is not None else ""
        return f"finished {text.pct(s.final_test_acc)}{early}"
    done, epochs = s.epochs_done, s.epochs
    if status is RunStatus.PRUNED and done is not None:  # a search's pruner stopped it
        return f"pruned at epoch {done}"
    if status in UNFINISHED and done is not None:
        return f"{status} ep {done}/{epochs}" if epochs is not None else str(status)
    return str(status)


def print_list(file: ExperimentFile, out: IO[str], runs_dir: Path | None = None) -> None:
    """The experiments, their settings apart from [defaults] and their latest run's status,
    fitted to the terminal (80 columns when not on one): long settings wrap in their column."""
    width = shutil.get_terminal_size((80, 24)).columns - 1
    by_name = _stored_runs(runs_dir)
    latest = {name: runs[-1] for name, runs in by_name.items()}
    base = dataclasses.asdict(file.defaults)
    cells, settings = [], []
    otherwise: dict[str, dict[str, Any]] = {}  # latest runs trained on other settings
    for e in file.experiments:
        own = {k: v for k, v in e.settings().items() if k in base and base[k] != v}
        status = _list_status(e, latest.get(e.name), by_name.get(e.name, []))
        changed = _ran_otherwise(latest.get(e.name), e)
        if changed:
            otherwise[e.name], status = changed, f"{status} *"
        cells.append([e.name, e.display_title, e.group or "-", status])
        settings.append([f"{k}={_shown(v)}" for k, v in own.items()])
    headers, rows = _list_table(cells, settings, width)
    wide = headers[-1] == "settings apart from [defaults]"
    note = "" if wide else " (own settings: those apart from [defaults])"
    print(f"{file.path}: {len(cells)} experiments{note}", file=out)
    print(text.table(headers, rows), file=out)
    counted = [
        f"{e.name} {r.summary.params:,}"
        for e in file.experiments
        if (r := latest.get(e.name)) is not None and r.summary.params
    ]
    if counted:  # as the latest runs counted them: exact, a model of the user's included
        said = "parameters (latest runs): " + "; ".join(counted)
        print("\n" + textwrap.fill(said, max(40, width), subsequent_indent="  "), file=out)
    if any(r.status in RESUMABLE for r in latest.values() if r.name in file.names()):
        hint = (
            "R in the TUI or `cnntui --run NAME --resume` continues an interrupted or "
            "cancelled run from its last epoch."
        )
        print("\n" + textwrap.fill(hint, max(40, width)), file=out)
    if otherwise:
        print("\n* the latest run trained otherwise than the file says now:", file=out)
        for name, changed in otherwise.items():
            items = [f"{name}:", *(f"{k}={_shown(v)}" for k, v in changed.items())]
            for at, line in enumerate(_wrap_items(items, max(40, width) - 2)):
                print(("  " if at == 0 else "    ") + line, file=out)
    _print_searches(file, latest, width, out)
    _print_environment(file, latest, width, out)
    print_data(file.experiments, width, out)
    shown = {k: v for k, v in base.items() if v not in (None, "")}
    line = "[defaults] " + " ".join(f"{k}={_shown(v)}" for k, v in shown.items())
    print("\n" + textwrap.fill(line, max(40, width), subsequent_indent=" " * 11), file=out)


def _print_searches(
    file: ExperimentFile, latest: dict[str, RunRecord], width: int, out: IO[str]
) -> None:
    """Each [[search]]: its space, its trials done / pruned / running / to go, and the best so
    far, read from its trials' runs (`<search>.t<N>`)."""
    from .runs import searches

    for s in file.searches:
        trials = searches.trial_runs_of(s.name, list(latest.values()))
        line = f"[[search]] {s.name} ({s.group}): {s.describe()}; {searches.progress(s, trials)}"
        print("\n" + textwrap.fill(line, max(40, width), subsequent_indent="  "), file=out)


def _print_environment(
    file: ExperimentFile, latest: dict[str, RunRecord], width: int, out: IO[str]
) -> None:
    """What the latest runs ran with (versions, device model, host, git commit), and where
    they differ; nothing when none recorded it."""
    from .report.tables import environment_notes

    runs = [latest[name] for name in file.names() if name in latest]
    notes = environment_notes((r.run_id, r.summary.environment()) for r in runs)
    for note in notes:
        line = note.replace("environment (", "the latest runs' environment (", 1)
        print("\n" + textwrap.fill(line, max(40, width), subsequent_indent="  "), file=out)


def _stored_runs(runs_dir: Path | None) -> dict[str, list[RunRecord]]:
    """Each experiment's stored runs, the latest last; none when the store is missing or
    unreadable."""
    from .runs.store import RunStore

    by_name: dict[str, list[RunRecord]] = {}
    if runs_dir is not None:
        try:
            for r in RunStore(runs_dir).runs():
                by_name.setdefault(r.name, []).append(r)
        except (OSError, ValueError):
            return {}
    return by_name


def _list_status(e: Experiment, latest: RunRecord | None, runs: list[RunRecord]) -> str:
    """The `latest run` cell: with several seeds, how many finished, and their mean ± std."""
    from .report import stats

    status = latest_status(latest)
    if len(e.seeds) > 1:
        counted = stats.seed_runs(runs, key=lambda r: r.settings_key)
        agg = stats.aggregate(r.summary.final_test_acc for r in counted)
        done = f"{agg.n}/{len(e.seeds)} seeds"
        status = f"{done} {stats.pct_mean_std(agg).split(' (n=')[0]}" if agg.n else status
    return status


def _ran_otherwise(record: RunRecord | None, now: Experiment) -> dict[str, Any]:
    """The settings that decide what a run learns (data included) in which `record` differs
    from its experiment in the file now, as the run had them; {} when it matches or its
    config.toml cannot be read."""
    from .core.config import SPEED_KEYS
    from .runs.store import RunFileError

    if record is None:
        return {}
    try:
        used = record.experiment()
    except RunFileError:
        return {}
    same = SPEED_KEYS | {"seed", "seeds"}
    return {
        k: getattr(used, k)
        for k in SETTING_KEYS
        if k not in same and getattr(used, k) != getattr(now, k)
    }


def _list_table(
    cells: list[list[str]], settings: list[list[str]], width: int
) -> tuple[list[str], list[list[str]]]:
    """The --list table's headers and rows: the settings column takes the room the others
    leave, its items wrapped onto lines of their own."""
    headers = ["name", "title", "group", "latest run"]
    used = sum(
        max([text.width(h)] + [text.width(r[i]) for r in cells]) + 2 for i, h in enumerate(headers)
    )
    room = max(16, width - used)
    wide = "settings apart from [defaults]"
    headers.append(wide if text.width(wide) <= room else "own settings")
    rows = []
    for row, items in zip(cells, settings, strict=True):
        lines = _wrap_items(items, room)
        rows.append([*row, lines[0]])
        rows.extend(["", "", "", "", more] for more in lines[1:])
    return headers, rows


def _shown(value: Any) -> str:
    """A setting as `--list` prints it: a list of seeds as 0,1,2; model_args as `--set` takes
    them, {width=8}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def print_data(experiments: list[Experiment], width: int, out: IO[str]) -> None:
    """The train / validation / test images each experiment will use, one line per kind."""

    from .report.tables import describe_data, images_used

    uses: dict[str, list[str]] = {}
    for e in experiments:
        train, test = images_used(e.dataset, e.train_size, e.test_size, e.base_dir)
        data = describe_data(e.dataset, max(0, train - e.val_size), test, e.val_size)
        uses.setdefault(data, []).append(e.name)
    print(file=out)
    for data, names in uses.items():
        who = "every experiment" if len(uses) == 1 else ", ".join(names)
        print(textwrap.fill(f"data: {data} ({who})", max(40, width)), file=out)


class Progress:
    """Prints run progress: a live status line on a terminal, plain epoch lines otherwise."""

    def __init__(self, out: IO[str], live: bool) -> None:
        self.out = out
        self.live = live
        self.state: dict[str, dict[str, Any]] = {}
        self.last_draw = 0.0
        self.status_width = 0

    def write(self, text: str) -> None:
        """Write and flush; a terminal that went away (a dropped SSH connection) silences the
        output instead of stopping the runs, which must still save."""
        try:
            self.out.write(text)
            self.out.flush()
        except OSError:
            self.live = False
            silence(self.out)

    def _clear(self) -> None:
        if self.live and self.status_width:
            self.write("\r" + " " * self.status_width + "\r")
            self.status_width = 0

    def line(self, msg: str) -> None:
        """Print a line above the progress bar, then draw the bar again."""
        self._clear()
        self.write(msg + "\n")
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.live or not self.state:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        parts = []
        for name, s in self.state.items():
            total = s["epochs"] * s["batches"]
            frac = s["done"] / total if total else 0.0
            bar = "█" * int(frac * 10) + "░" * (10 - int(frac * 10))
            elapsed = now - s["t0"]
            done_here = s["done"] - s["start_done"]
            eta = elapsed / done_here * (total - s["done"]) if done_here else float("nan")
            parts.append(
                f"{name} {bar} {100 * frac:3.0f}% ep {s['epoch'] + 1}/{s['epochs']} "
                f"loss {s['loss']:.3f} eta {text.seconds(eta)}"
            )
        status = " │ ".join(parts)
        try:
            cols = shutil.get_terminal_size().columns - 1
        except OSError:
            cols = 79
        status = text.pad(status, cols).rstrip()
        self.write("\r" + status + " " * max(0, self.status_width - text.width(status)))
        self.status_width = text.width(status)

    def handle(self, event: Any) -> None:
        """Show what a run's event says: its start, progress, epochs and end."""
        from .core.events import (
            BatchLosses,
            Cancelled,
            Diverged,
            EpochEnd,
            Failed,
            Finished,
            Started,
        )

        match event:
            case Started():
                self._start(event)
            case BatchLosses():
                s = self.state.get(event.name)
                if s and event.losses:
                    s["done"] = event.first_index + len(event.losses)
                    s["epoch"] = event.epoch
                    s["loss"] = event.losses[-1]
                    self._draw()
            case EpochEnd():
                s = self.state.get(event.name, {})
                self.line(
                    f"[{event.name}] epoch {event.epoch + 1}/{s.get('epochs', '?')}: "
                    f"train loss {event.train_loss:.4f} acc {text.pct(event.train_acc)} · "
                    f"{_val_part(event)}"
                    f"test loss {event.test_loss:.4f} acc {text.pct(event.test_acc)} · "
                    f"{text.seconds(event.seconds)}"
                )
            case Finished() | Failed() | Diverged() | Cancelled():
                self.state.pop(event.name, None)
                self.line(_end_line(event))

    def _start(self, event: Any) -> None:
        """A run started: its progress state, and a line saying where and how big."""
        self.state[event.name] = {
            "epochs": event.epochs,
            "batches": event.batches_per_epoch,
            "done": event.start_epoch * event.batches_per_epoch,
            "start_done": event.start_epoch * event.batches_per_epoch,
            "epoch": event.start_epoch,
            "loss": float("nan"),
            "t0": time.monotonic(),
        }
        resumed = f", resuming at epoch {event.start_epoch + 1}" if event.start_epoch else ""
        self.line(
            f"[{event.name}] started on {event.device}: {event.params:,} parameters, "
            f"{event.epochs} epochs x {event.batches_per_epoch} batches{resumed}"
        )

    def close(self) -> None:
        """Clear the progress bar for good."""
        self._clear()
        self.write("")


def silence(out: IO[str]) -> None:
    """Point `out`'s file descriptor at /dev/null, so that what is still written (and the
    interpreter's last flush, which would otherwise turn the exit code into 120) goes nowhere."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, out.fileno())
        os.close(null)
        out.flush()
    except (OSError, ValueError, AttributeError):
        pass


def results_table(records: list[Any]) -> str:
    """The table printed after a run: each run's headline figures and status."""
    rows = []
    for r in records:
        s = r.summary
        # A summary.json may have been edited by hand: text is shown with its control
        # characters escaped.
        rows.append(
            [
                text.safe(r.name),
                text.safe(s.title or ""),
                text.safe(s.model or ""),
                text.count(s.params) if s.params else "-",
                text.pct(s.final_test_acc),
                text.pct(s.best_test_acc),
                text.num(s.final_train_loss),
                text.seconds(s.total_seconds),
                str(r.status),
            ]
        )
    headers = ["name", "title", "model", "params", "final acc", "best acc", "train loss", "time"]
    return text.table([*headers, "status"], rows, right={3, 4, 5, 6, 7})


def seeds_table(store: Any, experiments: list[Experiment]) -> str:
    """Each experiment's final test accuracy over its seeds (mean ± std, n) and its
    difference from its group's reference with Welch's 95% interval (cnntui.report.stats)."""
    from .report import stats

    rows = [
        [
            text.safe(r.name),
            r.group or "-",
            str(r.accuracy.n),
            stats.pct_mean_std(r.accuracy).split(" (n=")[0],
            stats.pp_interval(r.comparison) if r.comparison else "-",
            stats.verdict(r),
        ]
        for r in stats.study(experiments, store.runs)
    ]
    headers = ["name", "group", "n", "final acc mean ± std", "vs reference [95% CI]", ""]
    return text.table(headers, rows, right={2, 3})


@contextlib.contextmanager
def store_errors_as_usage() -> Iterator[None]:
    """A StoreError raised in the block is a UsageError: one line, exit code 2."""
    from .runs.store import StoreError

    try:
        yield
    except StoreError as e:
        raise UsageError(str(e)) from None


def check_dirs(args: argparse.Namespace, experiments: list[Experiment]) -> None:
    """Fail early, with one line, on a runs/exports/data dir that is a file or not writable."""
    from .runs.store import RunStore

    store = RunStore(args.runs_dir)
    with store_errors_as_usage():
        store.check_writable()
        for exp in experiments:  # a new run is never written through a link
            store.check_new_run(exp.name)
    if args.export:  # before the first run: a long study must not end in an unwritable dir
        check_exports_dir(Path(args.exports_dir))
    for exp in experiments:
        d = Path(exp.data_dir).expanduser()
        if d.exists() and not d.is_dir():
            raise UsageError(f"{exp.name}: data_dir {str(d)!r} is a file, not a directory")


def check_exports_dir(exports: Path) -> None:
    """The exports dir exists (or can be made) and takes a file, as the runs dir must."""
    import tempfile

    if exports.exists() and not exports.is_dir():
        raise UsageError(f"exports dir {str(exports)!r} is a file, not a directory")
    try:
        exports.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=exports, prefix=".probe."):
            pass
    except OSError as e:
        raise UsageError(f"exports dir {str(exports)!r} is not writable: {e.strerror}") from None


def check_devices(experiments: list[Experiment]) -> None:
    """Refuse, before anything is written, a device setting this machine lacks."""
    from .core.devices import DeviceError, resolve_device

    for spec in sorted({e.device for e in experiments}):
        try:
            resolve_device(spec)
        except DeviceError as e:
            raise UsageError(str(e)) from None


def check_cluster(experiments: list[Experiment]) -> bool:
    """Whether the runs go to a Ray cluster (every experiment names one, or none does); a
    UsageError when Ray is not installed, or the selection mixes the two."""
    on_ray = [e for e in experiments if e.cluster]
    if not on_ray:
        return False
    from .runs.ray_executor import ray_missing

    missing = ray_missing()
    if missing:
        raise UsageError(f"cluster {on_ray[0].cluster!r}: {missing}")
    if len(on_ray) != len(experiments):
        raise UsageError(
            "the selected experiments name different clusters (some none); run them apart"
        )
    threads = [e.name for e in on_ray if e.executor == "thread"]
    if threads:
        raise UsageError(
            f"{', '.join(threads)}: executor = 'thread' trains in this process, not on the "
            f"cluster {on_ray[0].cluster!r}; leave executor at 'auto'"
        )
    return True


def _data_shape(exp: Experiment) -> tuple[tuple[int, int, int], int] | None:
    """The image shape and classes of `exp`'s dataset, as core.data gives them."""
    from .core.data import experiment_shape

    return experiment_shape(exp)


def check_data(experiments: list[Experiment]) -> list[Experiment]:
    """The experiments whose dataset can be had; each missing dataset is said once.

    Every dataset is loaded (downloaded on first use) here, once, before any run starts, so a
    dataset that cannot be had is one message instead of a failed run per experiment, and
    leaves no run behind. The loaded tensors stay cached for the runs of this process.
    """
    from .core.data import TRY_SYNTHETIC, DataError, load

    missing: dict[tuple[str, str], str] = {}
    for exp in experiments:
        key = (exp.dataset, exp.data_dir)
        if exp.dataset == "synthetic" or exp.cluster or key in missing:
            continue
        try:
            load(exp.dataset, exp.data_dir, image_size=exp.image_size, base_dir=exp.base_dir)
            missing[key] = ""
        except DataError as e:
            missing[key] = str(e)
    for key, reason in missing.items():
        if not reason:
            continue
        names = [e.name for e in experiments if (e.dataset, e.data_dir) == key]
        print(
            f"cnntui: {reason}\n  not started: {', '.join(names)}\n  {TRY_SYNTHETIC}",
            file=sys.stderr,
        )
    return [e for e in experiments if not missing.get((e.dataset, e.data_dir))]


def plan_jobs(
    args: argparse.Namespace, store: Any, selected: list[Experiment], overrides: dict[str, Any]
) -> list[Job]:
    """The runs to train; with --resume, each selected experiment's latest unfinished run,
    checked and locked (see RunStore.resume). A run that cannot be resumed is a UsageError
    naming it and why, raised before anything is written."""
    from .core.config import expand_runs
    from .runs.executors import Job
    from .runs.store import StoreError

    if not args.resume:
        return [Job(e) for e in expand_runs(selected)]  # one run per seed
    jobs: list[Job] = []
    skipped: dict[str, str] = {}  # experiment (and seed) -> why it has nothing to resume
    try:
        for exp in expand_runs(selected):
            seed = exp.seed if exp.seeds else None  # with seeds: each seed's own latest run
            record = store.latest(exp.name, unfinished=True, seed=seed)
            if record is None:
                bad = store.unreadable(exp.name)
                why = f"{bad[-1] / 'summary.json'} is unreadable" if bad else "no unfinished run"
                skipped[exp.label] = why
                continue
            changed_ok = getattr(args, "resume_changed_model", False)
            run, checkpoint = store.resume(record, overrides, changed_ok)
            jobs.append(Job(run.experiment, run, checkpoint))
    except StoreError as e:
        for job in jobs:
            if job.run is not None:
                job.run.release()
        raise UsageError(str(e)) from None
    if not jobs:
        raise UsageError(
            "--resume: none of the selected experiments has an unfinished run "
            f"({'; '.join(f'{name}: {why}' for name, why in skipped.items())})"
        )
    for name, why in skipped.items():
        print(f"[{name}] nothing to resume ({why}); skipped", file=sys.stderr)
    return jobs


@dataclasses.dataclass
class _Row:
    """A results-table row: a run this process trained, as its summary says."""

    name: str
    summary: RunSummary
    status: RunStatus


def trained_rows(
    store: Any, jobs: list[Any], ran: dict[str, str | None], reasons: dict[str, str]
) -> list[_Row]:
    """The runs this process trained, in job order: each read back from its own directory,
    or, where it has none (it could not be written), from what the run reported."""
    from .runs.store import RunStore

    rows: list[_Row] = []
    for job in jobs:
        exp = job.experiment
        if exp.label not in ran:
            continue  # never started (interrupted before its turn)
        path = ran[exp.label]
        record = RunStore.read(Path(path)) if path else None
        if record is not None:
            rows.append(_Row(exp.label, record.summary, record.status))
            continue
        summary = RunSummary(
            title=exp.display_title, model=exp.model, reason=reasons.get(exp.label)
        )
        rows.append(_Row(exp.label, summary, RunStatus.FAILED))
    return rows


def finish_study(
    args: argparse.Namespace,
    store: Any,
    jobs: list[Any],
    selected: list[Experiment],
    out: IO[str],
    progress: Progress,
    done: Tally,
) -> int:
    """The end of an attached study: its results table, the export, and the exit code."""
    rows = trained_rows(store, jobs, done.ran, done.reasons)
    if rows:
        progress.write("\n" + results_table(rows) + "\n")
    if any(len(e.seeds) > 1 for e in selected):
        progress.write("\n" + seeds_table(store, selected) + "\n")
    skipped = args.export and bool(export(args, store, selected, out).skipped)
    if done.interrupted:
        return EXIT_INTERRUPTED
    failed = [n for n, o in done.outcomes.items() if o in (RunStatus.FAILED, RunStatus.DIVERGED)]
    if done.not_started:
        progress.write(
            f"\n{done.not_started} experiment(s) not started: their dataset is missing\n"
        )
    if failed:
        progress.write(f"\n{len(failed)} run(s) failed or diverged: {', '.join(failed)}\n")
    return EXIT_RUN_FAILED if failed or done.not_started or skipped else EXIT_OK


def run_headless(args: argparse.Namespace, out: IO[str]) -> int:
    """`cnntui --run`: train the selected experiments and print their results."""
    search = selected_search(args)
    if search is not None:
        return run_search(args, out, search, detach=False)
    selected, overrides = selected_experiments(args)
    if args.export:
        parse_formats(args.format)
    on_cluster = check_cluster(selected)
    check_dirs(args, selected)
    if on_cluster:  # its nodes have the devices and the data, not this machine
        return run_attached(args, out, selected, overrides)
    check_devices(selected)
    executors = {e.executor for e in selected} - {"auto"}
    if len(executors) > 1:
        raise UsageError("the selected experiments set different executors; run them apart")
    return run_attached(args, out, selected, overrides)


def run_attached(
    args: argparse.Namespace, out: IO[str], selected: list[Experiment], overrides: dict[str, Any]
) -> int:
    """`--run`: train the runs with the executor their settings pick, printing their progress.
    Ctrl-C or SIGTERM cancels them (each saves). A hang-up (the SSH connection gone) ends
    the printing: runs in worker processes or on a cluster go on, and this command leaves;
    runs in this process's threads go on until they end."""
    from .runs.executors import Queued, executor_for
    from .runs.store import RunStore

    store = RunStore(args.runs_dir)
    jobs, selected, not_started = ready_jobs(plan_jobs(args, store, selected, overrides), selected)
    if not jobs:
        return EXIT_RUN_FAILED
    executor = executor_for(selected)
    follower = _Follower(out)
    if isinstance(executor, Queued):
        with store_errors_as_usage():
            records = executor.queue(jobs, store, args.jobs)
            events = executor.follow(records, store, follower.cancel, follower.left)
        where = f"on the Ray cluster {selected[0].cluster!r}" if executor.name == "ray" else ""
        follower.progress.line(
            f"queued {len(records)} run(s) {where or 'in worker processes'}; Ctrl-C "
            "cancels them, a hang-up leaves them training (cnntui --status)"
        )
    else:
        events = executor.start(jobs, store, follower.cancel, args.jobs)
    tally = Tally(not_started)
    follower.follow(events, tally.note)
    if follower.hangup and executor.outlives_caller:
        return EXIT_INTERRUPTED  # the terminal is gone; the runs go on
    for record in executor.records if isinstance(executor, Queued) else []:
        tally.ran.setdefault(record.label, str(record.path))
    tally.interrupted = follower.interrupted
    return finish_study(args, store, jobs, selected, out, follower.progress, tally)


def ready_jobs(
    jobs: list[Job], selected: list[Experiment]
) -> tuple[list[Job], list[Experiment], int]:
    """The jobs and experiments whose data can be had, and how many jobs are held back; a
    held-back resumed run's lock is released. A resumed run's data comes from its own stored
    settings."""
    ready = {e.name for e in check_data([j.experiment for j in jobs])}
    for job in jobs:
        if job.experiment.name not in ready and job.run is not None:
            job.run.release()
    not_started = len([j for j in jobs if j.experiment.name not in ready])
    jobs = [j for j in jobs if j.experiment.name in ready]
    selected = [e for e in selected if e.name in ready]
    return jobs, selected, not_started


@dataclasses.dataclass
class Tally:
    """How a study's runs went, as the events that followed them said."""

    not_started: int  # experiments held back: their dataset is missing
    ran: dict[str, str | None] = dataclasses.field(default_factory=dict)  # name -> run dir
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> why it failed
    outcomes: dict[str, str] = dataclasses.field(default_factory=dict)  # failed, diverged, ...
    interrupted: bool = False

    def note(self, event: Any) -> None:
        """Count one event: a run's start (its directory), or how it ended badly."""
        from .core.events import Cancelled, Diverged, Failed, Started

        if isinstance(event, Started | Failed):
            self.ran.setdefault(event.name, event.run_dir)
        if isinstance(event, Failed | Diverged | Cancelled):
            self.outcomes[event.name] = type(event).__name__.lower()
        if isinstance(event, Failed):
            self.reasons[event.name] = event.reason


class _Follower:
    """Follows a study's events, printing its progress to `out`, with a signal handler that
    only sets flags, since raising would tear through the event stream and leave the worker
    threads running. Every run sees the cancel event within a batch and saves."""

    def __init__(self, out: IO[str]) -> None:
        self.progress = Progress(out, live=out.isatty())
        self.cancel = threading.Event()
        self.interrupted = False
        self.hangup = False
        self.left = threading.Event()  # set on a hang-up: followers of other processes leave

    def follow(self, events: Iterable[Any], note: Callable[[Any], None]) -> None:
        """Show each event and pass it to `note`, until they end; meanwhile Ctrl-C, SIGTERM
        and SIGHUP (where there is one) call on_signal."""
        signals = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):
            signals.append(signal.SIGHUP)
        previous = {sig: signal.signal(sig, self.on_signal) for sig in signals}
        try:
            for event in events:
                self.progress.handle(event)
                note(event)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.progress.close()

    def on_signal(self, signum: int, frame: Any) -> None:
        """Cancel the runs on Ctrl-C or SIGTERM; on a hang-up, only stop printing."""
        if hasattr(signal, "SIGHUP") and signum == signal.SIGHUP:
            # A dropped SSH connection or a closed terminal ends only the following: the runs
            # (and those still waiting) go on, in this process or in their own.
            self.hangup = True
            self.left.set()
            leave_terminal(self.progress)
            return
        first = not self.interrupted
        self.interrupted = True
        self.cancel.set()
        if first:
            self.progress.line("interrupted: stopping runs and saving their histories ...")


def leave_terminal(progress: Progress) -> None:
    """After a hang-up: stop printing, and point stdout and stderr at /dev/null, so that
    writing to a terminal that is gone can neither fail nor stop the process."""
    progress.live = False
    for out in {id(o): o for o in (progress.out, sys.stdout, sys.stderr)}.values():
        silence(out)


def run_detached(args: argparse.Namespace, out: IO[str]) -> int:
    """`--run SEL --detach`: queue the runs in the run store, make sure its scheduler runs,
    say how to watch them, and return: the runs train in worker processes of their own."""
    from .runs.executors import Job, detached_for
    from .runs.store import RunStore

    search = selected_search(args)
    if search is not None:
        return run_search(args, out, search, detach=True)
    selected, overrides = selected_experiments(args)
    if args.export:
        raise UsageError("--export with --detach: export once the runs have finished")
    threads = [e.name for e in selected if e.executor == "thread"]
    if threads and not any(e.cluster for e in selected):
        raise UsageError(
            f"--detach: {', '.join(threads)} set executor = 'thread' (runs in this process); "
            "detached runs need 'process' or 'auto'"
        )
    check_cluster(selected)
    check_dirs(args, selected)
    store = RunStore(args.runs_dir)
    jobs = plan_jobs(args, store, selected, overrides) if args.resume else []
    with store_errors_as_usage():
        queued = detached_for(selected).queue(jobs or [Job(e) for e in selected], store, args.jobs)
    for record in queued:
        how = " (resume)" if record.queue is not None and record.queue.resume else ""
        print(f"queued {record.name} {record.run_id}{how}", file=out)
    runs = "" if args.runs_dir == Path("runs") else f" --runs-dir {args.runs_dir}"
    me = command_name()
    print(
        f"\nThey train in the background, whatever happens to this terminal. Watch them:\n"
        f"  {me} --status{runs}      the queue and progress\n"
        f"  {me}{runs}               the TUI\n"
        f"  {me} --cancel NAME|RUN_ID{runs}",
        file=out,
    )
    return EXIT_OK


def selected_experiments(args: argparse.Namespace) -> tuple[list[Experiment], dict[str, Any]]:
    """The experiments `--run` selects, with --set applied, and the overrides; a UsageError
    for a user model that does not build or fit its data, or --jobs below 1."""
    file, overrides = load_experiments(args)
    selected = apply_overrides(file.select(args.run), overrides)
    check_models(selected, file, _data_shape, overrides)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    return selected, overrides


SEARCH_OVERRIDES = ("trials", "parallel")  # a search's own keys that --set may change


def selected_search(args: argparse.Namespace) -> Search[Experiment] | None:
    """The [[search]] that `--run` names, with --set applied (`trials` and `parallel` to the
    search, every other setting to its trials); None when it names experiments."""
    extra = _search_overrides(args)
    file, overrides = load_experiments(args)
    names = [w.strip() for w in args.run.split(",") if w.strip()]
    found = [s for s in file.searches if s.name in names]
    if not found:
        if extra:
            raise UsageError(f"--set {', '.join(extra)}: a [[search]]'s keys; --run names none")
        return None
    if len(names) > 1:
        raise UsageError(f"--run {args.run!r}: run a [[search]] on its own")
    (base,) = apply_overrides([found[0].base], overrides)
    s = found[0]
    trials, parallel = extra.get("trials", s.trials), extra.get("parallel", s.parallel)
    return dataclasses.replace(s, base=base, trials=trials, parallel=parallel)


def _search_overrides(args: argparse.Namespace) -> dict[str, int]:
    """`--set trials=N` and `--set parallel=N`, taken out of the settings' --set items."""
    from .core.search_space import TRIALS_MAX

    out, rest = {}, []
    for item in args.overrides:
        key, _, raw = (p.strip() for p in item.partition("="))
        if key not in SEARCH_OVERRIDES:
            rest.append(item)
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= TRIALS_MAX:
            raise UsageError(f"--set {item!r}: {key} must be an integer in [1, {TRIALS_MAX}]")
        out[key] = int(raw)
    args.overrides = rest
    return out


def run_search(
    args: argparse.Namespace, out: IO[str], search: Search[Experiment], detach: bool
) -> int:
    """`--run SEARCH`: queue the search in the store, whose scheduler owns its study, and
    follow its trials as they appear (or, with --detach, say how to watch them). A search
    whose every trial has ended trains nothing and says so."""
    from .runs.search import finished_line, queue
    from .runs.store import RunStore

    if args.export:
        raise UsageError("--export with a [[search]]: export its group once it has ended")
    store = RunStore(args.runs_dir)
    check_dirs(args, [search.base])
    with store_errors_as_usage():  # SearchChanged: what changed, in one line
        if finished_line(store, search) is None and not check_data([search.base]):
            return EXIT_RUN_FAILED
        done = queue(store, search)  # as `r` on the search in the TUI
    if done is not None:
        print(done, file=out)
        return EXIT_OK
    if detach:
        print(
            f"queued search {search.name}: {search.trials} trials, {search.parallel} at once; "
            f"{command_name()} --status shows how far it is",
            file=out,
        )
        return EXIT_OK
    return follow_search(store, search, out)


def follow_search(store: Any, search: Search[Experiment], out: IO[str]) -> int:
    """Print the search's trials as they appear, until it has ended. Ctrl-C cancels the
    search (its trials save); a hang-up leaves it going."""
    from .runs import lifecycle, searches

    follower = _Follower(out)
    follower.progress.line(
        f"search {search.name}: {search.trials} trials, {search.parallel} at once, owned by the "
        "store's scheduler; Ctrl-C cancels it, a hang-up leaves it going (cnntui --status)"
    )

    def pruned(event: Any) -> None:
        if isinstance(event, searches.Pruned):
            follower.progress.line(f"[{event.name}] {event.reason}")

    follower.follow(
        lifecycle.follow_search(store, search.name, follower.cancel, follower.left), pruned
    )
    if follower.hangup or follower.interrupted:
        return EXIT_INTERRUPTED
    runs = searches.trial_runs(store, search.name)
    follower.progress.write(f"\nsearch {search.name}: {searches.progress(search, runs)}\n")
    return EXIT_OK


def command_name() -> str:
    """How to type cnntui again in this shell: `cnntui` where PATH finds it, else the path it
    was started by (`.venv/bin/cnntui` after `make run`, which activates no environment)."""
    started = Path(sys.argv[0])
    if shutil.which("cnntui") or started.name != "cnntui":
        return "cnntui"
    return str(started)


def show_status(args: argparse.Namespace, out: IO[str]) -> int:
    """`cnntui --status`: print the store's queued, running and recent runs, and how far each
    search is."""
    from .runs import lifecycle, searches
    from .runs.store import RunStore

    store = RunStore(args.runs_dir)
    if store.root.exists() and not store.root.is_dir():
        raise UsageError(f"runs dir {str(store.root)!r} is a file, not a directory")
    with store_errors_as_usage():  # its lock file a link or a FIFO
        lifecycle.ensure_scheduler(store)  # a scheduler killed with runs queued: take over
    print(lifecycle.status_table(store), file=out)
    for line in searches.status_lines(store):
        print(line, file=out)
    return EXIT_OK


def cancel_runs(args: argparse.Namespace, out: IO[str]) -> int:
    """`cnntui --cancel`: ask the named runs to stop, and say which were asked."""
    from .runs import lifecycle
    from .runs.store import RunStore

    with store_errors_as_usage():
        lines = lifecycle.cancel(RunStore(args.runs_dir), args.cancel)
    for line in lines:
        print(line, file=out)
    return EXIT_OK


def export(
    args: argparse.Namespace, store: Any, experiments: list[Experiment], out: IO[str]
) -> ExportResult:
    """Export every experiment's latest run (figures, tables) and say what was written."""
    from .report.export import ExportError, export_all

    formats = parse_formats(args.format)
    try:
        result = export_all(store, experiments, args.exports_dir, formats)
    except ExportError as e:
        raise UsageError(str(e)) from None
    print(f"\nexported {len(result.files)} file(s) to {result.folder}/", file=out)
    for warning in result.warnings:
        print(f"note: {warning}", file=out)
    if result.missing:
        print(f"nothing recorded to export yet for: {', '.join(result.missing)}", file=out)
    out.flush()
    for name, why in result.skipped.items():
        print(f"cnntui: export skipped {name}: {why}", file=sys.stderr)
    return result


def run_export_only(args: argparse.Namespace, out: IO[str]) -> int:
    """`cnntui --export` without --run: export what the store recorded."""
    file, _overrides = load_experiments(args)
    from .runs.store import RunStore

    result = export(args, RunStore(args.runs_dir), file.experiments, out)
    return EXIT_RUN_FAILED if result.skipped else EXIT_OK


def open_tui(args: argparse.Namespace) -> int:
    """Start the terminal UI on the experiments file."""
    file, overrides = load_experiments(args)
    apply_overrides(file.experiments, overrides)  # every one can be run from the app: checked
    try:
        from .tui.app import make_app
    except ImportError:
        print(
            "cnntui: the terminal UI is not available in this build; use --run (see cnntui --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    app = make_app(args.config, overrides, args.runs_dir, args.exports_dir, args.jobs)
    app.run()
    # However the app ended (quit, a hangup, a crash), no run may be cut off mid-save: cancel
    # them all and wait until each has saved (a batch, then its files). Every file is written
    # by rename, so then skipping the interpreter's slow teardown (about 1 s with torch
    # loaded) cannot leave a half-written file, and quitting stays well under 2 s.
    for name in ("SIGHUP", "SIGTERM"):  # stopping is under way: another signal must not cut it
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    app.main.session.cancel_all()
    app.main.session.wait_stopped(TUI_STOP_SECONDS)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # the terminal is gone
            stream.flush()
    os._exit(EXIT_INTERRUPTED if app.return_code == EXIT_INTERRUPTED else EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    """The cnntui command: parse the arguments, run what they ask, return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from .serve.command import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            file, overrides = load_experiments(args)
            if overrides:  # shown as they would run: `--list --set seeds=0,1,2`
                file.experiments = apply_overrides(file.experiments, overrides)
                defaults: list[Any] = [file.defaults]  # Settings: replaced like an Experiment
                (file.defaults,) = apply_overrides(defaults, overrides)
            print_list(file, sys.stdout, args.runs_dir)
            sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
            return EXIT_OK
        if args.status:
            return show_status(args, sys.stdout)
        if args.cancel is not None:
            return cancel_runs(args, sys.stdout)
        if args.detach and args.run is None:
            raise UsageError("--detach goes with --run SELECTION")
        if args.run is not None and args.detach:
            return run_detached(args, sys.stdout)
        if args.run is not None:  # even "" or ",": that is a usage error, never the TUI
            return run_headless(args, sys.stdout)
        if args.export:
            return run_export_only(args, sys.stdout)
        return open_tui(args)
    except (ConfigError, UsageError) as e:
        print(f"cnntui: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`cnntui --list | head -1`): end quietly, as a tool killed by
        # SIGPIPE does. Point stdout at /dev/null so the exit flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _val_part(event: Any) -> str:
    """The validation figures of an epoch line, for a run with a validation split."""
    if math.isnan(event.val_loss):
        return ""
    return f"val loss {event.val_loss:.4f} acc {text.pct(event.val_acc)} · "


def _end_line(event: Any) -> str:
    """The line that says how a run ended: finished, failed, diverged or cancelled."""
    from .core.events import Diverged, Failed, Finished

    match event:
        case Finished():
            early = f" (early stop at epoch {event.stopped_early})" if event.stopped_early else ""
            return f"[{event.name}] finished{early} in {text.seconds(event.total_seconds)}"
        case Failed():
            return f"[{event.name}] FAILED: {event.reason}"
        case Diverged():
            return f"[{event.name}] DIVERGED: {event.reason}"
    return f"[{event.name}] cancelled; history so far is saved"
