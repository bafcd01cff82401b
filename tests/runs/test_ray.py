"""Runs of a study on a Ray cluster (cnntui.runs.ray_executor), as a user meets them: the same
run store files as a local run, live batch losses, cancel, a worker that dies mid-run, a GPU the
cluster does not have. One local Ray (2 CPUs, no GPU) serves the whole module; every wait
polls a condition with a deadline."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cnntui.core.config import ConfigError, parse, parse_override
from cnntui.runs import lifecycle
from cnntui.runs import ray_executor as rayexec
from cnntui.runs import store as st
from cnntui.runs.records import QueueRecord
from cnntui.runs.store import RunStore
from tests.helpers import cnntui, tiny_experiment
from tests.waiting import poll

pytestmark = pytest.mark.ray  # a local Ray for the whole module

DEADLINE = 240.0  # a busy 2-core machine starts Ray workers (and torch in them) slowly
NEEDS_RAY = pytest.mark.skipif(
    rayexec.ray_missing() is not None,
    reason='Ray is not installed (pip install "cnntui[ray]"; make test installs it)',
)
RUN_FILES = {
    "config.toml",
    "summary.json",
    "history.npz",
    "checkpoint.pt",
    "weights.pt",
    "live.f64",
}  # and best.pt only with a validation split: no epoch is chosen on the test set


@pytest.fixture(scope="module")
def cluster():
    """The address of a local Ray with 2 CPUs and no GPU, started once for the module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


class Drain:
    """A Ray scheduler draining the store's queue in a thread of the test."""

    def __init__(self, store: RunStore, **kwargs) -> None:
        self.sched = rayexec.RayScheduler(store, **kwargs)
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(rayexec.run(store, self.sched)), daemon=True
        )
        self.thread.start()

    def join(self) -> None:
        poll(lambda: not self.thread.is_alive(), DEADLINE, "the Ray scheduler to end")
        assert self.result == [0]


def local_history(exp, tmp: Path):
    """The history of the same experiment trained here, in-process, without Ray."""
    from tests.helpers import train

    store = RunStore(tmp)
    run = store.create(exp)
    for _ in train(exp, None, run):
        pass
    return RunStore.read(run.path).history()


def assert_same_history(a, b) -> None:
    assert a.epochs_done == b.epochs_done
    np.testing.assert_array_equal(np.array(a.batch_losses), np.array(b.batch_losses))
    np.testing.assert_array_equal(np.array(a.test_acc), np.array(b.test_acc))
    np.testing.assert_array_equal(np.array(a.epoch_losses), np.array(b.epoch_losses))


# --- without a cluster ----------------------------------------------------------------------


@pytest.mark.process
def test_cluster_without_ray_is_one_line_exit_2(tiny_toml: Path) -> None:
    """With Ray hidden from the interpreter, --cluster says what to install."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from cnntui.cli import main\n"
        "sys.exit(main(['--run', 'all', '--cluster', 'ray']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tiny_toml.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'pip install "cnntui[ray]"' in lines[0] and "Ray is not installed" in lines[0]
    assert not (tiny_toml.parent / "runs").exists()  # nothing was queued


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("cluster=ray:/x", "unknown cluster"),
        ("cluster=my cluster", "unknown cluster"),
        ("gpu_share=0", "a fraction of one GPU"),
        ("gpu_share=1.5", "a whole number of GPUs"),
        ("retries=-1", "must be >= 0"),
    ],
)
def test_cluster_settings_are_checked(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_override(item)


def test_cluster_settings_accept() -> None:
    assert parse_override("cluster=ray://head.lab:10001") == ("cluster", "ray://head.lab:10001")
    assert parse_override("cluster=10.0.0.5:6379") == ("cluster", "10.0.0.5:6379")
    assert parse_override("cluster=auto") == ("cluster", "auto")
    assert parse_override("gpu_share=0.25") == ("gpu_share", 0.25)
    assert parse_override("gpu_share=2") == ("gpu_share", 2.0)


def test_cluster_in_defaults_and_its_errors_name_the_line() -> None:
    file = parse('[defaults]\ncluster = "head:6379"\n\n[[experiment]]\nname = "a"\n')
    assert file.experiments[0].cluster == "head:6379"
    with pytest.raises(ConfigError, match=r"^experiments.toml:3:1: unknown cluster 'ray:/x'"):
        parse('[defaults]\nepochs = 1\ncluster = "ray:/x"\n')
    assert lifecycle.queue_record(file.experiments[0]).executor == "ray"


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    res = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {"Alive": alive, "Resources": res}


def test_request_places_or_refuses_with_the_reason() -> None:
    q = QueueRecord(executor="ray", device="auto", gpu_share=0.25, num_cpus=1, cluster="ray")
    assert rayexec.request(q, [node(2)]) == ({"num_cpus": 1, "num_gpus": 0.0}, "cpu")
    assert rayexec.request(q, [node(2), node(8, 1)]) == ({"num_cpus": 1, "num_gpus": 0.25}, "cuda")
    with pytest.raises(rayexec.ClusterError, match=r"asks for 1 GPU but the Ray cluster has none"):
        rayexec.request(
            dataclasses.replace(q, device="cuda", gpu_share=1.0), [node(2), node(8, 1, False)]
        )
    with pytest.raises(rayexec.ClusterError, match=r"gpu_share = 2 .* no node has that"):
        rayexec.request(dataclasses.replace(q, gpu_share=2.0), [node(8, 1), node(8, 1)])
    with pytest.raises(rayexec.ClusterError, match=r"no node of the Ray cluster has 4 CPU"):
        rayexec.request(dataclasses.replace(q, num_cpus=4), [node(2)])


# --- on a local Ray -------------------------------------------------------------------------


@pytest.mark.process
@NEEDS_RAY
def test_study_on_ray_has_the_files_of_a_local_run(cluster: str, tiny_toml: Path) -> None:
    """`--run all --cluster ADDR` trains every run on Ray; the store then holds what a local
    run leaves (status finished, history equal to a local run's, checkpoints), so --status
    and --export work as for local runs (--resume: see the cancel test)."""
    cwd = tiny_toml.parent
    result = cnntui("--run", "all", "--cluster", cluster, cwd=cwd, timeout=DEADLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on the Ray cluster" in result.stdout
    assert result.stdout.count("finished in") == 2
    store = RunStore(cwd / "runs")
    records = {r.name: r for r in store.runs()}
    assert set(records) == {"alpha", "beta"}
    for name, record in records.items():
        assert record.status == "finished", record.summary
        assert {p.name for p in record.path.iterdir()} >= RUN_FILES
        assert record.summary.queue["executor"] == "ray"
        assert record.summary.node  # which node trained it
        assert st.lock_holder(record.path) is None and not (record.path / "heartbeat").exists()
        exp = dataclasses.replace(
            record.experiment(), cluster="", executor="auto", name=name, group="g"
        )
        local = local_history(exp, cwd / "local")
        ray_history = record.history()
        assert_same_history(ray_history, local)
        live = np.fromfile(record.live, dtype="<f8")
        np.testing.assert_array_equal(live, np.array(local.batch_losses))

    status = cnntui("--status", cwd=cwd)
    assert status.returncode == 0 and status.stdout.count("finished") == 2
    assert status.stdout.count(f"{socket.gethostname()[:12]}:cpu") == 2  # node:device

    exported = cnntui("--export", cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    assert (cwd / "exports" / "results.csv").is_file()


@NEEDS_RAY
def test_live_losses_then_cancel_keeps_history(cluster: str, tmp_path: Path) -> None:
    """While a Ray run trains, its batch losses land in live.f64 (not only at the end); a
    cancel from any shell stops it on its node, which saves and sends its history back."""
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="long", cluster=cluster, epochs=500, train_size=1024, batch_size=8)
    [record] = lifecycle.submit(store, [exp])
    drain = Drain(store)
    sizes = []

    def growing() -> bool:
        r = RunStore.read(record.path)
        if r is None or r.status != "running" or not r.live.exists():
            return False
        sizes.append(r.live.stat().st_size)
        return len({s for s in sizes if s > 0}) >= 3 and (r.summary.epochs_done or 0) >= 1

    poll(growing, DEADLINE, "live.f64 to grow while the run trains")
    lines = lifecycle.cancel(store, record.run_id)
    assert "cancelling" in lines[0]
    done = poll(
        lambda: (r := RunStore.read(record.path)) and r.status == "cancelled" and r,
        DEADLINE,
        "the cancelled run to save",
    )
    drain.join()
    assert done.summary.reason == "cancelled by the user"  # it stopped by itself, saving
    history = done.history()
    assert 1 <= history.epochs_done < 500
    assert len(history.batch_losses) >= history.epochs_done * done.summary.batches_per_epoch
    live = np.fromfile(done.live, dtype="<f8")
    np.testing.assert_array_equal(live, np.array(history.batch_losses))
    assert (done.path / "checkpoint.pt").is_file()

    # Resumed (as R or --resume do), it continues on Ray from its last epoch's checkpoint.
    epochs = history.epochs_done + 1
    run, checkpoint = store.resume(done, {"epochs": epochs})
    assert checkpoint is not None
    lifecycle.requeue([run])
    Drain(store).join()
    again = RunStore.read(record.path)
    assert again.status == "finished", again.summary
    per_epoch = again.summary.batches_per_epoch
    resumed = again.history()
    assert resumed.epochs_done == epochs and len(resumed.batch_losses) == epochs * per_epoch
    kept = history.epochs_done * per_epoch  # the cancelled partial epoch is trained again
    assert resumed.batch_losses[:kept] == history.batch_losses[:kept]
    np.testing.assert_array_equal(
        np.fromfile(again.live, dtype="<f8"), np.array(resumed.batch_losses)
    )


@NEEDS_RAY
def test_worker_death_retries_from_the_last_checkpoint(cluster: str, tmp_path: Path) -> None:
    """The worker training a run dies in epoch 2 (it kills itself, as a lost node would): the
    run is retried from its epoch-1 checkpoint, and its history equals an uninterrupted local
    run's: no batch lost, none twice."""
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="fragile", cluster=cluster, epochs=3)
    [record] = lifecycle.submit(store, [exp])
    drain = Drain(store, crash_in_epoch=1)
    drain.join()
    done = RunStore.read(record.path)
    assert done.status == "finished", done.summary
    assert done.summary.queue["attempt"] == 1
    assert "WorkerCrashedError" in done.summary.queue["retry_reason"]
    assert "retry 1 of 1" not in done.summary.reason  # finished: no reason left
    local = local_history(dataclasses.replace(exp, cluster=""), tmp_path / "local")
    assert_same_history(done.history(), local)
    np.testing.assert_array_equal(np.fromfile(done.live, dtype="<f8"), np.array(local.batch_losses))


@NEEDS_RAY
def test_a_run_dies_again_without_retries_left(cluster: str, tmp_path: Path) -> None:
    """With retries = 0 a lost run ends interrupted (resumable), saying why."""
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="once", cluster=cluster, epochs=3, retries=0)
    [record] = lifecycle.submit(store, [exp])
    Drain(store, crash_in_epoch=1).join()
    done = RunStore.read(record.path)
    assert done.status == "interrupted"
    assert "lost the run (WorkerCrashedError" in done.summary.reason
    assert "continues it from epoch 1" in done.summary.reason
    assert done.history().epochs_done == 1 and done.checkpoint.is_file()


@NEEDS_RAY
def test_gpu_the_cluster_lacks_is_refused(cluster: str, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(name="gpu", cluster=cluster, device="cuda", gpu_share=0.5)
    [record] = lifecycle.submit(store, [exp])
    Drain(store).join()
    done = RunStore.read(record.path)
    assert done.status == "failed"
    assert "device 'cuda' asks for 0.5 GPU but the Ray cluster has none" in done.summary.reason
    assert not (done.path / "history.npz").exists()  # never started


@NEEDS_RAY
def test_node_without_the_data_says_so(cluster: str, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    not_a_dir = tmp_path / "data-file"
    not_a_dir.write_text("no datasets here")
    exp = tiny_experiment(
        name="nodata", cluster=cluster, dataset="cifar10", data_dir=str(not_a_dir)
    )
    [record] = lifecycle.submit(store, [exp])
    Drain(store).join()
    done = RunStore.read(record.path)
    assert done.status == "failed"
    reason = done.summary.reason
    assert reason.startswith("on Ray node ") and str(not_a_dir) in reason
    assert "\n" not in reason


@pytest.mark.process
@NEEDS_RAY
def test_unreachable_cluster_fails_the_runs_in_one_line(tiny_toml: Path) -> None:
    cwd = tiny_toml.parent
    result = cnntui("--run", "all", "--cluster", "127.0.0.1:1", cwd=cwd, timeout=DEADLINE)
    assert result.returncode == 1, result.stdout + result.stderr
    for name in ("alpha", "beta"):
        assert f"[{name}] FAILED: cannot reach the Ray cluster at 127.0.0.1:1" in result.stdout
    for record in RunStore(cwd / "runs").runs():
        assert record.status == "failed" and "ray start --head" in record.summary.reason


SEARCH_ON_RAY = """\
[defaults]
dataset = "synthetic"
train_size = 256
test_size = 64
val_size = 64
batch_size = 32
epochs = 2
device = "cpu"

[[search]]
name = "S"
group = "search"
trials = 3
parallel = 2
sampler = "random"
pruner = "none"
lr = { log = [0.001, 0.1] }
"""


@pytest.mark.process
@pytest.mark.slow
@NEEDS_RAY
def test_a_search_through_cluster_trains_its_trials_on_ray(cluster: str, tmp_path: Path) -> None:
    """`--run S --cluster ADDR`: the store's scheduler owns the study as for a local search,
    and each trial is an ordinary run that the Ray scheduler sends to the cluster."""
    from cnntui.runs import searches

    (tmp_path / "experiments.toml").write_text(SEARCH_ON_RAY)
    result = cnntui("--run", "S", "--cluster", cluster, cwd=tmp_path, timeout=DEADLINE)
    assert result.returncode == 0, result.stdout + result.stderr
    store = RunStore(tmp_path / "runs")
    trials = searches.trial_runs(store, "S")
    assert sorted(r.name for r in trials) == ["S.t0", "S.t1", "S.t2"]
    for record in trials:
        assert record.status == "finished", record.summary.reason
        assert record.queue is not None and record.queue.executor == "ray"
        assert record.summary.node  # a Ray node trained it
    again = cnntui("--run", "S", "--cluster", cluster, cwd=tmp_path, timeout=DEADLINE)
    assert again.returncode == 0 and len(searches.trial_runs(store, "S")) == 3
