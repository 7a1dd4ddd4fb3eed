"""The statistics of a sweep's answer: intervals, comparisons and effects over seeds.

A configuration is its final accuracies by seed, `{seed: value}`. Every question here is asked of
a handful of seeds, so the tests are Student's t (Welch's where the two configurations' seeds
differ, paired where they are the same seeds: the same seed draws the same batches and test set, so
the two differ less than two strangers would), Holm's correction keeps the verdict's error rate at
`ALPHA` over all its comparisons, and a bootstrap over the seeds gives the share of the variation a
swept key explains its interval. Pure numbers: numpy and scipy, no MLflow, no torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as sp

ALPHA = 0.05  # the verdict's family-wise error rate, and 1 - the intervals' level
POWER = 0.8  # "likely" in "this many seeds would likely decide it"
MAX_SEEDS = 1000  # beyond this, "more seeds" is no practical answer


def interval(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """The mean, the sample standard deviation and the half-width of the 95% interval of the mean
    (Student's t with n - 1 degrees of freedom); the last two None for a single value."""
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    std = statistics.stdev(values)
    return mean, std, float(sp.t.ppf(1 - ALPHA / 2, len(values) - 1)) * std / math.sqrt(len(values))


class Test(NamedTuple):
    name: str  # "welch" or "paired"
    t: float
    df: float
    p: float  # two-sided


def _p(t: float, df: float, difference: float) -> float:
    """Two-sided p of t; with no spread at all, any difference is certain and none is nothing."""
    if math.isnan(t):
        return 0.0 if difference else 1.0
    return float(2 * sp.t.sf(abs(t), df))


def welch(a: Sequence[float], b: Sequence[float]) -> Test:
    """Welch's t-test of mean(a) = mean(b), unequal variances (Welch-Satterthwaite's degrees of
    freedom); scipy's `ttest_ind(a, b, equal_var=False)`."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return Test("welch", math.copysign(math.inf, difference) if difference else math.nan, math.nan,
                    _p(math.nan, 0, difference))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = difference / math.sqrt(va + vb)
    return Test("welch", t, df, _p(t, df, difference))


def paired(a: Sequence[float], b: Sequence[float]) -> Test:
    """The paired t-test of mean(a - b) = 0, a[i] and b[i] from the same seed; scipy's `ttest_rel`."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd == 0:
        return Test("paired", math.copysign(math.inf, mean) if mean else math.nan, len(d) - 1, _p(math.nan, 0, mean))
    t = mean / (sd / math.sqrt(len(d)))
    return Test("paired", t, len(d) - 1, _p(t, len(d) - 1, mean))


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Test | None:
    """a against b, each by seed: paired where both ran the same seeds, else Welch's; None where
    either has a single seed (no spread to weigh the difference against)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if set(a) == set(b):
        seeds = sorted(a)
        return paired([a[s] for s in seeds], [b[s] for s in seeds])
    return welch(list(a.values()), list(b.values()))


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m is multiplied
    by m - k + 1, then made non-decreasing; a comparison is decided where its adjusted p < the level."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def seeds_to_decide(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, pair: bool = False) -> int | None:
    """The seeds each configuration would likely (POWER) need for the test at `alpha` to tell them
    apart (paired: a[i] and b[i] from one seed, else Welch's), if the difference and the spreads
    are what these seeds show (a noncentral t); None where nothing would (no difference, or no
    spread seen), MAX_SEEDS + 1 for "more than that"."""
    if len(a) < 2 or len(b) < 2:
        return None
    difference = abs(statistics.fmean(a) - statistics.fmean(b))
    n = np.arange(max(len(a), len(b)), MAX_SEEDS + 1)
    if pair:
        var = statistics.variance([x - y for x, y in zip(a, b, strict=True)])
        df = n - 1.0
    else:
        va, vb = statistics.variance(a), statistics.variance(b)
        var = va + vb
        df = (n - 1) * var**2 / (va**2 + vb**2) if var else n - 1.0
    if difference == 0 or var == 0:
        return None
    critical = sp.t.ppf(1 - alpha / 2, df)
    shift = difference / np.sqrt(var / n)
    power = sp.nct.sf(critical, df, shift) + sp.nct.cdf(-critical, df, shift)
    enough = np.flatnonzero(power >= POWER)
    return int(n[enough[0]]) if enough.size else MAX_SEEDS + 1


class Comparison(NamedTuple):
    """The best configuration against another, on final validation accuracy."""

    config: str
    difference: float  # the best's mean minus this one's
    test: Test | None  # None: a single seed on one side
    p_holm: float | None
    decided: bool  # the best is better, Holm-corrected at the verdict's level
    seeds: int | None  # seeds each would likely take to decide it (undecided only)


def verdict(configs: Mapping[str, Mapping[int, float]], alpha: float = ALPHA) -> tuple[str, list[Comparison]] | None:
    """The best configuration by mean (the first of equals) and its comparison with every other,
    Holm-corrected at `alpha` over those that can be tested; None for fewer than two configurations."""
    scored = {c: v for c, v in configs.items() if v}
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda c: statistics.fmean(scored[c].values()))
    others = [c for c in scored if c != best]
    tests = {c: compare(scored[best], scored[c]) for c in others}
    tested = [c for c in others if tests[c] is not None]
    adjusted = dict(zip(tested, holm([tests[c].p for c in tested]), strict=True))  # type: ignore[union-attr]
    # Holm's threshold for the k-th smallest p is ALPHA / (m - k + 1): what each undecided one must reach
    rank = {c: i for i, c in enumerate(sorted(tested, key=lambda c: tests[c].p))}  # type: ignore[union-attr]
    out = []
    for c in others:
        difference = statistics.fmean(scored[best].values()) - statistics.fmean(scored[c].values())
        decided = c in adjusted and adjusted[c] < alpha and difference > 0
        seeds = None
        if not decided and c in rank:
            pair = tests[c].name == "paired"  # type: ignore[union-attr]
            order = sorted(scored[c]) if pair else list(scored[c])
            seeds = seeds_to_decide([scored[best][s] for s in order] if pair else list(scored[best].values()),
                                    [scored[c][s] for s in order], alpha / (len(tested) - rank[c]), pair)
        out.append(Comparison(c, difference, tests[c], adjusted.get(c), decided, seeds))
    return best, out


class Effect(NamedTuple):
    """One value of a swept key, over the configurations that have it (the other keys' values and
    the seeds): the mean of their mean final accuracies, with its 95% interval."""

    key: str
    value: str
    configs: int
    jobs: int
    val_acc: float
    val_lo: float | None
    val_hi: float | None
    test_acc: float
    test_lo: float | None
    test_hi: float | None
    share: float | None  # of the variation across configurations (val_acc) this key explains
    share_lo: float | None  # its 95% interval, by a bootstrap over each configuration's seeds
    share_hi: float | None


def _mean_interval(means: list[float], variances: list[float | None], counts: list[int]) -> tuple[float | None, ...]:
    """The 95% interval of the mean of configuration means, from each one's spread over its seeds
    (Welch-Satterthwaite's degrees of freedom); None where a configuration has a single seed."""
    if any(v is None for v in variances):
        return None, None
    parts = [v / n / len(means) ** 2 for v, n in zip(variances, counts, strict=True)]  # type: ignore[operator]
    se2 = sum(parts)
    mean = statistics.fmean(means)
    if se2 == 0:
        return mean, mean
    df = se2**2 / sum(p**2 / (n - 1) for p, n in zip(parts, counts, strict=True) if p)
    half = float(sp.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(se2)
    return mean - half, mean + half


def _shares(means: np.ndarray, levels: list[np.ndarray]) -> np.ndarray:
    """For configuration means (.., C) and each key's level per configuration, the share of the
    squares about the grand mean each key's main effect explains (eta squared; the rest is their
    interactions and the seeds' noise): shape (.., keys)."""
    centred = means - means.mean(axis=-1, keepdims=True)
    total = (centred**2).sum(axis=-1)
    out = []
    for level in levels:
        explained = np.zeros_like(total)
        for value in np.unique(level):
            where = level == value
            explained += where.sum() * centred[..., where].mean(axis=-1) ** 2
        out.append(np.divide(explained, total, out=np.zeros_like(total), where=total > 0))
    return np.stack(out, axis=-1)


def effects(configs: Mapping[str, tuple[Mapping[str, str], Mapping[int, tuple[float, float]]]],
            keys: Sequence[str], resamples: int = 2000, seed: int = 0) -> list[Effect]:
    """Each key's effect, value by value: `configs` maps a configuration to its values of `keys`
    and its final (val_acc, test_acc) by seed. The shares' intervals resample each configuration's
    seeds `resamples` times (a fixed `seed`: the same sweep gives the same intervals)."""
    names = [c for c, (_, runs) in configs.items() if runs]
    runs = [np.array(list(configs[c][1].values()), dtype=float) for c in names]  # (seeds, 2) each
    val_means = np.array([r[:, 0].mean() for r in runs])
    levels = [np.array([configs[c][0].get(k, "") for c in names]) for k in keys]
    share = _shares(val_means, levels)
    rng = np.random.default_rng(seed)
    boot = np.stack([r[rng.integers(0, len(r), (resamples, len(r))), 0].mean(axis=1) for r in runs], axis=-1)
    lo, hi = (np.quantile(_shares(boot, levels), q, axis=0) for q in (ALPHA / 2, 1 - ALPHA / 2))
    single = any(len(r) < 2 for r in runs)  # one seed: resampling it shows no spread
    out = []
    for k, key in enumerate(keys):
        for value in dict.fromkeys(levels[k]):  # in the sweep's order
            chosen = [i for i in range(len(names)) if levels[k][i] == value]
            stats = {}
            for m, metric in enumerate(("val", "test")):
                means = [float(runs[i][:, m].mean()) for i in chosen]
                variances = [float(runs[i][:, m].var(ddof=1)) if len(runs[i]) > 1 else None for i in chosen]
                counts = [len(runs[i]) for i in chosen]
                stats[metric] = (statistics.fmean(means), *_mean_interval(means, variances, counts))
            out.append(Effect(key, str(value), len(chosen), sum(len(runs[i]) for i in chosen), *stats["val"],
                              *stats["test"], float(share[k]), None if single else float(lo[k]),
                              None if single else float(hi[k])))
    return out
