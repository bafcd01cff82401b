"""Speed switches keep results correct: each CPU-runnable switch against the plain path.

The plain path itself is checked against a textbook training loop (pytorch/examples style),
so an "optimisation" of the engine that changes what it computes fails here. Tolerances:
- plain vs the textbook loop: 1e-5 relative. Both compute the same float32 maths; they only
  normalise a batch with a differently ordered formula, a last-bit difference.
- channels_last vs plain: 1e-4. oneDNN runs other convolution kernels for NHWC, whose sums
  round differently; over 16 SGD steps that stays near 1e-6 (measured), far below any
  visible change of a loss curve, while a real error (a transposed image) moves the loss by
  ~1e-2 at once.
- bf16 autocast vs plain: 0.05 absolute per batch (losses ~2.3). bfloat16 keeps 8 bits of
  mantissa (~0.4 % per operation), so losses drift a little; a wrong computation (e.g.
  dropped normalisation, wrong labels) moves them far more.
- torch.compile vs plain: 1e-4, as channels_last (inductor fuses and reorders sums).
"""

from __future__ import annotations

import os
import threading

import pytest
import torch
from torch.nn import functional as F

from cnntui.core import data as datasets
from cnntui.core import devices
from cnntui.core.devices import choose_threads
from cnntui.core.engine import augment_batch
from cnntui.core.events import BatchLosses, EpochEnd, Failed, Started
from cnntui.core.models import build, use_generator
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, train


def losses_of(exp) -> list[float]:
    events = list(train(exp))
    failed = [e for e in events if isinstance(e, Failed)]
    assert not failed, failed
    return [v for e in events if isinstance(e, BatchLosses) for v in e.losses]


def textbook_losses(exp) -> list[float]:
    """What the engine must compute, written as the plain loop of pytorch/examples."""
    ds = datasets.load(exp.dataset, exp.data_dir, True, exp.train_size, exp.test_size)
    ds = ds.subset(exp.train_size, exp.test_size)
    torch.manual_seed(exp.seed)
    model = build(exp.model, ds.shape, ds.classes, exp.dropout)
    use_generator(model, torch.Generator().manual_seed(exp.seed))  # the run's own dropout RNG
    opt = torch.optim.SGD(
        model.parameters(), lr=exp.lr, momentum=exp.momentum, weight_decay=exp.weight_decay
    )
    shuffle = torch.Generator().manual_seed(exp.seed)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    losses = []
    for _ in range(exp.epochs):
        order = torch.randperm(len(ds.train_y), generator=shuffle)
        for start in range(0, len(order), exp.batch_size):
            idx = order[start : start + exp.batch_size]
            x = (ds.train_x[idx].float() / 255 - mean) / std
            loss = F.cross_entropy(model(x), ds.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses  # (the engine also evaluates each epoch: no randomness, no weight change)


def assert_close(a: list[float], b: list[float], rel: float = 0.0, abs: float = 0.0) -> None:
    assert len(a) == len(b)
    assert a == pytest.approx(b, rel=rel, abs=abs)


# --- the plain path --------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"batch_size": 4, "train_size": 64, "dropout": 0.5, "weight_decay": 0.01},
        {"batch_size": 100, "train_size": 250},  # a short last batch
    ],
    ids=["batch32", "batch4-dropout-l2", "short-last-batch"],
)
def test_plain_path_is_the_textbook_training_loop(overrides) -> None:
    exp = tiny_experiment(threads=1, **overrides)
    torch.set_num_threads(1)  # the textbook loop runs with the engine's thread count
    ours = losses_of(exp)
    assert len(ours) == exp.epochs * -(-exp.train_size // exp.batch_size)  # no batch lost
    assert_close(ours, textbook_losses(exp), rel=1e-5)


def test_resnet_plain_path_is_the_textbook_training_loop() -> None:
    exp = tiny_experiment(
        model="resnet", train_size=48, test_size=16, batch_size=16, epochs=1, threads=1
    )
    torch.set_num_threads(1)
    assert_close(losses_of(exp), textbook_losses(exp), rel=1e-5)


# --- switches the CPU can run ----------------------------------------------------------


def test_channels_last_gives_the_plain_losses_and_really_is_nhwc(tmp_path) -> None:
    plain = losses_of(tiny_experiment(threads=1))
    exp = tiny_experiment(threads=1, channels_last=True)
    run = RunStore(tmp_path).create(exp)
    events = list(train(exp, None, run))
    nhwc = [v for e in events if isinstance(e, BatchLosses) for v in e.losses]
    assert_close(nhwc, plain, rel=1e-4, abs=1e-4)
    weights = torch.load(run.path / "weights.pt", weights_only=True)
    assert weights["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not weights["conv1.weight"].is_contiguous()


def test_bf16_autocast_on_cpu_stays_close_to_float32() -> None:
    # LeNet only: on a CPU without native bfloat16 (AVX512-BF16/AMX) the ResNet's bf16
    # convolutions are emulated and took ~100 s for a handful of steps here.
    plain = losses_of(tiny_experiment(epochs=1, threads=1))
    bf16 = losses_of(tiny_experiment(epochs=1, threads=1, amp="bf16"))
    assert bf16 != plain  # autocast really ran in bfloat16
    assert_close(bf16, plain, abs=0.05)


def _compile_works() -> str | None:
    """None if torch.compile trains on this CPU within a minute, else why not."""
    if os.environ.get("CNNTUI_TEST_COMPILE") != "1":
        return (
            "torch.compile on a CPU takes ~1.5 min to build its C++ kernels (passes here); "
            "set CNNTUI_TEST_COMPILE=1 to run"
        )
    return None


@pytest.mark.slow
@pytest.mark.skipif(_compile_works() is not None, reason=str(_compile_works()))
def test_compile_gives_the_plain_losses() -> None:
    plain = losses_of(tiny_experiment(threads=1, epochs=1))
    compiled = losses_of(tiny_experiment(threads=1, epochs=1, compile="default"))
    assert_close(compiled, plain, rel=1e-4, abs=1e-4)


# --- augmentation ----------------------------------------------------------------------


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8).float()
    out = augment_batch(x, pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for n in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if torch.equal(
                out[n],
                (lambda c: c.flip(-1) if flip else c)(padded[n, :, dy : dy + 8, dx : dx + 8]),
            )
        ]
        assert matches, f"image {n} is not a shifted (and maybe mirrored) copy"
        flips += any(f for _, _, f in matches) and not any(not f for _, _, f in matches)
    assert 0 < flips < len(x)  # both mirrored and unmirrored images occur


def test_augmented_training_is_seeded_and_differs_from_plain() -> None:
    exp = tiny_experiment(threads=1, augment=True)
    first = losses_of(exp)
    assert first == losses_of(exp)  # same seed, same crops and flips, same curve
    assert first != losses_of(tiny_experiment(threads=1))
    assert first != losses_of(tiny_experiment(threads=1, augment=True, seed=1))


# --- CPU threads -----------------------------------------------------------------------


def test_auto_threads_follow_batch_size_and_sharing(monkeypatch, request) -> None:
    monkeypatch.setattr(devices, "cpu_cores", lambda: 8)
    devices.reserve_cores(0)  # as in the CLI (and as at import, where the test leaves it)
    request.addfinalizer(lambda: devices.reserve_cores(0))
    assert choose_threads(4) == 1  # batch 4: splitting a tiny step only adds spinning
    assert choose_threads(32) == 1
    assert choose_threads(128) == 8  # headless, a lone run takes every core
    assert choose_threads(128, concurrent=2) == 4
    assert choose_threads(128, concurrent=16) == 1
    devices.reserve_cores(1)  # the TUI keeps one for the screen
    assert choose_threads(128) == 7
    assert choose_threads(128, concurrent=2) == 3
    monkeypatch.setattr(devices, "cpu_cores", lambda: 2)
    assert choose_threads(128) == 1
    assert choose_threads(4, requested=3) == 3  # an explicit setting wins


def _threads_seen_during(exp) -> tuple[int, str]:
    for event in train(exp):
        if isinstance(event, Started):
            device = event.device
        if isinstance(event, EpochEnd):
            return torch.get_num_threads(), device  # the generator runs in this thread
    raise AssertionError("no epoch ended")


def test_threads_setting_is_applied_and_restored() -> None:
    torch.set_num_threads(2)
    seen, device = _threads_seen_during(tiny_experiment(threads=3, epochs=1))
    assert seen == 3 and device == "cpu (3 threads)"
    assert torch.get_num_threads() == 2  # restored once the run is over
    seen, device = _threads_seen_during(tiny_experiment(batch_size=4, train_size=32, epochs=1))
    assert seen == 1 and device == "cpu (1 thread)"
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(
    "OpenMP" not in torch.__config__.parallel_info().split("parallel backend:")[-1],
    reason="per-thread intra-op thread counts need torch's OpenMP backend",
)
def test_runs_in_sibling_threads_keep_their_own_thread_counts() -> None:
    seen: dict[int, int] = {}
    barrier = threading.Barrier(2, timeout=60)

    def go(n: int) -> None:
        for event in train(tiny_experiment(threads=n, epochs=1)):
            if isinstance(event, Started):
                barrier.wait()  # both runs have set their count before either checks
                seen[n] = torch.get_num_threads()

    threads = [threading.Thread(target=go, args=(n,)) for n in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {1: 1, 3: 3}
