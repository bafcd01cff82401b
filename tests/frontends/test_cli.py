"""The headless CLI as a user runs it: a real subprocess, its output, files and exit code."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnntui import cli
from cnntui.core import config
from cnntui.runs.store import RunStore
from tests.core.test_user_model import study
from tests.helpers import LONG, batch4_run, cnntui, start
from tests.waiting import line, poll, rest

SMALL = ["--set", "train_size=256", "--set", "test_size=128", "--set", "epochs=2"]


@pytest.mark.process
def test_run_all_and_export(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    result = cnntui("--run", "all", "--export", *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\r" not in out  # not a terminal: plain lines only
    assert out.count("epoch 1/2") == 2 and out.count("finished in") == 2
    # The results table: names, Chinese titles, parameters, accuracies.
    table = out[out.index("name ") :]
    assert "alpha" in table and "甲" in table and "乙" in table and "62,006" in table
    assert "finished" in table
    for name in ("alpha", "beta"):
        npz = np.load(cwd / "exports" / name / "loss_history.npz")
        for key in (
            "batch_losses",
            "epoch_losses",
            "batch_indices",
            "train_acc",
            "test_loss",
            "test_acc",
            "epoch_seconds",
        ):
            assert key in npz.files
        assert len(npz["batch_losses"]) == 16 and len(npz["epoch_losses"]) == 2
        runs = RunStore(cwd / "runs").runs(name)
        assert len(runs) == 1 and runs[0].status == "finished"


@pytest.mark.process
def test_list_shows_titles_and_settings(tiny_toml: Path) -> None:
    result = cnntui("--list", cwd=tiny_toml.parent)
    assert result.returncode == 0
    assert "alpha" in result.stdout and "乙" in result.stdout and "lr=0.02" in result.stdout


def test_list_shows_model_args_as_the_file_and_set_write_them(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text("def net(width=8, kernel=(3, 3), act='relu'):\n    ...\n")
    args = "model_args = { width = 4, kernel = [3, 3], act = 'relu' }"
    path = study(tmp_path, model="nets.py:net", extra=args)
    out = io.StringIO()
    cli.print_list(config.load(path), out)
    shown = 'model_args={act="relu",kernel=[3, 3],width=4}'
    assert shown in out.getvalue().replace("\n", "").replace(" " * 26, ""), out.getvalue()
    assert "'width'" not in out.getvalue()


@pytest.mark.process
def test_help_answers(tiny_toml: Path) -> None:
    result = cnntui("--help", cwd=tiny_toml.parent)
    assert result.returncode == 0 and "--run" in result.stdout and "--export" in result.stdout


@pytest.mark.process
def test_help_fits_80_columns_and_lists_every_setting(tiny_toml: Path) -> None:
    """--help reads at 80 columns: no line runs over, every option says what it does, no
    help text stops mid-phrase, and the keys --set takes are listed."""
    from cnntui.core.config import SETTING_KEYS

    out = cnntui("--help", cwd=tiny_toml.parent, env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in out.splitlines()) <= 80, out
    options = out.split("\noptions:", 1)[1]
    exports = options.split("--exports-dir EXPORTS_DIR", 1)[1].split("--format")[0]
    assert "where --export writes" in " ".join(exports.split())  # not a bare "(default: ...)"
    assert not options.split("--resume", 1)[1].split("--detach")[0].rstrip().endswith("of each")
    listed = out.split("settings for --set KEY=VALUE", 1)[1]
    assert all(key in listed for key in SETTING_KEYS)


def _bad_usage_cases(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "afile").write_text("x")
    broken = tmp / "broken.toml"
    broken.write_text('[defaults]\nepochs = 2\n\n[[experiment]]\nname = "a"\nlearning_rate = 1\n')
    cases = [
        (
            ["--config", "broken.toml", "--run", "all"],
            "broken.toml:6:1: unknown key 'learning_rate' (did you mean 'lr'?)",
        ),
        (["--config", "missing.toml", "--run", "all"], "missing.toml: no such file"),
        (["--run", "gamma"], "no experiment or group named 'gamma'"),
        (["--run", "all", "--set", "epoch=3"], "unknown key 'epoch' (did you mean 'epochs'?)"),
        (["--run", "all", "--set", "lr=fast"], "'fast' is not a number"),
        (["--run", "all", "--runs-dir", "afile"], "runs dir 'afile' is a file"),
        (["--run", "all", "--export", "--exports-dir", "afile"], "exports dir 'afile' is a file"),
        (["--run", "all", "--data-dir", "afile"], "data_dir 'afile' is a file"),
        (["--run", "all", "--export", "--format", "gif"], "allowed formats are png, svg, pdf"),
        (["--run", "all", "--device", "tpu"], "--device 'tpu': unknown device 'tpu'"),
        (["--run", "all", "--jobs", "0"], "--jobs 0: must be >= 1"),
        # Nothing selected is a usage error, never the TUI (which would wait for a terminal).
        (["--run", ""], "--run: name at least one experiment, a group, or 'all'"),
        (["--run", " "], "--run: name at least one experiment, a group, or 'all'"),
        (["--run", ","], "--run: name at least one experiment, a group, or 'all'"),
        (["--config", "empty.toml", "--run", "all"], "empty.toml has no [[experiment]] to run"),
        # Checked before the first run, not after a long study.
        (
            ["--run", "all", "--export", "--exports-dir", "afile/out"],
            "exports dir 'afile/out' is not writable: Not a directory",
        ),
        (["--config", "/dev/zero", "--list"], "/dev/zero: not a regular file"),
        (  # a shared file's title that would retitle and clear the terminal
            ["--config", "hostile.toml", "--list"],
            "hostile.toml:3:1: 'title' holds the control character '\\x1b' (character 1)",
        ),
        (["--config", "fifo.toml", "--run", "all"], "fifo.toml: not a regular file"),
        (["--config", "huge.toml", "--list"], "huge.toml: larger than 1 MiB"),
        (
            ["--config", "seed.toml", "--run", "all"],
            "seed.toml:2:1: 'seed' = 18446744073709551616 is out of range: must be in [0, 2^64",
        ),
    ]
    (tmp / "empty.toml").write_text("# nothing yet\n[defaults]\nepochs = 1\n")
    os.mkfifo(tmp / "fifo.toml")
    (tmp / "hostile.toml").write_text(
        '[[experiment]]\nname = "a"\ntitle = "\\u001b]0;X\\u0007\\u001b[2J"\n'
    )
    (tmp / "huge.toml").write_bytes(b"#" * (2 << 20))
    (tmp / "seed.toml").write_text(
        '[defaults]\nseed = 18446744073709551616\n[[experiment]]\nname = "a"\n'
    )
    import torch

    if not torch.cuda.is_available():
        cases.append((["--run", "all", "--device", "cuda"], "this machine has no CUDA GPU"))
    return cases


@pytest.mark.process
def test_bad_usage_is_one_line_exit_2_no_traceback(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    for args, message in _bad_usage_cases(cwd):
        result = cnntui(*args, cwd=cwd)
        assert result.returncode == 2, (args, result.stderr)
        err = result.stderr.strip()
        assert "Traceback" not in result.stderr and "\n" not in err, (args, err)
        assert "\x1b" not in result.stdout + result.stderr, args
        assert err.startswith("cnntui: ") and message in err, (args, err)
        assert not (cwd / "runs").exists() or not list((cwd / "runs").iterdir())


@pytest.mark.process
def test_list_gives_each_experiments_exact_parameter_count_from_its_latest_run(
    tiny_toml: Path,
) -> None:
    from tests.helpers import train

    file = config.load(tiny_toml)
    store = RunStore(tiny_toml.parent / "runs")
    alpha = file.experiments[0]
    for _event in train(alpha, None, store.create(alpha)):
        pass
    out = io.StringIO()
    cli.print_list(file, out, store.root)
    assert "parameters (latest runs): alpha 62,006" in out.getvalue()  # LeNet, 3x32x32
    assert "beta" not in out.getvalue().split("parameters (latest runs):")[1].split("\n\n")[0]


def test_list_into_a_closed_pipe_ends_quietly(tiny_toml: Path) -> None:
    """`cnntui --list | head -1`: the reader is gone before the list is written."""
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write fails, whatever the timing
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cnntui", "--list"],
            cwd=tiny_toml.parent,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert result.stderr == "" and result.returncode == 141


@pytest.mark.process
def test_list_through_head_shows_its_first_line_only(tiny_toml: Path) -> None:
    many = tiny_toml.read_text() + "".join(
        f'\n[[experiment]]\nname = "e{i}"\ngroup = "g"\n' for i in range(3000)
    )
    tiny_toml.write_text(many)  # more than a pipe holds, so the writer meets the closed pipe
    result = subprocess.run(
        f"{sys.executable} -m cnntui --list | head -1; echo status ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=tiny_toml.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "experiments.toml: 3002 experiments\nstatus 141\n"
    assert result.stderr == ""


@pytest.mark.process
def test_an_unreadable_run_is_skipped_and_the_rest_exported(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    assert cnntui("--run", "all", *SMALL, cwd=cwd).returncode == 0
    store = RunStore(cwd / "runs")
    alpha, beta = store.latest("alpha"), store.latest("beta")
    npz = alpha.path / "history.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk or a bad copy

    result = cnntui("--export", cwd=cwd)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"cnntui: export skipped alpha: run {alpha.run_id} is unreadable "
        f"({npz.relative_to(cwd)}: unreadable history (BadZipFile: File is not a zip file))\n"
    )
    assert (cwd / "exports" / "beta" / "loss_curves.png").exists()
    assert not (cwd / "exports" / "alpha").exists()
    md = (cwd / "exports" / "g" / "results.md").read_text("utf-8")
    assert "the files of its latest run could not be read: `alpha`" in md and "`beta`" in md

    npz.write_bytes(good)
    summary_file = beta.path / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary.update(params="abc", final_test_acc="x", title="\x1b[2J")
    summary_file.write_text(json.dumps(summary))
    result = cnntui("--export", cwd=cwd)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"cnntui: export skipped beta: run {beta.run_id} is unreadable (ValueError: summary.json: "
    )
    assert "'params' is 'abc', not a whole number" in result.stderr
    assert "'final_test_acc' is 'x', not a number" in result.stderr
    assert result.stderr.count("\n") == 1
    assert (cwd / "exports" / "alpha" / "loss_curves.png").exists()


@pytest.mark.slow
def test_a_skipped_run_makes_run_and_export_exit_1(tiny_toml: Path, monkeypatch, capsys) -> None:
    from cnntui import cli
    from cnntui.report import export as export_mod

    real = export_mod.export_all
    why = "run 1 is unreadable (BadZipFile: File is not a zip file)"

    def with_a_bad_run(*args, **kwargs):
        result = real(*args, **kwargs)
        result.skipped["alpha"] = why
        return result

    monkeypatch.setattr(export_mod, "export_all", with_a_bad_run)
    monkeypatch.chdir(tiny_toml.parent)
    assert cli.main(["--run", "alpha", "--export", *SMALL]) == 1
    err = capsys.readouterr().err
    assert err == f"cnntui: export skipped alpha: {why}\n"


def test_run_tables_show_stored_text_escaped_and_odd_values_as_dashes(tmp_path: Path) -> None:
    from cnntui.cli import results_table

    summary = {
        "name": "a",
        "title": "\x1b]0;PWNED\x07\x1b[2J",
        "model": 5,
        "params": "abc",
        "final_test_acc": "x",
        "best_test_acc": None,
        "final_train_loss": [1],
        "total_seconds": "9",
        "status": "finished\x1b[31m",
    }
    run_dir = tmp_path / "a" / "1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    record = RunStore.read(run_dir)
    assert record is not None
    table = results_table([record])
    row = table.splitlines()[2].split()
    # the model (not text) shows as an empty cell; a status this program never writes: unknown
    assert row == ["a", "\\x1b]0;PWNED\\x07\\x1b[2J", "-", "-", "-", "-", "-", "unknown"]


@pytest.mark.process
def test_a_diverging_run_exits_1_and_the_others_finish(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    text = tiny_toml.read_text().replace("lr = 0.02", "lr = 1e6")
    tiny_toml.write_text(text)
    result = cnntui("--run", "all", *SMALL, cwd=cwd)
    assert result.returncode == 1
    assert "[beta] DIVERGED: loss became" in result.stdout
    store = RunStore(cwd / "runs")
    assert store.latest("alpha").status == "finished"
    assert store.latest("beta").status == "diverged"


@pytest.mark.process
def test_a_missing_dataset_is_said_once_and_leaves_no_failed_runs(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    broken = cwd / "cifar"
    broken.mkdir()
    (broken / "cifar-10-python.tar.gz").write_bytes(b"truncated download")
    text = tiny_toml.read_text().replace(
        'dataset = "synthetic"', 'dataset = "cifar10"\ndata_dir = "cifar"'
    )
    text += '\n[[experiment]]\nname = "gamma"\ndataset = "synthetic"\n'
    tiny_toml.write_text(text)
    result = cnntui("--run", "all", *SMALL, cwd=cwd)
    assert result.returncode == 1
    assert result.stderr.count("checksum mismatch") == 1
    assert "not started: alpha, beta" in result.stderr
    assert "--set dataset=synthetic" in result.stderr
    store = RunStore(cwd / "runs")
    assert store.latest("alpha") is None and store.latest("beta") is None  # no failed folders
    assert store.latest("gamma").status == "finished"  # the others still run


@pytest.mark.process
def test_a_data_folder_never_runs_code(tiny_toml: Path) -> None:
    """A shared experiments.toml points data_dir at batches that run a command when read."""
    cwd = tiny_toml.parent
    folder = cwd / "shared-data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    payload = b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03."
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(payload)
    run = ["--run", "alpha", "--set", "dataset=cifar10", "--set", "data_dir=shared-data"]
    for env in ({}, {"CNNTUI_UNVERIFIED_DATA": "1"}):
        result = subprocess.run(
            [sys.executable, "-m", "cnntui", *run, *SMALL],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert result.returncode == 1, result.stderr
        assert not (cwd / "pwned").exists(), env
        # one line names the file and what is wrong (as the run's failure, or said before
        # any run starts)
        output = (result.stdout + result.stderr).splitlines()
        said = [line for line in output if "data_batch_1" in line]
        assert len(said) == 1, output
        why = "refers to 'posix.system'" if env else "not the official CIFAR-10 file"
        assert why in said[0] and "Traceback" not in result.stderr


@pytest.mark.process
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_interrupt_stops_fast_and_keeps_the_history(tiny_toml: Path, sig, code) -> None:
    cwd = tiny_toml.parent
    proc = start("--run", "alpha", *LONG, cwd=cwd)
    line(proc, "epoch 1/200")
    # let epoch 2 get going (its losses reach the live file): its partial losses must be kept too
    live = RunStore(cwd / "runs").latest("alpha").path / "live.f64"
    poll(lambda: live.exists() and live.stat().st_size > 8 * 520, what="epoch 2's first losses")
    proc.send_signal(sig)
    out = rest(proc)
    assert proc.returncode == code, out
    assert "Traceback" not in out
    record = RunStore(cwd / "runs").latest("alpha")
    assert record.status == "cancelled"
    history = record.history()
    # Epoch 1 (500 batches) and the part of epoch 2 trained before the signal: the run stopped
    # mid-epoch, it did not train on to the end of epoch 2 (however busy the machine).
    assert 500 < len(history.batch_losses) < 1000 and len(history.test_acc) == 1
    assert history.batch_indices == list(range(len(history.batch_losses)))
    assert not list(record.path.glob("*.tmp"))


@pytest.mark.process
def test_kill_9_leaves_a_readable_store_and_resume_finishes(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    args = batch4_run(3)
    proc = start("--run", "alpha", *args, cwd=cwd)
    line(proc, "epoch 1/3")
    proc.kill()
    proc.wait(timeout=10)
    store = RunStore(cwd / "runs")
    record = store.latest("alpha")
    assert record.status == "interrupted"
    assert record.summary.epochs_done >= 1
    assert len(record.history().test_acc) >= 1

    result = cnntui("--run", "alpha", "--resume", *args, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming at epoch" in result.stdout
    resumed = store.latest("alpha")
    assert resumed.path == record.path and resumed.status == "finished"
    assert resumed.summary.epochs_done == 3
    assert len(resumed.history().batch_losses) == 3 * 500
    summary = json.loads((resumed.path / "summary.json").read_text())
    assert summary["status"] == "finished"


@pytest.mark.process
def test_resume_with_nothing_to_resume_is_a_usage_error(tiny_toml: Path) -> None:
    result = cnntui("--run", "alpha", "--resume", cwd=tiny_toml.parent)
    assert result.returncode == 2
    assert "none of the selected experiments has an unfinished run" in result.stderr


@pytest.mark.slow
def test_tty_progress_uses_a_live_line(tiny_toml: Path) -> None:
    """On a terminal the progress bar redraws in place (carriage returns), then the table."""
    import pty

    cwd = tiny_toml.parent
    pid, fd = pty.fork()
    if pid == 0:  # child: run cnntui on the pseudo-terminal
        os.chdir(cwd)
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "cnntui",
                "--run",
                "alpha",
                "--set",
                "train_size=3000",
                "--set",
                "batch_size=4",
                "--set",
                "epochs=1",
                "--set",
                "test_size=64",
            ],
        )
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    out = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert "\r" in out and ("█" in out or "░" in out)
    assert "finished" in out


@pytest.mark.process
def test_a_lone_headless_run_at_a_large_batch_uses_every_core(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    args = ["--run", "alpha", *SMALL, "--set", "batch_size=128"]
    result = cnntui(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run,) = RunStore(cwd / "runs").runs("alpha")
    from cnntui.core.devices import cpu_cores

    n = cpu_cores()
    assert run.summary.device == f"cpu ({n} thread{'s' if n > 1 else ''})"


@pytest.mark.process
def test_a_study_run_shows_validation_and_an_early_stop(tiny_toml: Path) -> None:
    sets = ["val_size=64", "epochs=6", "lr=1e-9", "early_stop_patience=2"]
    result = cnntui(
        "--run", "alpha", *(a for s in sets for a in ("--set", s)), cwd=tiny_toml.parent
    )
    assert result.returncode == 0, result.stderr
    epoch_lines = [ln for ln in result.stdout.splitlines() if "] epoch " in ln]
    assert len(epoch_lines) == 3  # no lower validation loss in epochs 2 and 3: stopped
    assert all(" · val loss " in ln for ln in epoch_lines)
    assert "[alpha] finished (early stop at epoch 3) in " in result.stdout
    listing = cnntui("--list", cwd=tiny_toml.parent).stdout
    assert "finished" in listing and "(early stop ep 3)" in listing
    (record,) = RunStore(tiny_toml.parent / "runs").runs("alpha")
    assert (record.summary.train_images, record.summary.val_images) == (192, 64)


@pytest.mark.process
def test_early_stopping_without_a_validation_split_is_refused_naming_both_keys(tiny_toml):
    result = cnntui("--run", "alpha", "--set", "early_stop_patience=2", cwd=tiny_toml.parent)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "cnntui: --set 'early_stop_patience=2': 'early_stop_patience' = 2 needs "
    )
    assert "val_size not set" in line and "set val_size > 0" in line
    assert not (tiny_toml.parent / "runs").exists() or not RunStore(tiny_toml.parent / "runs").runs(
        "alpha"
    )


@pytest.mark.process
def test_list_says_how_many_train_validation_and_test_images_each_experiment_uses(tiny_toml):
    cwd = tiny_toml.parent
    tiny_toml.write_text(
        tiny_toml.read_text().replace('title = "甲"', 'title = "甲"\nval_size = 64')
    )
    out = " ".join(cnntui("--list", cwd=cwd).stdout.split())  # lines wrap at 80 columns
    assert (
        "data: synthetic data (not CIFAR-10), 192 train / 64 validation / 128 test images (alpha)"
        in out
    )
    assert "data: synthetic data (not CIFAR-10), 256 train / 128 test images (beta)" in out


def test_the_commands_it_suggests_can_be_typed_in_this_shell(tmp_path, monkeypatch) -> None:
    """After `make run` no environment is active: --detach's "watch them" lines name the
    cnntui that was started (.venv/bin/cnntui), not a `cnntui` the shell cannot find."""
    from cnntui.cli import command_name

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "cnntui").write_text("#!/bin/sh\n")
    (venv_bin / "cnntui").chmod(0o755)
    monkeypatch.setattr(sys, "argv", [".venv/bin/cnntui", "--run", "all", "--detach"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert command_name() == ".venv/bin/cnntui"
    monkeypatch.setenv("PATH", str(venv_bin))  # activated: the short name works
    assert command_name() == "cnntui"


@pytest.mark.process
@pytest.mark.slow
def test_the_readme_quick_try_exports_the_files_it_says(tmp_path: Path) -> None:
    """The README's quick try (the shipped study on synthetic data) says how many files it
    exports: the count is re-made here with the same command, smaller, so it cannot go stale
    (the number of files depends on the study's experiments and groups, not on their size)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    said = re.search(r"and its (\d+) exported files", readme)
    assert said, "the README's quick try no longer says how many files it exports"
    shipped = Path(__file__).resolve().parents[2] / "experiments.toml"
    small = ["train_size=200", "test_size=100", "epochs=1", "batch_size=100"]
    args = ["--config", str(shipped), "--run", "all", "--export", "--set", "dataset=synthetic"]
    result = cnntui(*args, *[a for s in small for a in ("--set", s)], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    files = [p for p in (tmp_path / "exports").rglob("*") if p.is_file()]
    assert len(files) == int(said.group(1)), sorted(str(p) for p in files)


def test_list_says_when_the_latest_run_trained_on_other_data_or_settings(tmp_path):
    import dataclasses
    import io

    from cnntui.cli import print_list
    from cnntui.core.config import load
    from cnntui.core.history import History

    shipped = load(Path(__file__).resolve().parents[2] / "experiments.toml")
    store = RunStore(tmp_path / "runs")
    for name, changes in (("high-lr", {"dataset": "synthetic", "epochs": 2}), ("low-lr", {})):
        exp = dataclasses.replace(shipped.get(name), **changes)
        run = store.create(exp)
        run.save(History(), "finished", total_seconds=1.0, params=62006)
        run.release()
    out = io.StringIO()
    print_list(shipped, out, tmp_path / "runs")
    lines = out.getvalue().splitlines()
    (high,) = [x for x in lines if x.startswith("high-lr")]
    (low,) = [x for x in lines if x.startswith("low-lr")]
    assert "finished - *" in high and "*" not in low  # low-lr ran as the file says
    at = lines.index("* the latest run trained otherwise than the file says now:")
    assert lines[at + 1].split() == ["high-lr:", "dataset=synthetic", "epochs=2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--list", "--cluster", "http://x"],
            "--cluster 'http://x': unknown cluster 'http://x' (allowed: \"\" for this machine,",
        ),
        (
            ["--list", "--device", "cuda:abc"],
            "--device 'cuda:abc': unknown device 'cuda:abc' (allowed: auto, cpu, cuda, cuda:N, "
            "mps)",
        ),
        (["--list", "--gpus", "1:2"], "--gpus '1:2': 'gpus' = '1:2' is not valid: GPU indices"),
        (["--list", "--gpus", "1,1"], "--gpus '1,1': 'gpus' = '1,1' names GPU 1 twice"),
        (
            ["--list", "--cluster", "head:99999"],
            "--cluster 'head:99999': cluster 'head:99999': port 99999 is out of range: ports are 1",
        ),
        (["--list", "--set", "threads=32768"], "--set 'threads=32768': 'threads' = 32768 is out"),
        # Checked with the file's settings they join: each run of alpha has 256 images.
        (
            ["--list", "--set", "val_size=256"],
            "--set 'val_size=256': 'val_size' = 256 leaves experiment 'alpha' no images to train "
            "on: it must be less than its 256 training images (train_size = 256)",
        ),
        (["--run", "beta", "--set", "warmup_epochs=3"], "--set 'warmup_epochs=3': 'warmup_epochs'"),
    ],
)
def test_option_values_are_reported_whole_in_one_line(
    tiny_toml: Path, monkeypatch, capsys, args: list[str], message: str
) -> None:
    from cnntui import cli

    monkeypatch.chdir(tiny_toml.parent)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnntui: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tiny_toml.parent / "runs").exists() or not list(
        (tiny_toml.parent / "runs").iterdir()
    )
