"""Images per second: the compute limit, cnntui's engine, and the report's DataLoader loop.

For LeNet at batch 4 and 128 and the LightweightResNet at batch 128 this measures, side by
side in one run and on the same device and thread count:

  (a) compute  forward + backward + SGD step on one pre-made batch, repeated;
  (b) engine   `cnntui.core.engine.train` over one real epoch (shuffled, every batch's loss kept);
  (c) loader   the report's loop: a torchvision-style dataset of PIL images, ToTensor +
               Normalize, a shuffling DataLoader (2 workers, as in the PyTorch tutorial),
               and `loss.item()` after every step.

All three train on the same synthetic images with CIFAR-10's shape (3x32x32 uint8). The
epoch is cut to `train_size` images so a CPU finishes in minutes; the modes alternate
(a, b, c, a, b, c, ...) and the table shows medians, so a neighbour's load hits all three
alike. Targets (issue 5): b/a >= 0.9 at batch 128; b/c >= 2 on a CPU, >= 10 on a GPU.

    .venv/bin/python benchmarks/bench_speed.py            # about 7 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_speed.py --quick    # about 2 minutes, 1 repeat
    .venv/bin/python benchmarks/bench_speed.py --smoke    # a few batches a case, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.nn import functional as F

from cnntui.core import data as datasets
from cnntui.core.config import Experiment
from cnntui.core.devices import choose_threads, resolve_device
from cnntui.core.engine import train
from cnntui.core.events import BatchLosses, Failed, Started
from cnntui.core.models import build


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    batch_size: int
    train_size: int  # images in the (shortened) epoch


# (full run, --quick, --smoke) epoch sizes per case, chosen for a 2-core CPU; a GPU gets 5x
# more (but --smoke, which only checks that every case runs).
CASES = {
    "lenet-4": (Case("lenet", 4, 2000), Case("lenet", 4, 800), Case("lenet", 4, 64)),
    "lenet-128": (Case("lenet", 128, 12_800), Case("lenet", 128, 5120), Case("lenet", 128, 256)),
    "resnet-128": (Case("resnet", 128, 1280), Case("resnet", 128, 768), Case("resnet", 128, 128)),
}


def experiment(case: Case, device: str, threads: int, train_size: int) -> Experiment:
    return Experiment(
        name=f"bench-{case.model}-{case.batch_size}",
        model=case.model,
        dataset="synthetic",
        train_size=train_size,
        test_size=100,  # evaluation is not timed; keep it short
        batch_size=case.batch_size,
        epochs=1,
        lr=0.001,
        momentum=0.9,
        weight_decay=0.01,
        dropout=0.5,
        device=device,
        threads=threads,
    )


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def compute_limit(exp: Experiment, ds: datasets.TensorDataset, dev: torch.device) -> float:
    """(a) images/s of forward + backward + step on one resident, normalised batch."""
    torch.manual_seed(0)
    model = build(exp.model, ds.shape, ds.classes, exp.dropout).to(dev)
    opt = torch.optim.SGD(
        model.parameters(), lr=exp.lr, momentum=exp.momentum, weight_decay=exp.weight_decay
    )
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    x = ((ds.train_x[: exp.batch_size].float() / 255 - mean) / std).to(dev)
    y = ds.train_y[: exp.batch_size].to(dev)
    steps = exp.train_size // exp.batch_size

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(min(10, steps)):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * exp.batch_size / (time.perf_counter() - t0)


def engine_epoch(exp: Experiment) -> float:
    """(b) images/s of cnntui's engine from Started to the epoch's last batch loss."""
    t0 = None
    t1 = None
    for event in train(exp):
        if isinstance(event, Started):
            t0 = time.perf_counter()
        elif isinstance(event, BatchLosses):
            t1 = time.perf_counter()  # the last chunk comes before the (untimed) evaluation
        elif isinstance(event, Failed):
            raise RuntimeError(event.reason)
    assert t0 is not None and t1 is not None
    return exp.train_size / (t1 - t0)


class PilImages(torch.utils.data.Dataset):
    """torchvision's CIFAR10 in miniature: one PIL image per item, then the transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()  # HWC, as CIFAR10.data
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def loader_epoch(
    exp: Experiment, ds: datasets.TensorDataset, dev: torch.device, workers: int
) -> float:
    """(c) images/s of the report's loop: DataLoader + ToTensor/Normalize, loss.item() a step."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(ds.mean, ds.std)])
    data = PilImages(ds.train_x[: exp.train_size], ds.train_y[: exp.train_size], transform)
    loader = torch.utils.data.DataLoader(
        data, batch_size=exp.batch_size, shuffle=True, num_workers=workers
    )
    torch.manual_seed(0)
    model = build(exp.model, ds.shape, ds.classes, exp.dropout).to(dev)
    opt = torch.optim.SGD(
        model.parameters(), lr=exp.lr, momentum=exp.momentum, weight_decay=exp.weight_decay
    )
    losses = []
    t0 = time.perf_counter()
    for inputs, labels in loader:
        inputs, labels = inputs.to(dev), labels.to(dev)
        opt.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - t0
    assert len(losses) == len(loader)
    return exp.train_size / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter epochs, one repeat")
    p.add_argument("--smoke", action="store_true", help="a few batches a case, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="rounds of (a, b, c); default 3")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = the engine's choice")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (c); default 2")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--scale", type=float, default=None, help="epoch size factor (GPU: 5)")
    args = p.parse_args(argv)

    dev = resolve_device(args.device)
    repeats = args.repeats or (1 if args.quick or args.smoke else 3)
    scale = args.scale or (5.0 if dev.type == "cuda" and not args.smoke else 1.0)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"device: {dev}", end="")
    if dev.type == "cuda":
        print(f" ({torch.cuda.get_device_name(dev)})", end="")
    print(
        f"; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"torch {torch.__version__}; repeats {repeats}; DataLoader workers {args.workers}"
    )
    header = f"{'case':<11} {'imgs':>6} {'thr':>3} {'(a) compute':>12} {'(b) engine':>11}"
    header += f" {'(c) loader':>11} {'b/a':>5} {'b/c':>5}"
    print(header)
    print("-" * len(header))
    for key in args.cases.split(","):
        case = CASES[key][2 if args.smoke else 1 if args.quick else 0]
        size = int(case.train_size * scale) // case.batch_size * case.batch_size
        exp = experiment(case, args.device, args.threads, size)
        threads = choose_threads(exp.batch_size, exp.threads)
        torch.set_num_threads(threads)  # (a) and (c) run with the thread count (b) chooses
        ds = datasets.load("synthetic", exp.data_dir, True, size, exp.test_size)
        a, b, c = [], [], []
        for _ in range(repeats):
            a.append(compute_limit(exp, ds, dev))
            b.append(engine_epoch(exp))
            c.append(loader_epoch(exp, ds, dev, args.workers))
        ma, mb, mc = (statistics.median(v) for v in (a, b, c))
        print(
            f"{key:<11} {size:>6} {threads:>3} {ma:>12,.0f} {mb:>11,.0f} {mc:>11,.0f}"
            f" {mb / ma:>5.2f} {mb / mc:>5.2f}",
            flush=True,
        )
    print("images/s, medians; (b) times Started to the epoch's last batch loss (no eval).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
