"""Benchmarks are code too: each one's `--smoke` runs it at its smallest, in a subprocess, and
must exit 0 having printed the figures it exists to print. A benchmark that an API change
broke (one crashed for weeks before anyone ran it) fails here instead."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnntui.core.config import load

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900.0  # seconds: only bounds a hung benchmark; a smoke run takes seconds to a minute
NUM = r"(-?\d[\d,]*(?:\.\d+)?)"  # a figure as the benchmarks print them: 1,234 or 0.25


def smoke(name: str, cwd: Path) -> str:
    """The output of `benchmarks/NAME.py --smoke` run from `cwd`; fails unless it exits 0."""
    # The processes it starts (schedulers, workers, cnntui itself) import this checkout too.
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}:\n{out[-4000:]}"
    return out


def figures(pattern: str, out: str) -> list[float]:
    """The figures of the first line matching `pattern` (its groups), each a finite number
    above 0: a rate or a time that came out 0 or nan means the measurement did not happen."""
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{out[-4000:]}"
    values = [float(g.replace(",", "")) for g in found.groups()]
    assert all(v > 0 for v in values), f"{found.group(0)!r}: a figure is not above 0"
    return values


@pytest.mark.process
def test_bench_speed_prints_images_per_second_of_each_case(tmp_path: Path) -> None:
    out = smoke("bench_speed", tmp_path)
    for case in ("lenet-4", "lenet-128", "resnet-128"):
        # imgs, threads, (a) compute, (b) engine, (c) loader, b/a, b/c
        figures(rf"^{case}\s+{NUM}\s+{NUM}" + rf"\s+{NUM}" * 5 + r"$", out)


@pytest.mark.process
def test_bench_jobs_prints_images_per_second_of_each_mode(tmp_path: Path) -> None:
    out = smoke("bench_jobs", tmp_path)
    assert "sequential" in out and "threads" in out and "processes" in out, out
    for kind in ("steady", "wall"):
        figures(rf"^\s+\d+\s+\d+\s+{kind}" + rf"\s+{NUM}" * 3 + r"$", out)


@pytest.mark.process
def test_bench_live_prints_the_start_time_and_the_cost_of_live_files(tmp_path: Path) -> None:
    out = smoke("bench_live", tmp_path)
    figures(rf"--detach returned in {NUM}s; first batch loss at {NUM}s", out)
    figures(rf"^\s+median {NUM}s$", out)
    for batch in (4, 128):
        figures(
            rf"lenet batch\s+{batch}: engine\s+{NUM}\s+with live files\s+{NUM}\s+ratio {NUM}", out
        )


@pytest.mark.process
def test_bench_tui_prints_every_section(tmp_path: Path) -> None:
    out = smoke("bench_tui", tmp_path)
    # 1. throughput with 2 runs: threads headless, app, app/headless; the same for workers
    figures(rf"^\s+2 \|\s+{NUM}\s+{NUM}\s+{NUM}% \|\s+{NUM}\s+{NUM}\s+{NUM}%$", out)
    # 2. key latency, idle and with 2 runs: median, p95, max (ms)
    for runs in (0, 2):
        figures(rf"^\s+{runs} \|\s+{NUM} \|\s+{NUM} \|\s+{NUM}$", out)
    # 3. quit, in the app and as a real process whose run is kept as cancelled
    figures(rf"app exited, threads stopped in {NUM} s", out)
    figures(rf"exited {NUM} s after y; run cancelled, {NUM} batch losses kept", out)
    # 4. start with past runs: the section an API change broke unnoticed
    figures(rf"{NUM} s to the main screen, {NUM} s with `v` to the filled results table", out)
    figures(rf"a changed row shows in {NUM} ms, a new run's row in {NUM} ms", out)
    # 5. the redraw of a long run, at two sizes
    for size in ("44x12", "120x30"):
        figures(rf"{size}: .* decimate to {NUM} points .* plotext build {NUM} ms", out)


@pytest.mark.process
def test_bench_tui_first_loss_prints_the_time_to_the_first_loss_on_screen(
    tmp_path: Path,
) -> None:
    out = smoke("bench_tui_first_loss", tmp_path)
    for executor in ("process", "thread"):
        figures(rf"^{executor}\s+r -> first batch loss on screen: median {NUM} s", out)


@pytest.mark.process
def test_time_suite_prints_each_shipped_experiments_seconds(tmp_path: Path) -> None:
    out = smoke("time_suite", tmp_path)
    for exp in load(ROOT / "experiments.toml").experiments:
        figures(rf"^{re.escape(exp.name)}\s+\w+\s+{exp.batch_size}\s+{exp.epochs}\s+{NUM}", out)
    figures(rf"^total\s+{NUM}\s+\(wall {NUM} s", out)
    figures(rf"Task 4 \(arch-lenet \+ arch-resnet\): {NUM} s vs the report's {NUM} s", out)


@pytest.mark.process
def test_gpu_switches_measures_every_switch_or_says_there_is_no_cuda(tmp_path: Path) -> None:
    import torch

    out = smoke("gpu_switches", tmp_path)
    if not torch.cuda.is_available():
        assert out.splitlines() == [
            "no CUDA GPU here, nothing measured; checked 7 switch settings and ran 4 of them"
            " one tiny epoch on the CPU"
        ], out
        return
    for switch in ("plain", "channels_last=True", "amp=bf16", "amp=fp16", "augment=True"):
        figures(rf"^\s+{re.escape(switch)}\s+{NUM} img/s\s+max\|dloss\| ", out)
    for mode in ("default", "reduce-overhead"):
        figures(rf"^\s+compile={mode}\s+{NUM} img/s", out)


@pytest.mark.process
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_bench_ray_prints_each_way_and_the_cancel_latency(tmp_path: Path) -> None:
    out = smoke("bench_ray", tmp_path)
    for way in ("process", "ray addr", "ray local"):
        # first batch, wall, engine images/s, study images/s
        figures(rf"^{way}\s+{NUM}s\s+{NUM}s\s+{NUM}\s+{NUM}$", out)
    assert "loss histories through Ray equal the local runs' exactly" in out, out
    for way in ("process", "ray addr"):
        figures(rf"^\s+{way}\s+median {NUM}s\s+max {NUM}s$", out)


@pytest.mark.process
def test_bench_first_loss_prints_each_way_to_the_first_loss_on_disk(tmp_path: Path) -> None:
    out = smoke("bench_first_loss", tmp_path)
    for way in ("thread", "cold worker", "warm worker", "bare python -c 'import torch'"):
        figures(rf"^{re.escape(way)}\s+median {NUM} s", out)
