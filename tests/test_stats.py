"""Statistics against known values."""

import math

import pytest

from rd3_harness.results.stats import betainc, difference_ci, summarize, t_cdf, t_ppf, welch_t_test


def test_t_quantiles_match_tables():
    assert t_ppf(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_ppf(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_ppf(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_ppf(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 5) == pytest.approx(0.5)


def test_incomplete_beta_special_cases():
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert betainc(2, 2, 0.5) == pytest.approx(0.5)
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-4)


def test_summary_uses_sample_std_and_t_interval():
    s = summarize([0.80, 0.82, 0.81])
    assert s.std == pytest.approx(0.01)
    assert (s.ci95_high - s.mean) == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    single = summarize([0.5])
    assert single.mean == 0.5 and math.isnan(single.std)


def test_welch_matches_reference():
    # R: t.test(c(1,2,3,4), c(2,3,4,5,6)) -> t = -1.5667, df = 6.9808, p-value = 0.1613
    t, df, p = welch_t_test([1, 2, 3, 4], [2, 3, 4, 5, 6])
    assert (t, df, p) == pytest.approx((-1.5667, 6.9808, 0.1613), abs=1e-3)


def test_difference_interval_is_welchs():
    # equal variances 1e-4 and n = 3 on both sides: df = 4, se = sqrt(2e-4 / 3), t(0.975, 4) = 2.776445
    low, high = difference_ci([0.70, 0.71, 0.72], [0.50, 0.52, 0.51])
    half = 2.776445 * math.sqrt(2e-4 / 3)
    assert low == pytest.approx(0.2 - half, abs=1e-6) and high == pytest.approx(0.2 + half, abs=1e-6)
    assert all(math.isnan(v) for v in difference_ci([0.7], [0.5, 0.6]))
