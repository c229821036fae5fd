"""The deflated Sharpe ratio and the probability of backtest overfitting, against the papers'
worked numbers, hand-built matrices and independent computations written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ops_runner.strategy.overfitting import (
    compute_backtest_overfitting,
    compute_deflated_sharpe,
    compute_expected_max_sharpe,
    compute_probabilistic_sharpe,
)
from ops_runner.strategy.research import ResearchError

# -- the deflated Sharpe ratio -------------------------------------------------------------------


def test_expected_max_sharpe_when_paper_example_gives_its_benchmark():
    # Bailey and Lopez de Prado (2014), section 5: 100 trials whose annualised Sharpe ratios
    # vary by 1/2, daily returns over 250 sessions a year: SR0 = 0.1132 per session.
    assert compute_expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)


def test_deflated_sharpe_when_paper_example_gives_0_9004():
    # Same example: annualised SR 2.5 over 1250 daily returns, skew -3, kurtosis 10: DSR 0.9004.
    benchmark = compute_expected_max_sharpe(100, 0.5 / 250)
    dsr = compute_probabilistic_sharpe(2.5 / math.sqrt(250), benchmark, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=2e-4)


def test_expected_max_sharpe_when_compared_with_monte_carlo_is_within_two_percent():
    rng = np.random.default_rng(20140101)
    variance = 0.04
    draws = rng.normal(0.0, math.sqrt(variance), size=(20_000, 100))
    simulated = draws.max(axis=1).mean()  # about 2.508 x 0.2 for 100 normals
    assert compute_expected_max_sharpe(100, variance) == pytest.approx(simulated, rel=0.02)


def test_expected_max_sharpe_when_one_trial_or_no_spread_is_zero():
    assert compute_expected_max_sharpe(1, 0.3) == 0.0
    assert compute_expected_max_sharpe(50, 0.0) == 0.0


def test_probabilistic_sharpe_when_sharpe_equals_benchmark_is_one_half():
    assert compute_probabilistic_sharpe(0.1, 0.1, 500, -1.0, 6.0) == pytest.approx(0.5)


def test_deflated_sharpe_when_computed_independently_with_scipy_agrees():
    rng = np.random.default_rng(7)
    returns = rng.standard_t(5, size=750) * 0.01 + 0.0006
    trial_sharpes = rng.normal(0.02, 0.03, size=24)
    # independently: scipy's moments and normal law, the paper's formulas written out here
    sr = returns.mean() / returns.std(ddof=1)
    v = np.var(trial_sharpes, ddof=1)
    n = len(trial_sharpes)
    sr0 = math.sqrt(v) * (
        (1 - np.euler_gamma) * stats.norm.ppf(1 - 1 / n)
        + np.euler_gamma * stats.norm.ppf(1 - 1 / (n * math.e))
    )
    g3, g4 = stats.skew(returns), stats.kurtosis(returns, fisher=False)
    z = (sr - sr0) * math.sqrt(len(returns) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    found = compute_deflated_sharpe(pd.Series(returns), trial_sharpes)
    assert found.probability == pytest.approx(stats.norm.cdf(z), rel=1e-9)
    assert found.expected_max_sharpe == pytest.approx(sr0, rel=1e-9)
    assert (found.skew, found.kurtosis) == pytest.approx((g3, g4), rel=1e-9)
    assert found.trials == 24 and found.observations == 750
    assert "deflated Sharpe ratio" in found.summary()


def test_deflated_sharpe_when_returns_are_constant_refuses_with_one_line():
    with pytest.raises(ResearchError, match="at least 2 values that differ"):
        compute_deflated_sharpe([0.01, 0.01, 0.01], [0.1, 0.2])


# -- the probability of backtest overfitting ---------------------------------------------------


def blocks_of(*rows_per_block: list[list[float]]) -> np.ndarray:
    return np.vstack([np.array(block, dtype=float) for block in rows_per_block])


def test_pbo_when_in_sample_best_is_always_worst_out_of_sample_is_one():
    # Two blocks of two rows; A shines in block 1 and sinks in block 2, B the reverse. Either
    # split picks the strategy that is worst on the other half: rank 1 of 2, w = 1/3, logit < 0.
    returns = blocks_of([[0.02, -0.01], [0.03, -0.02]], [[-0.01, 0.02], [-0.02, 0.03]])
    found = compute_backtest_overfitting(returns, blocks=2)
    assert found.probability == 1.0
    assert found.logits == pytest.approx([math.log(0.5), math.log(0.5)])


def test_pbo_when_one_strategy_leads_in_every_block_is_zero():
    # A beats B in every block: A is chosen and ranks 2 of 2 out of sample, w = 2/3, logit ln 2.
    returns = blocks_of(
        [[0.02, 0.01], [0.03, 0.00]], [[0.02, 0.00], [0.04, 0.01]],
        [[0.03, 0.01], [0.02, 0.00]], [[0.03, 0.00], [0.04, 0.02]],
    )  # fmt: skip
    found = compute_backtest_overfitting(returns, blocks=4)
    assert found.probability == 0.0
    assert len(found.logits) == 6  # C(4, 2)
    assert found.logits == pytest.approx([math.log(2)] * 6)


def brute_force_pbo(values: np.ndarray, blocks: int) -> float:
    """CSCV written out plainly: pandas Sharpe ratios and ranks per split."""
    size = len(values) // blocks
    frame = pd.DataFrame(values[: size * blocks])
    part = np.repeat(np.arange(blocks), size)
    overfit = []
    for half in itertools.combinations(range(blocks), blocks // 2):
        inside = np.isin(part, half)
        train, test = frame[inside], frame[~inside]
        best = (train.mean() / train.std()).idxmax()
        ranks = (test.mean() / test.std()).rank()
        w = ranks[best] / (frame.shape[1] + 1)
        overfit.append(math.log(w / (1 - w)) <= 0)
    return float(np.mean(overfit))


def test_pbo_when_noise_is_compared_with_a_brute_force_cscv_agrees():
    rng = np.random.default_rng(11)
    values = rng.normal(0.0005, 0.01, size=(403, 12))  # 403: the last 3 rows are dropped
    found = compute_backtest_overfitting(values, blocks=8)
    assert found.probability == pytest.approx(brute_force_pbo(values, 8))
    assert found.observations == 400 and found.strategies == 12 and len(found.logits) == 70


def test_pbo_when_a_column_is_copied_counts_it_once():
    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 0.01, size=(160, 5))
    copied = np.hstack([values, values[:, [2, 2]]])
    alone = compute_backtest_overfitting(values, blocks=8)
    twice = compute_backtest_overfitting(copied, blocks=8)
    assert twice.strategies == 5
    assert twice.probability == alone.probability
    assert twice.logits == pytest.approx(alone.logits)


@pytest.mark.parametrize(
    ("values", "blocks", "message"),
    [
        (np.ones((40, 3)) * [0.01, 0.01, 0.01], 4, "at least 2 distinct strategies"),
        (np.zeros((40, 3)), 3, "even number"),
        (np.zeros((6, 3)), 4, "cannot fill 4 blocks"),
        (np.full((40, 2), np.nan), 4, "missing values"),
    ],
)
def test_pbo_when_input_is_unusable_refuses_with_one_line(values, blocks, message):
    with pytest.raises(ResearchError, match=message):
        compute_backtest_overfitting(values, blocks=blocks)
