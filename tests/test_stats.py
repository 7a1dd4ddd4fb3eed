"""The sweep's statistics against independent references: scipy's t-tests, a textbook Holm
example, power by simulation, a bootstrap with a fixed seed, and effects built to be known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from moonprop import stats


@pytest.mark.parametrize("a, b", [
    ([0.97, 0.98, 0.975], [0.95, 0.96, 0.94, 0.955]),
    ([0.5, 0.52], [0.49, 0.6, 0.58, 0.41, 0.5]),
    ([1.0, 0.99, 0.995, 0.98, 0.97], [0.99, 0.985, 0.975]),
])
def test_welch_and_paired_are_scipys(a, b):
    ours, theirs = stats.welch(a, b), sp.ttest_ind(a, b, equal_var=False)
    assert (ours.t, ours.p) == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9)
    n = min(len(a), len(b))
    ours, theirs = stats.paired(a[:n], b[:n]), sp.ttest_rel(a[:n], b[:n])
    assert (ours.t, ours.p) == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-9)


def test_seeds_pair_where_both_ran_the_same_ones():
    assert stats.compare({0: 0.9, 1: 0.92, 2: 0.91}, {0: 0.88, 1: 0.9, 2: 0.9}).name == "paired"
    assert stats.compare({0: 0.9, 1: 0.92, 2: 0.91}, {0: 0.88, 1: 0.9, 3: 0.9}).name == "welch"
    assert stats.compare({0: 0.9}, {0: 0.88, 1: 0.9}) is None  # one seed: no spread to weigh against


def test_no_spread_decides_any_difference_and_nothing_else():
    assert stats.welch([1.0, 1.0], [0.9, 0.9]).p == 0.0 and stats.welch([1.0, 1.0], [1.0, 1.0]).p == 1.0
    assert stats.paired([1.0, 0.5], [0.5, 0.0]).p == 0.0


def test_holm_is_the_textbook_step_down():
    # Holm (1979)'s procedure on four p-values: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1,
    # then non-decreasing: 0.02, 0.03, 0.06, 0.06 (0.04 is raised to its predecessor's 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == [0.02]


def test_seeds_to_decide_has_the_power_it_promises():
    a, b = [0.95, 0.96, 0.94], [0.94, 0.95, 0.935]
    n = stats.seeds_to_decide(a, b, 0.05)
    assert n is not None and 3 < n < stats.MAX_SEEDS
    # simulate the sweep it predicts: normal seeds with these means and spreads, n of each
    rng = np.random.default_rng(1)
    sa, sb = np.std(a, ddof=1), np.std(b, ddof=1)

    def power(n: int) -> float:
        x, y = rng.normal(np.mean(a), sa, (4000, n)), rng.normal(np.mean(b), sb, (4000, n))
        return float(np.mean(sp.ttest_ind(x, y, axis=1, equal_var=False).pvalue < 0.05))

    assert power(n) >= stats.POWER - 0.03 and power(n - 1) < stats.POWER + 0.03
    assert stats.seeds_to_decide([0.9, 0.92], [0.9, 0.92], 0.05) is None  # no difference: nothing decides it


def test_the_verdict_corrects_for_every_comparison():
    rng = np.random.default_rng(0)
    means = {"best": 0.97, "close": 0.968, "far": 0.90, "farther": 0.80}
    configs = {c: {s: float(m + rng.normal(0, 0.005)) for s in range(5)} for c, m in means.items()}
    best, comparisons = stats.verdict(configs)
    assert best == "best"
    by = {c.config: c for c in comparisons}
    assert by["far"].decided and by["farther"].decided and not by["close"].decided
    assert by["close"].seeds is not None and by["close"].seeds > 5
    raw = [by[c].test.p for c in ("close", "far", "farther")]
    assert [by[c].p_holm for c in ("close", "far", "farther")] == pytest.approx(stats.holm(raw))
    assert stats.verdict({"a": {0: 0.9}}) is None


def test_effects_find_the_key_that_matters():
    # width decides (0.1 apart), schedule does nothing: the share of the first near 1, the second's near 0
    rng = np.random.default_rng(0)
    configs = {}
    for width, base in (("8", 0.85), ("16", 0.95)):
        for schedule in ("linear", "cosine", "step"):
            runs = {s: (base + rng.normal(0, 0.005), base - 0.01 + rng.normal(0, 0.005)) for s in range(4)}
            configs[f"{width} {schedule}"] = ({"width": width, "schedule": schedule}, runs)
    effects = stats.effects(configs, ["width", "schedule"])
    width = [e for e in effects if e.key == "width"]
    assert [e.value for e in width] == ["8", "16"] and [e.configs for e in width] == [3, 3]
    assert width[0].val_acc == pytest.approx(np.mean([r[0] for c in list(configs.values())[:3] for r in c[1].values()]))
    assert width[0].val_lo < width[0].val_acc < width[0].val_hi < width[1].val_lo
    assert width[0].share > 0.99 and width[0].share_lo > 0.95
    schedule = [e for e in effects if e.key == "schedule"]
    assert schedule[0].share < 0.01 and schedule[0].share_hi < 0.05
    assert stats.effects(configs, ["width", "schedule"]) == effects  # a fixed seed: the same intervals


def test_the_bootstrap_agrees_with_scipys():
    # three configurations, a key with values a, a, b: the share of the key's interval from our
    # resampling of each configuration's seeds and from scipy's bootstrap of the same statistic
    rng = np.random.default_rng(3)
    samples = [rng.normal(m, 0.02, 6) for m in (0.90, 0.91, 0.93)]
    configs = {str(i): ({"k": "ab"[i // 2]}, {s: (x, x) for s, x in enumerate(xs)}) for i, xs in enumerate(samples)}
    (a, _) = stats.effects(configs, ["k"], resamples=20000)

    def share(x, y, z, axis):
        means = np.stack([np.mean(v, axis=axis) for v in (x, y, z)], axis=-1)
        return stats._shares(means, [np.array(["a", "a", "b"])])[..., 0]

    theirs = sp.bootstrap(samples, share, method="percentile", n_resamples=20000, random_state=0,
                          vectorized=True).confidence_interval
    assert a.share == pytest.approx(float(share(*samples, axis=-1)))
    assert (a.share_lo, a.share_hi) == pytest.approx((theirs.low, theirs.high), abs=0.02)


def test_paired_seeds_need_fewer_to_decide_when_the_seeds_agree():
    # the same offset on every seed: pairing removes the seeds' shared luck
    base = [0.95, 0.97, 0.93, 0.96]
    other = [x - 0.004 + d for x, d in zip(base, (0.001, -0.001, 0.0005, -0.0005), strict=True)]
    paired, welch = stats.seeds_to_decide(base, other, 0.05, pair=True), stats.seeds_to_decide(base, other, 0.05)
    assert paired is not None and welch is not None and paired < welch
    rng = np.random.default_rng(2)
    d = np.subtract(base, other)

    def power(n: int) -> float:  # the paired test on simulated differences with this mean and spread
        x = rng.normal(d.mean(), d.std(ddof=1), (4000, n))
        return float(np.mean(sp.ttest_1samp(x, 0, axis=1).pvalue < 0.05))

    assert power(paired) >= stats.POWER - 0.03 and (paired == len(base) or power(paired - 1) < stats.POWER + 0.03)
