"""Learning-rate schedules, one rate per epoch, as pure functions of the settings.

The engine sets the optimizer's rate at the start of each epoch from `epoch_lr`, so a
resumed run continues its schedule from the epoch it stopped at, with nothing else to
restore. No torch here: the formulas are tested, and documented in the README, as written.
"""

from __future__ import annotations

import math

from .config import Settings

WARMUP_START = 0.1  # warm-up starts at lr/10
ONECYCLE_START = 1 / 25  # onecycle starts at lr/25 ...
ONECYCLE_PEAK = 0.3  # ... reaches lr 30% of the way through ...
ONECYCLE_END = 1e-4  # ... and ends at lr/10^4


def scheduled(s: Settings) -> bool:
    """Whether the rate ever differs from `lr` (the constant schedule never touches it)."""
    return s.lr_schedule != "constant" or s.warmup_epochs > 0


def epoch_lr(s: Settings, epoch: int) -> float:
    """The learning rate of 0-based `epoch` of a run with `s.epochs` epochs."""
    lr = s.lr
    warm = s.warmup_epochs
    if epoch < warm:
        return lr * (WARMUP_START + (1 - WARMUP_START) * epoch / warm)
    t = epoch - warm  # the epoch counted from the schedule's start
    total = max(1, s.epochs - warm)  # the epochs the schedule spans
    match s.lr_schedule:
        case "step":
            return lr * s.lr_gamma ** (t // s.lr_step_epochs)
        case "cosine":
            return lr * (1 + math.cos(math.pi * t / total)) / 2
        case "onecycle":
            peak = round(ONECYCLE_PEAK * (total - 1))
            if t <= peak:
                return lr if peak == 0 else lr * (ONECYCLE_START + (1 - ONECYCLE_START) * t / peak)
            low = lr * ONECYCLE_END
            span = total - 1 - peak
            return low + (lr - low) * (1 + math.cos(math.pi * min(t - peak, span) / span)) / 2
    return lr
