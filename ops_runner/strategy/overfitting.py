"""How likely a backtest's best combination is overfit: the deflated Sharpe ratio and the
probability of backtest overfitting by combinatorially symmetric cross-validation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from ops_runner.strategy.research import ResearchError

EULER_GAMMA = 0.5772156649015329
NORMAL = NormalDist()
MAX_SPLITS = 20_000  # C(16, 8) = 12,870: 16 blocks is the paper's own example and fits


# -- the deflated Sharpe ratio (Bailey and Lopez de Prado, 2014) ----------------------------------


def compute_expected_max_sharpe(trials: int, variance: float) -> float:
    """Return the Sharpe ratio the best of ``trials`` unskilled strategies is expected to reach.

    ``variance``: the variance of the trials' Sharpe ratios (per period, as the result).
    The expected maximum of N normal draws (mean 0), by the paper's approximation:
    sqrt(V) x ((1 - gamma) x Phi^-1(1 - 1/N) + gamma x Phi^-1(1 - 1/(N e))), gamma the
    Euler-Mascheroni constant. One trial expects 0. Raises ResearchError for no trials or a
    negative variance.
    """
    if trials < 1:
        raise ResearchError(f"expected maximum Sharpe: {trials} trials; give at least 1")
    if not variance >= 0:
        raise ResearchError(f"expected maximum Sharpe: variance {variance} is not >= 0")
    if trials == 1:
        return 0.0
    spread = (1.0 - EULER_GAMMA) * NORMAL.inv_cdf(1.0 - 1.0 / trials) + EULER_GAMMA * (
        NORMAL.inv_cdf(1.0 - 1.0 / (trials * math.e))
    )
    return float(math.sqrt(variance) * spread)


def compute_probabilistic_sharpe(
    sharpe: float, benchmark: float, observations: int, skew: float, kurtosis: float
) -> float:
    """Return the probability that the true Sharpe ratio exceeds ``benchmark`` (the PSR).

    ``sharpe`` and ``benchmark`` per period (not annualised), estimated from ``observations``
    returns whose ``skew`` and ``kurtosis`` (not excess: 3 for a normal law) are given:
    Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)).
    Raises ResearchError for fewer than 2 observations or a non-positive denominator.
    """
    if observations < 2:
        raise ResearchError(f"probabilistic Sharpe: {observations} returns; give at least 2")
    spread = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not spread > 0:
        raise ResearchError(
            f"probabilistic Sharpe: skew {skew:.3g} and kurtosis {kurtosis:.3g} leave no "
            f"spread at Sharpe {sharpe:.3g}; check the returns"
        )
    z = (sharpe - benchmark) * math.sqrt(observations - 1) / math.sqrt(spread)
    return NORMAL.cdf(z)


@dataclass(frozen=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of one strategy chosen among ``trials``, with its inputs."""

    probability: float  # that the true Sharpe ratio is above what luck alone gives the best
    sharpe: float  # per period
    expected_max_sharpe: float  # per period: the benchmark luck sets
    trials: int
    observations: int
    skew: float
    kurtosis: float  # not excess

    def summary(self) -> str:
        """Return one plain line saying what the number means."""
        return (
            f"deflated Sharpe ratio {self.probability:.1%}: the chance that the chosen "
            f"strategy's true Sharpe ratio beats the best of {self.trials} unskilled trials "
            f"(per-period Sharpe {self.sharpe:.4f} against {self.expected_max_sharpe:.4f} "
            f"expected by luck, {self.observations} returns)"
        )


def compute_deflated_sharpe(
    returns: Sequence[float] | pd.Series, trial_sharpes: Sequence[float] | np.ndarray
) -> DeflatedSharpe:
    """Return the deflated Sharpe ratio of ``returns``, the strategy chosen among the trials
    whose per-period Sharpe ratios are ``trial_sharpes`` (the chosen one among them).

    The PSR of ``returns`` against the expected maximum Sharpe of as many trials, with the
    trials' Sharpe variance (ddof 1); skew and kurtosis of ``returns`` by their moments
    (the biased estimators, as scipy.stats.skew and kurtosis give them). Raises
    ResearchError for fewer than 2 returns or no spread.
    """
    values = np.asarray(returns, dtype=np.float64)
    values = values[np.isfinite(values)]
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    trials = trials[np.isfinite(trials)]
    if len(values) < 2 or not values.std(ddof=1) > 0:
        raise ResearchError("deflated Sharpe: the returns need at least 2 values that differ")
    sharpe = float(values.mean() / values.std(ddof=1))
    variance = float(trials.var(ddof=1)) if len(trials) > 1 else 0.0
    benchmark = compute_expected_max_sharpe(max(len(trials), 1), variance)
    deviations = values - values.mean()
    spread = float(np.mean(deviations**2))
    skew = float(np.mean(deviations**3)) / spread**1.5
    kurtosis = float(np.mean(deviations**4)) / spread**2
    probability = compute_probabilistic_sharpe(sharpe, benchmark, len(values), skew, kurtosis)
    return DeflatedSharpe(
        probability, sharpe, benchmark, max(len(trials), 1), len(values), skew, kurtosis
    )


# -- the probability of backtest overfitting (Bailey, Borwein, Lopez de Prado, Zhu, 2017) ---------


@dataclass(frozen=True)
class BacktestOverfitting:
    """CSCV over a performance matrix: the PBO and the logit of every split."""

    probability: float  # the share of splits whose in-sample best ranks at or below the median
    logits: np.ndarray  # one per split: ln(w / (1 - w)), w the best's relative rank out of sample
    blocks: int
    strategies: int  # distinct columns (a copy is one trial, not two)
    observations: int

    def summary(self) -> str:
        """Return one plain line saying what the number means."""
        return (
            f"probability of backtest overfitting {self.probability:.1%}: in that share of "
            f"{len(self.logits)} splits of {self.observations} returns into {self.blocks} "
            f"blocks, the in-sample best of {self.strategies} strategies ranked at or below "
            "the median out of sample"
        )


def require_blocks(blocks: int) -> int:
    """Return ``blocks`` if the PBO can cut returns into that many (even, >= 2, at most
    MAX_SPLITS splits). Raises ResearchError saying what to give: a walk-forward checks it
    before its windows run, not after."""
    if blocks < 2 or blocks % 2:
        raise ResearchError(f"backtest overfitting: {blocks} blocks; give an even number >= 2")
    if math.comb(blocks, blocks // 2) > MAX_SPLITS:
        raise ResearchError(f"backtest overfitting: {blocks} blocks make too many splits; use 16")
    return blocks


def compute_backtest_overfitting(
    returns: pd.DataFrame | np.ndarray, blocks: int = 16
) -> BacktestOverfitting:
    """Return the probability of backtest overfitting of the strategies whose per-period
    returns are the columns of ``returns`` (rows: periods, in order).

    The rows are cut into ``blocks`` contiguous blocks of equal size (the last
    ``rows % blocks`` rows are dropped). For each of the C(S, S/2) ways to take half the blocks
    as in-sample: the column with the best in-sample Sharpe ratio (the first listed on a tie) is
    ranked by Sharpe among all columns on the other half (1 = worst; tied columns share their
    average rank), w = rank / (N + 1), logit ln(w / (1 - w)). The PBO is the share of logits
    <= 0. Identical columns count once. Raises ResearchError for an odd or too small number of
    blocks, too few rows, or fewer than 2 distinct columns.
    """
    frame = pd.DataFrame(returns)
    if frame.isna().any().any():
        raise ResearchError("backtest overfitting: the returns hold missing values; drop them")
    values = frame.T.drop_duplicates().T.to_numpy(dtype=np.float64)
    require_blocks(blocks)
    size = len(values) // blocks
    if size < 2:
        raise ResearchError(
            f"backtest overfitting: {len(values)} returns cannot fill {blocks} blocks of at "
            "least 2; use fewer blocks"
        )
    count = values.shape[1]
    if count < 2:
        raise ResearchError("backtest overfitting: needs at least 2 distinct strategies")
    cut = values[: size * blocks].reshape(blocks, size, count)
    # Sums per block: any union's Sharpe ratio follows from them.
    sums, squares = cut.sum(axis=1), (cut**2).sum(axis=1)
    logits = []
    for chosen in itertools.combinations(range(blocks), blocks // 2):
        inside = np.zeros(blocks, dtype=bool)
        inside[list(chosen)] = True
        trained = _sharpe(sums[inside].sum(0), squares[inside].sum(0), size * blocks // 2)
        tested = _sharpe(sums[~inside].sum(0), squares[~inside].sum(0), size * blocks // 2)
        best = int(np.argmax(trained))
        mine = tested[best]  # its rank: 1 = worst, ties averaged
        rank = np.sum(tested < mine) + (np.sum(tested == mine) + 1) / 2
        w = rank / (count + 1)
        logits.append(math.log(w / (1.0 - w)))
    found = np.array(logits)
    return BacktestOverfitting(float((found <= 0).mean()), found, blocks, count, size * blocks)


def _sharpe(total: np.ndarray, squares: np.ndarray, n: int) -> np.ndarray:
    """Per-period Sharpe ratios (ddof 1) from sums; a column without spread scores +inf, -inf
    or 0 by the sign of its mean (a sure gain beats any risky one)."""
    mean = total / n
    variance = np.maximum(squares / n - mean**2, 0.0) * n / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        found = mean / np.sqrt(variance)
    return np.where(variance > 0, found, np.sign(mean) * np.where(mean != 0, np.inf, 0.0))
