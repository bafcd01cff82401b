"""Several seeds as one result: mean, standard deviation and n, and whether an experiment
differs from its group's reference by more than the seeds' noise.

- An experiment's runs count once per seed: the latest *finished* run of each seed, among
  the runs trained with the settings of its newest finished run (a run with other learning
  settings is another configuration, not another seed of this one).
- The standard deviation is the sample one (ddof = 1); with one seed there is none.
- "Beyond noise?" is Welch's 95 % confidence interval of the difference of mean final test
  accuracy (experiment − reference), with the Student-t quantile at Welch–Satterthwaite
  degrees of freedom. When it contains 0 the difference is *within noise*.
- A group that compares more than one experiment with its reference tests them together,
  by Holm's step-down procedure over the K comparisons that have an interval: the one
  with the smallest Welch p-value is tested at 5 % / K, the next at 5 % / (K − 1), ...,
  and from the first that is within noise on, the rest are too. Each interval is shown at
  the level its comparison was tested at (1 − 5 % / (K − rank + 1); from the first within
  noise on, that one's level), so an interval contains 0 exactly when the verdict is
  *within noise*; the chance of any false *beyond noise* in the group stays at most 5 %.

The t quantile is computed here (bisection on the t distribution's CDF, written with the
regularized incomplete beta function by its continued fraction), so no SciPy is needed.
No torch, no textual: the CLI, the TUI and the exports all use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..runs.records import RunStatus

LEVEL = 0.95  # the confidence of every interval cnntui shows
WITHIN = "within noise"
BEYOND = "beyond noise"
ONE_SEED = "1 seed: no error bar"
REFERENCE = "reference"


# --- the Student t distribution ----------------------------------------------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 / _nonzero(1.0 - qab * x / qap)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for aa in (even, odd):
            d = 1.0 / _nonzero(1.0 + aa * d)
            c = _nonzero(1.0 + aa / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _nonzero(v: float) -> float:
    """`v`, or a tiny number where it is (nearly) 0, so that Lentz's method never divides by 0."""
    return v if abs(v) > 1e-300 else 1e-300


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on `t_cdf` to 1e-12."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# --- mean ± std, and the comparison with a reference ------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """Values over seeds: how many, their mean and sample standard deviation (NaN: n < 2)."""

    n: int
    mean: float
    std: float


def aggregate(values: Iterable[Any]) -> Aggregate:
    """Mean and sample standard deviation (ddof = 1) of the finite numbers in `values`."""
    xs = [float(v) for v in values if _number(v)]
    n = len(xs)
    if n == 0:
        return Aggregate(0, math.nan, math.nan)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return Aggregate(n, mean, std)


@dataclass(frozen=True)
class Comparison:
    """An experiment against its group's reference: difference of means (experiment −
    reference), its Welch confidence interval, and the verdict a table shows."""

    diff: float
    low: float
    high: float
    df: float  # Welch–Satterthwaite degrees of freedom (NaN: no interval)
    verdict: str  # WITHIN, BEYOND, ONE_SEED or REFERENCE
    p: float = math.nan  # Welch's two-sided p-value, unadjusted (NaN: no interval)
    level: float = LEVEL  # the confidence of [low, high]
    holm: int = 1  # the comparisons Holm's procedure tested it among (1: not adjusted)


def welch(reference: Sequence[float], other: Sequence[float], level: float = LEVEL) -> Comparison:
    """Welch's interval for mean(other) − mean(reference). With fewer than 2 values on
    either side there is no interval (verdict ONE_SEED)."""
    a, b = aggregate(reference), aggregate(other)
    diff = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, ONE_SEED)
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed gave the same number on both sides: no spread to speak of
        outcome, p = (WITHIN, 1.0) if diff == 0 else (BEYOND, 0.0)
        return Comparison(diff, diff, diff, math.inf, outcome, p, level)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    low, high = diff - half, diff + half
    p = 2.0 * t_cdf(-abs(diff) / se, df)
    return Comparison(diff, low, high, df, WITHIN if low <= 0.0 <= high else BEYOND, p, level)


def compare_group(
    reference: Sequence[float], others: Sequence[Sequence[float]], level: float = LEVEL
) -> list[Comparison]:
    """Each of `others` against `reference` (Welch), Holm-adjusted when more than one of
    them has an interval (see the module's docstring); in the order of `others`."""
    plain = [welch(reference, other, level) for other in others]
    tested = sorted(
        (i for i, c in enumerate(plain) if math.isfinite(c.p)), key=lambda i: plain[i].p
    )
    k = len(tested)
    if k < 2:
        return plain
    out = list(plain)
    alpha, rejecting = 1.0 - level, True
    for rank, i in enumerate(tested):
        if rejecting:
            alpha_here = (1.0 - level) / (k - rank)
            rejecting = plain[i].p <= alpha_here
            alpha = alpha_here
        c = welch(reference, others[i], 1.0 - alpha)
        verdict = BEYOND if rejecting else WITHIN
        out[i] = dataclasses.replace(c, verdict=verdict, p=plain[i].p, holm=k)
    return out


def _counted(values: Sequence[Any]) -> bool:
    return aggregate(values).n > 0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def reference_of(members: Sequence[Any]) -> Any:
    """The group's reference: the member marked `reference = true`, else the first."""
    return next((m for m in members if getattr(m, "reference", False)), members[0])


# --- which runs count --------------------------------------------------------------------


def seed_runs(records: Sequence[Any], key: Callable[[Any], Any]) -> list[Any]:
    """The runs of one experiment that its aggregates count, by seed: the latest finished
    run of each seed among those whose `key` (the learning settings) is the newest
    finished run's. `records` oldest first, as RunStore.runs gives them; each has `.status`
    and `.seed`."""
    finished = [r for r in records if r.status == RunStatus.FINISHED]
    if not finished:
        return []
    wanted = key(finished[-1])
    latest: dict[Any, Any] = {}
    for r in finished:
        if key(r) == wanted:
            latest.pop(r.seed, None)
            latest[r.seed] = r  # newest last, and in the order the seeds last finished
    return sorted(latest.values(), key=lambda r: (r.seed is None, r.seed or 0))


# --- how it reads ----------------------------------------------------------------------


def pct_mean_std(agg: Aggregate) -> str:
    """`52.10% ± 1.23 (n=3)`; one seed: `52.10% (n=1)`; none: `-`."""
    if agg.n == 0:
        return "-"
    if agg.n == 1:
        return f"{100 * agg.mean:.2f}% (n=1)"
    return f"{100 * agg.mean:.2f}% ± {100 * agg.std:.2f} (n={agg.n})"


def pp_interval(c: Comparison) -> str:
    """`+1.20 pp [-0.40, +2.80]`, the difference and its interval in percentage points."""
    if c.verdict == REFERENCE:
        return "–"
    if not math.isfinite(c.diff):
        return "-"
    if not math.isfinite(c.low):
        return f"{100 * c.diff:+.2f} pp"
    return f"{100 * c.diff:+.2f} pp [{100 * c.low:+.2f}, {100 * c.high:+.2f}]"


# --- a study from the run store's summaries ------------------------------------------------


@dataclass(frozen=True)
class StudyRow:
    """One experiment of a study: its final test accuracy over seeds, and the comparison."""

    name: str
    group: str
    seeds: tuple[Any, ...]  # the seeds counted
    accuracy: Aggregate
    comparison: Comparison | None  # None: its group's reference has no finished run


def study(experiments: Sequence[Any], runs_of: Callable[[str], Sequence[Any]]) -> list[StudyRow]:
    """Mean ± std of final test accuracy per experiment (from each counted run's summary)
    and each one's comparison with its group's reference. `runs_of(name)` gives the
    experiment's runs oldest first (RunStore.runs)."""
    finals: dict[str, list[float]] = {}
    seeds: dict[str, tuple[Any, ...]] = {}
    for exp in experiments:
        counted = seed_runs(runs_of(exp.name), key=lambda r: r.settings_key)
        finals[exp.name] = [r.summary.final_test_acc for r in counted]
        seeds[exp.name] = tuple(r.seed for r in counted)
    groups: dict[str, list[Any]] = {}
    for exp in experiments:
        groups.setdefault(exp.group, []).append(exp)
    comparisons: dict[str, Comparison | None] = {}
    for members in groups.values():
        ref = reference_of(members)
        compared = [
            m
            for m in members
            if m is not ref and _counted(finals[m.name]) and _counted(finals[ref.name])
        ]
        found = compare_group(finals[ref.name], [finals[m.name] for m in compared])
        comparisons.update(zip((m.name for m in compared), found, strict=True))
        comparisons[ref.name] = Comparison(math.nan, math.nan, math.nan, math.nan, REFERENCE)
    return [
        StudyRow(e.name, e.group, seeds[e.name], aggregate(finals[e.name]), comparisons.get(e.name))
        for e in experiments
    ]


def verdict(row: StudyRow) -> str:
    """What a table says of the row: reference, within / beyond noise, 1 seed: no error bar."""
    if row.accuracy.n == 0:
        return "no finished run"
    if row.comparison is None:
        return "-"
    if row.comparison.verdict == REFERENCE:
        return REFERENCE
    if row.accuracy.n == 1:
        return ONE_SEED
    return row.comparison.verdict


def seed_band(per_seed: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Mean and sample standard deviation per epoch over the seeds' per-epoch values (one
    list per seed), for the epochs that at least two seeds reached: one seed is not a band.
    An epoch where fewer than two seeds have a finite value is NaN in both. The TUI's
    per-epoch band and the exported figure's both come from here, so they agree."""
    lengths = sorted((len(values) for values in per_seed), reverse=True)
    reach = lengths[1] if len(lengths) > 1 else 0
    means: list[float] = []
    stds: list[float] = []
    for epoch in range(reach):
        agg = aggregate(v[epoch] for v in per_seed if epoch < len(v))
        means.append(agg.mean if agg.n > 1 else math.nan)
        stds.append(agg.std)
    return means, stds
