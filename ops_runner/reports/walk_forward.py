"""Charts of a walk-forward: in-sample against out-of-sample per window, and the combination
each window chose."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ops_runner.strategy.walk_forward import STEP_COLUMNS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_in_and_out_of_sample(steps: pd.DataFrame, metric: str = "sharpe") -> Figure:
    """Return bars of each window's in-sample and out-of-sample ``metric``, by test window."""
    import matplotlib.pyplot as plt  # matplotlib stays out of imports that draw nothing

    at = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar(at - 0.2, steps["in_sample"], width=0.4, label="in sample (training window)")
    ax.bar(at + 0.2, steps["out_of_sample"], width=0.4, label="out of sample (test window)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(at, [f"{s[:7]}..{e[:7]}" for s, e in zip(steps["test_start"], steps["test_end"],
                                                            strict=True)],
                  rotation=45, ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel(metric)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{metric} chosen in sample, then earned out of sample", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def plot_chosen_parameters(steps: pd.DataFrame) -> Figure:
    """Return one step line per grid parameter the windows did not all choose alike."""
    import matplotlib.pyplot as plt

    labels = [k for k in steps if k not in STEP_COLUMNS]
    varied = [k for k in labels if steps[k].nunique() > 1] or ["lookback_months"]
    fig, axes = plt.subplots(len(varied), 1, figsize=(10, 1.6 * len(varied) + 0.6), sharex=True,
                             squeeze=False)  # fmt: skip
    # each choice held from its test window's start to its end: the last one drawn to its end
    when = pd.to_datetime([*steps["test_start"], steps["test_end"].iat[-1]])
    for ax, key in zip(axes[:, 0], varied, strict=True):
        values = steps[key].astype(str).tolist()
        levels = sorted(set(values), key=lambda v: (len(v), v))
        ax.step(when, [levels.index(v) for v in [*values, values[-1]]], where="post", lw=1.5)
        ax.set_yticks(range(len(levels)), levels)
        ax.set_ylabel(key, fontsize=8)
    axes[0, 0].set_title("the combination each training window chose (held over its test window)",
                         loc="left", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig
