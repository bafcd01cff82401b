"""Runs that outlive the terminal: the queue in the run store, the scheduler, worker
processes, live files, --detach / --status / --cancel, as a user meets them. Every wait
polls a condition with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnntui.core.config import apply_overrides, load
from cnntui.runs import daemon as scheduler
from cnntui.runs import lifecycle, processes
from cnntui.runs import store as st
from cnntui.runs.gpus import GIB, Gpu
from cnntui.runs.store import RunRecord, RunStatus, RunStore, RunSummary
from tests.helpers import cnntui, hold_lock, scheduler_pid, start
from tests.waiting import line, poll, rest

DEADLINE = 180.0


def statuses(store: RunStore) -> dict[str, str]:
    return {r.name: r.status for r in store.runs()}


def experiments(cwd: Path, **overrides):
    return apply_overrides(load(cwd / "experiments.toml").experiments, overrides)


# --- slot placement, with an injected GPU inventory ---------------------------------------


def queued(n: int, **queue) -> list[RunRecord]:
    q = {"device": "auto", "gpus": [], "runs_per_gpu": 1, "min_free_gib": 0.0, "jobs": 1}
    q.update(queue)
    return [
        RunRecord(Path(f"/runs/e{i}/r{i}"), RunSummary(status=RunStatus.QUEUED, queue=dict(q)))
        for i in range(n)
    ]


def gpus(*free_gib: float) -> list[Gpu]:
    return [Gpu(i, "H200", 140 * GIB, int((140 - f) * GIB), 0) for i, f in enumerate(free_gib)]


def test_runs_spread_one_per_gpu_and_runs_per_gpu_holds() -> None:
    placed = scheduler.place(queued(5), scheduler.Busy(), gpus(100, 100, 100, 100))
    assert sorted(g for _, g in placed) == [0, 1, 2, 3]  # the fifth waits
    placed = scheduler.place(queued(5, runs_per_gpu=2), scheduler.Busy(), gpus(100, 100))
    assert sorted(g for _, g in placed) == [0, 0, 1, 1]


def test_a_gpu_below_min_free_gib_gets_nothing_and_gpus_limits_the_choice() -> None:
    placed = scheduler.place(queued(3, min_free_gib=8), scheduler.Busy(), gpus(100, 4, 100))
    assert sorted(g for _, g in placed) == [0, 2]
    placed = scheduler.place(queued(3, gpus=[1, 2]), scheduler.Busy(), gpus(100, 100, 100))
    assert sorted(g for _, g in placed) == [1, 2]


def test_a_freed_gpu_slot_is_reused_and_busy_gpus_count() -> None:
    inventory = gpus(100, 100)
    busy = scheduler.Busy(gpu={0: 1, 1: 1})  # two runs training (one ours, one another's)
    assert scheduler.place(queued(2), busy, inventory) == []
    busy = scheduler.Busy(gpu={0: 1})  # the run on GPU 1 finished
    assert [g for _, g in scheduler.place(queued(2), busy, inventory)] == [1]


def test_cpu_runs_get_the_jobs_cpu_slots_and_no_gpu_means_cpu() -> None:
    placed = scheduler.place(queued(3, jobs=2), scheduler.Busy(), [])
    assert [g for _, g in placed] == [None, None]
    placed = scheduler.place(queued(3, jobs=2, device="cpu"), scheduler.Busy(cpu=1), gpus(100))
    assert [g for _, g in placed] == [None]


@pytest.mark.process
def test_a_worker_is_pinned_to_its_gpu(study: Path, tmp_path: Path) -> None:
    store = RunStore(study / "runs")
    lifecycle.submit(store, experiments(study, device="cuda"))
    fake = tmp_path / "fakepython"  # records the environment the worker would start with
    fake.write_text('#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER" > "$3/pinned"\n')
    fake.chmod(0o755)
    sched = scheduler.Scheduler(store, inventory=lambda: gpus(1, 100, 100), python=str(fake))
    sched.step()
    for proc, _gpu in sched.workers.values():
        proc.wait(30)
    pinned = sorted((r.path / "pinned").read_text().split()[0] for r in store.runs())
    assert pinned == ["1", "2"]  # GPU 0 has the least free memory: the runs went to 1 and 2
    assert all("PCI_BUS_ID" in (r.path / "pinned").read_text() for r in store.runs())


# --- detached runs, end to end on the CPU --------------------------------------------------


@pytest.mark.process
def test_detach_returns_at_once_and_the_runs_finish_in_the_background(study: Path) -> None:
    result = cnntui("--run", "all", "--detach", "--jobs", "2", cwd=study, timeout=60)
    assert result.returncode == 0, result.stderr
    store = RunStore(study / "runs")
    # it does not wait for the runs: back at the prompt while they are still to train (each
    # worker process has torch to import first)
    assert set(statuses(store).values()) <= {"queued", "running"}, statuses(store)
    ids = {r.run_id for r in store.runs()}
    assert len(ids) == 2 and all(i in result.stdout for i in ids)
    assert "cnntui --status" in result.stdout
    # No cnntui in the foreground any more: the scheduler and its workers finish the study.
    poll(
        lambda: statuses(store) == {"alpha": "finished", "beta": "finished"},
        DEADLINE,
        "both finished",
    )
    for record in store.runs():
        history = record.history()
        assert history.epochs_done == 2 and len(history.batch_losses) == 16
        live = np.fromfile(record.live, dtype="<f8")
        assert np.array_equal(live, np.asarray(history.batch_losses))
        assert "training" in (record.path / st.WORKER_LOG).read_text()
    status = cnntui("--status", cwd=study)
    assert status.returncode == 0
    assert status.stdout.count("finished") == 2 and " 2/2 " in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 80
    poll(
        lambda: not processes.held(store), DEADLINE, "the scheduler to exit once the queue is empty"
    )


@pytest.mark.process
def test_live_losses_are_seen_mid_epoch_and_cancel_works_queued_and_running(study: Path):
    long = ["--set", "train_size=6000", "--set", "batch_size=4", "--set", "epochs=3"]
    result = cnntui("--run", "all", "--detach", *long, cwd=study, timeout=60)
    assert result.returncode == 0, result.stderr
    store = RunStore(study / "runs")
    alpha = next(r for r in store.runs() if r.name == "alpha")
    follower = lifecycle.Follower(alpha.path)
    seen = []

    def mid_epoch_losses() -> bool:
        update = follower.poll()
        seen.extend(update.losses.tolist())
        record = update.record
        return bool(seen) and record.status == "running" and record.summary.epochs_done == 0

    # Another process (this test) reads the batch losses before the first epoch ends.
    poll(mid_epoch_losses, DEADLINE, "batch losses of alpha's first epoch")
    assert statuses(store)["beta"] == "queued"  # --jobs 1: it waits for alpha

    out = cnntui("--cancel", "beta", cwd=study)
    assert out.returncode == 0 and "removed from the queue" in out.stdout, out.stderr
    assert statuses(store)["beta"] == "cancelled"  # at once

    out = cnntui("--cancel", alpha.run_id, cwd=study)
    assert out.returncode == 0 and "cancelling" in out.stdout, out.stderr
    poll(lambda: statuses(store)["alpha"] == "cancelled", DEADLINE, "alpha to stop and save")
    record = store.latest("alpha")
    assert record.summary.batches_done >= len(seen) > 0
    assert record.summary.reason == "cancelled by the user"
    beta = store.latest("beta")
    assert not beta.live.exists()  # never started
    again = cnntui("--cancel", "beta", cwd=study)
    assert again.returncode == 2 and "none of its runs is queued or running" in again.stderr


@pytest.mark.process
def test_kill_9_of_the_scheduler_loses_no_queued_run(study: Path) -> None:
    store = RunStore(study / "runs")
    exps = experiments(study, train_size=3000, batch_size=4, epochs=1)
    lifecycle.submit(store, exps, jobs=1)
    assert lifecycle.ensure_scheduler(store)
    pid = poll(lambda: scheduler_pid(store), DEADLINE, "the scheduler to start")
    poll(lambda: statuses(store)["alpha"] == "running", DEADLINE, "alpha to start")
    os.kill(pid, signal.SIGKILL)
    poll(lambda: not processes.held(store), DEADLINE, "the killed scheduler's lock to go")
    assert statuses(store)["beta"] == "queued"
    # The next cnntui that queues or follows takes over; alpha, still training in its own
    # worker, holds the one CPU slot until it ends.
    assert lifecycle.ensure_scheduler(store)

    def both_finished() -> bool:
        now = statuses(store)
        assert not (now["alpha"] == "running" and now["beta"] == "running"), "two in one slot"
        return now == {"alpha": "finished", "beta": "finished"}

    poll(both_finished, DEADLINE, "the queue to drain")


@pytest.mark.process
def test_kill_9_of_a_worker_reads_interrupted_and_resumes(study: Path) -> None:
    long = ["--set", "train_size=2000", "--set", "batch_size=4", "--set", "epochs=3"]
    assert cnntui("--run", "alpha", "--detach", *long, cwd=study, timeout=60).returncode == 0
    store = RunStore(study / "runs")

    def running_after(epochs: int):
        record = store.latest("alpha")
        running = record.status == "running" and (record.summary.epochs_done or 0) >= epochs
        return record if running else None

    record = poll(lambda: running_after(1), DEADLINE, "alpha's first epoch")
    os.kill(record.summary.pid, signal.SIGKILL)
    poll(
        lambda: store.latest("alpha").status == "interrupted", DEADLINE, "alpha to read interrupted"
    )
    result = cnntui("--run", "alpha", "--resume", "--detach", cwd=study, timeout=60)
    assert result.returncode == 0 and "(resume)" in result.stdout, result.stderr
    assert record.run_id in result.stdout  # the same run, back in the queue
    # Killed again in its second epoch: this time resumed in the foreground (a thread here).
    record = poll(lambda: running_after(2), DEADLINE, "alpha's second epoch")
    os.kill(record.summary.pid, signal.SIGKILL)
    poll(
        lambda: store.latest("alpha").status == "interrupted", DEADLINE, "alpha to read interrupted"
    )
    result = cnntui("--run", "alpha", "--resume", cwd=study, timeout=DEADLINE)
    assert result.returncode == 0 and "resuming at epoch 3" in result.stdout, result.stderr
    (record,) = store.runs("alpha")
    assert record.status == "finished"
    history = record.history()
    assert history.epochs_done == 3 and len(history.batch_losses) == 3 * 500
    assert history.batch_indices == list(range(3 * 500))  # no gap, no duplicate
    live = np.fromfile(record.live, dtype="<f8")
    assert np.array_equal(live, np.asarray(history.batch_losses))


@pytest.mark.process
def test_two_processes_never_launch_the_same_run_twice(study: Path) -> None:
    store = RunStore(study / "runs")
    lifecycle.submit(store, experiments(study), jobs=2)
    run = store.runs()[0]
    # Two workers on one queued run at once: one trains it, the other leaves quietly.
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "cnntui.runs.worker", str(run.path)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [w.communicate(timeout=DEADLINE)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    assert sum("training" in log for log in logs) == 1, logs
    # Two schedulers (two cnntui starting at once) on the rest of the queue.
    schedulers = [
        subprocess.Popen([sys.executable, "-m", "cnntui.runs.daemon", str(store.root)])
        for _ in range(2)
    ]
    for proc in schedulers:
        assert proc.wait(DEADLINE) == 0
    assert statuses(store) == {"alpha": "finished", "beta": "finished"}
    other = store.runs()[1]
    assert (other.path / st.WORKER_LOG).read_text().count("training") == 1


@pytest.mark.process
def test_a_run_in_a_thread_writes_live_files_too(study: Path) -> None:
    result = cnntui("--run", "alpha", cwd=study)
    assert result.returncode == 0, result.stderr
    record = RunStore(study / "runs").latest("alpha")
    live = np.fromfile(record.live, dtype="<f8")
    assert np.array_equal(live, np.asarray(record.history().batch_losses))
    assert not (record.path / st.HEARTBEAT_FILE).exists()  # gone with the run


# --- attached --run with executor "process" -------------------------------------------------

PROCESS = ["--set", "executor=process", "--set", "train_size=3000", "--set", "batch_size=4"]


@pytest.mark.process
def test_attached_process_runs_survive_a_hangup_of_their_terminal(study: Path) -> None:
    proc = start("--run", "all", "--jobs", "2", *PROCESS, cwd=study)
    line(proc, "started on")
    proc.send_signal(signal.SIGHUP)  # the SSH connection is gone
    assert proc.wait(60) == 130
    store = RunStore(study / "runs")
    assert "running" in statuses(store).values()  # the runs go on without it
    poll(
        lambda: statuses(store) == {"alpha": "finished", "beta": "finished"},
        DEADLINE,
        "both finished",
    )


@pytest.mark.process
def test_attached_process_runs_stop_and_save_on_ctrl_c(study: Path) -> None:
    proc = start("--run", "alpha", *PROCESS, "--set", "epochs=5", cwd=study)
    line(proc, "epoch 1/5")
    proc.send_signal(signal.SIGINT)
    out = rest(proc)
    assert proc.returncode == 130, out
    assert "cancelled; history so far is saved" in out
    record = RunStore(study / "runs").latest("alpha")
    assert record.status == "cancelled" and record.summary.epochs_done >= 1


# --- the store's live files -----------------------------------------------------------------


def test_the_live_reader_tails_and_rereads_a_file_a_resume_cut_back(tmp_path: Path) -> None:
    writer, reader = st.LiveWriter(tmp_path), st.LiveReader(tmp_path)
    writer.write(0, [1.0, 2.0, 3.0])
    assert reader.read().tolist() == [1.0, 2.0, 3.0]
    writer.write(3, [4.0])
    assert reader.read().tolist() == [4.0] and not reader.reset
    writer.truncate(2)  # a resume from the checkpoint after batch 2
    writer.write(2, [5.0])
    assert reader.read().tolist() == [1.0, 2.0, 5.0] and reader.reset
    writer.close()


def test_a_run_on_another_host_lives_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    run = tmp_path / "exp" / "run"
    run.mkdir(parents=True)
    record = RunRecord(run, RunSummary(status=RunStatus.RUNNING, pid=2**30))  # no such pid here
    assert record.status == "interrupted"
    (run / st.HEARTBEAT_FILE).write_text("gpu-node-7 1234\n")
    assert record.status == "running"
    stale = time.time() - st.HEARTBEAT_STALE - 1
    os.utime(run / st.HEARTBEAT_FILE, (stale, stale))
    assert record.status == "interrupted"


def test_gpus_setting_is_checked_and_normalised() -> None:
    from cnntui.core.config import ConfigError, check_value, parse_override

    assert check_value("gpus", [2, 0]) == "2,0"
    with pytest.raises(ConfigError, match="names GPU 2 twice"):  # a typo, not a second slot
        check_value("gpus", [0, 2, 2])
    assert parse_override("gpus=0,2") == ("gpus", "0,2")
    assert check_value("gpus", "") == ""
    for bad in ("a", [True], [-1], "0;1", 3):
        with pytest.raises(ConfigError, match="gpus"):
            check_value("gpus", bad)
    with pytest.raises(ConfigError, match="unknown executor 'ray'"):
        check_value("executor", "ray")


@pytest.mark.process
def test_a_run_whose_worker_cannot_start_is_failed_not_relaunched_forever(study, tmp_path):
    store = RunStore(study / "runs")
    lifecycle.submit(store, experiments(study)[:1])
    broken = tmp_path / "brokenpython"
    broken.write_text("#!/bin/sh\necho 'no module named torch' >&2\nexit 1\n")
    broken.chmod(0o755)
    sched = scheduler.Scheduler(store, inventory=list, python=str(broken))
    assert scheduler.run(store, sched) == 0  # returns once nothing is left to do
    record = store.latest("alpha")
    assert record.status == "failed" and "worker process could not start" in record.summary.reason
    assert sched.launches[record.path] == scheduler.MAX_LAUNCHES
    assert "no module named torch" in (record.path / st.WORKER_LOG).read_text()


def test_a_starting_scheduler_rides_over_a_probe_of_its_lock(study: Path) -> None:
    import threading

    store = RunStore(study / "runs")
    store.root.mkdir()
    probe = processes.take_lock(store)  # another cnntui asking `held()` at that instant
    assert probe is not None and processes.held(store)
    threading.Timer(0.05, probe.release).start()
    lock = processes.take_lock(store, wait=DEADLINE)
    assert lock is not None  # not mistaken for a scheduler already running
    lock.release()


@pytest.mark.process
def test_status_of_a_missing_or_file_runs_dir_is_one_line(study: Path) -> None:
    empty = cnntui("--status", "--runs-dir", "nowhere", cwd=study)
    assert empty.returncode == 0 and "no runs in nowhere" in empty.stdout, empty.stderr
    (study / "afile").write_text("x")
    bad = cnntui("--status", "--runs-dir", "afile", cwd=study)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "cnntui: runs dir 'afile' is a file, not a directory"
    assert not (study / "nowhere").exists()


@pytest.mark.process
def test_attached_thread_runs_go_on_after_a_hangup_of_their_terminal(study: Path) -> None:
    # Two runs, one job: the second is still waiting when the terminal goes away.
    proc = start("--run", "all", "--set", "epochs=3", cwd=study)
    line(proc, "started on")
    proc.send_signal(signal.SIGHUP)  # the SSH connection is gone
    store = RunStore(study / "runs")
    poll(
        lambda: statuses(store) == {"alpha": "finished", "beta": "finished"},
        DEADLINE,
        "both finished",
    )
    assert proc.wait(60) == 0  # nothing was cancelled
    assert all(r.summary.epochs_done == 3 for r in store.runs())


@pytest.mark.process
def test_a_run_that_ends_between_two_looks_is_followed_to_its_real_end(tmp_path: Path) -> None:
    """A follower read `running`; the worker then wrote `finished` and exited before the
    follower looked at its process. The run is not reported as dead: the next poll reads how
    it really ended (a busy machine made `--run` say FAILED for a finished run)."""
    run = tmp_path / "alpha" / "20261130-000000-abcdef"
    run.mkdir(parents=True)
    worker = hold_lock(run)  # as a worker training it holds its lock
    summary = RunSummary(
        name="alpha", status=RunStatus.RUNNING, pid=worker.pid, epochs=1, batches_per_epoch=4
    )
    st.write_summary(run, summary)
    follow = lifecycle.RunEvents(run)
    assert [type(e).__name__ for e in follow.poll()] == ["Started"]

    look = follow.follower.poll

    def look_then_worker_ends() -> lifecycle.Update:
        update = look()  # reads `running` ...
        st.write_summary(run, replace(summary, status=RunStatus.FINISHED, total_seconds=1.5))
        worker.kill()  # ... then the worker writes how it ended and exits
        worker.wait()
        return update

    follow.follower.poll = look_then_worker_ends
    assert not any(type(e).__name__ == "Failed" for e in follow.poll())
    follow.follower.poll = look
    (ending,) = [e for e in follow.poll() if type(e).__name__ in ("Finished", "Failed")]
    assert type(ending).__name__ == "Finished" and ending.total_seconds == 1.5


def test_status_lists_the_queue_in_the_order_it_runs_with_each_runs_place(
    study: Path, monkeypatch
) -> None:
    # Run ids sort against the queue: the first run queued has the largest id.
    ids = iter(["20260101-000009-cccccc", "20260101-000005-bbbbbb", "20260101-000001-aaaaaa"])
    monkeypatch.setattr(st, "new_run_id", lambda: next(ids))
    store = RunStore(study / "runs")
    exps = {e.name: e for e in experiments(study)}
    for name in ("beta", "alpha", "beta"):
        lifecycle.submit(store, [exps[name]])
    lines = lifecycle.status_table(store).splitlines()
    rows = [line.split() for line in lines[2:-1] if "queued" in line]
    assert [(r[0], r[1]) for r in rows] == [
        ("beta", "20260101-000009-cccccc"),
        ("alpha", "20260101-000005-bbbbbb"),
        ("beta", "20260101-000001-aaaaaa"),
    ]
    assert [" ".join(r[-2:]) for r in rows] == ["queued #1", "queued #2", "queued #3"]
    assert "#1 starts first" in lines[-1]
