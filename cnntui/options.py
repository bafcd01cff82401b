"""The command line's options, shared by `cnntui` (cli) and `cnntui serve` (serve).

The argument parser with its help texts, the exit codes, and reading the experiments file
with the overrides the options name. Standard library and the config only, so `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Collection
from pathlib import Path
from typing import Any

from . import __version__
from .core.config import SETTING_KEYS, ExperimentFile, load, parse_override

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a process that SIGPIPE ended


class UsageError(Exception):
    """Bad command line, config, or directory: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that leaves the options named in `hidden` out of --help."""

    def __init__(self, hidden: Collection[str], **kwargs: Any) -> None:
        self.hidden = frozenset(hidden)  # before super(), which adds -h through add_argument
        super().__init__(**kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """As ArgumentParser.add_argument; an option in `hidden` gets no help line."""
        if any(a.lstrip("-").replace("-", "_") in self.hidden for a in args):
            kwargs["help"] = argparse.SUPPRESS
        return super().add_argument(*args, **kwargs)


def build_parser(hidden: Collection[str] = ()) -> argparse.ArgumentParser:
    """The command line's arguments, with their help texts; those in `hidden` (by their
    long name without dashes) are accepted but not listed."""
    p = _Parser(
        hidden,
        prog="cnntui",
        description="Run, watch and compare small CNN experiments defined in experiments.toml.\n"
        "With no --run, opens the terminal UI.",
        epilog="examples:\n"
        "  cnntui                          open the TUI on ./experiments.toml\n"
        "  cnntui --list                   show the experiments and their settings\n"
        "  cnntui --run all --export       train everything headless, then export\n"
        "  cnntui --run baseline --set epochs=1 --set dataset=synthetic\n"
        "  cnntui serve [--port 8000]      the TUI in a browser (cnntui serve --help)\n"
        "\nsettings for --set KEY=VALUE and experiments.toml (README: what each one does):\n"
        + textwrap.fill(
            ", ".join(SETTING_KEYS), width=78, initial_indent="  ", subsequent_indent="  "
        )
        + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_what_to_do(p)
    _add_settings(p)
    _add_run_control(p)
    p.add_argument("--version", action="version", version=f"cnntui {__version__}")
    return p


def _add_what_to_do(p: argparse.ArgumentParser) -> None:
    """--run, --list, --export and the experiments file."""
    p.add_argument(
        "--run", metavar="WHAT", help="'all', a group, or NAME[,NAME...] to train headless"
    )
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--export", action="store_true", help="write figures, tables and histories")
    p.add_argument("--config", default="experiments.toml", type=Path, help="experiments file")


def _add_settings(p: argparse.ArgumentParser) -> None:
    """The overrides of the file's settings, the directories and the figure formats."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting for every selected experiment (repeatable)",
    )
    p.add_argument("--device", help="override the device: auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--data-dir", help="override where datasets are read and downloaded")
    p.add_argument("--runs-dir", default="runs", type=Path, help="run store (default: runs)")
    p.add_argument(
        "--exports-dir",
        default="exports",
        type=Path,
        help="where --export writes figures and tables (default: exports)",
    )
    p.add_argument(
        "--format",
        default="png",
        metavar="FMT[,FMT]",
        help="figure formats for --export: png, svg, pdf (default: png)",
    )


def _add_run_control(p: argparse.ArgumentParser) -> None:
    """How runs train and are watched: jobs, resume, detach, status, cancel, GPUs, cluster."""
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at once (default 1)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --run: continue each selected experiment's latest unfinished run from its "
        "checkpoint",
    )
    p.add_argument(
        "--resume-changed-model",
        action="store_true",
        help="with --resume: resume runs whose model file changed since they started",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="with --run: queue the runs in worker processes that outlive this terminal, "
        "and return at once",
    )
    p.add_argument("--status", action="store_true", help="show the queued, running and recent runs")
    p.add_argument(
        "--cancel", metavar="NAME|RUN_ID", help="cancel queued or running runs, from any shell"
    )
    p.add_argument(
        "--gpus", metavar="I[,I...]", help="GPU indices runs may use (default: every GPU)"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDR",
        help="train on a Ray cluster: ray (a local Ray for this study), auto, "
        "ray://HOST:10001 or HOST:6379 (needs the ray extra)",
    )


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set items, then --device and --data-dir, validated like the file's settings."""
    items: list[tuple[str, str | None]] = [(item, None) for item in args.overrides]
    if args.device:
        items.append((f"device={args.device}", f"--device {args.device!r}"))
    if args.data_dir:
        items.append((f"data_dir={args.data_dir}", f"--data-dir {args.data_dir!r}"))
    if getattr(args, "gpus", None) is not None:
        items.append((f"gpus={args.gpus}", f"--gpus {args.gpus!r}"))
    if getattr(args, "cluster", None) is not None:
        items.append((f"cluster={args.cluster}", f"--cluster {args.cluster!r}"))
    overrides: dict[str, Any] = {}
    for item, label in items:
        key, value = parse_override(item, label)
        overrides[key] = value
    return overrides


def parse_formats(spec: str) -> tuple[str, ...]:
    """The figure formats `--format` names; UsageError for one not offered."""
    formats = tuple(f.strip().lower() for f in spec.split(",") if f.strip())
    if not formats or any(f not in ("png", "svg", "pdf") for f in formats):
        raise UsageError(f"--format {spec!r}: allowed formats are png, svg, pdf")
    return formats


def load_experiments(args: argparse.Namespace) -> tuple[ExperimentFile, dict[str, Any]]:
    """The experiments file and the validated --set/--device/--data-dir overrides."""
    overrides = collect_overrides(args)
    return load(args.config), overrides
