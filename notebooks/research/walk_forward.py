# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Walk-forward
#
# **Purpose.** Keep research honest out of sample: on each training window choose the grid's best combination by one metric (a sweep that sees only that window), trade it on the next window, roll on. Shows what the choice earned in sample beside what it earned after, the stitched out-of-sample equity against the base settings, which combination each window chose, and how likely the grid's best is overfit: the deflated Sharpe ratio (Bailey and López de Prado, 2014) and the probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado and Zhu, 2017).
#
# **Inputs.** The workbook's price store; the strategy, costs and research settings of the workbook's `config.yaml` or of `config` (a template name or a YAML path), which set every parameter the grid leaves out. Parameters: `workbook`, `config`, `start`, `end`, `grid` (a YAML file of `key: [values]`; empty for `walk_forward.DEFAULT_GRID`), `train_years`, `test_months`, `metric`.
#
# **Outputs.** The windows table, three charts, the DSR and the PBO in words; scraps `steps`, `metrics` and `completion`. Research only: nothing is written to the ledger.

# %% tags=["parameters"]
workbook = ""  # "" means $OPS_RUNNER_HOME, else the sample workbook in demo/
config = ""  # empty: the workbook config.yaml; else a template (gem, topn) or a path
start = ""  # first month-end considered, YYYY-MM-DD; empty: as early as the data allow
end = ""  # last session, YYYY-MM-DD; empty: the last bar of every symbol
grid = ""  # a YAML grid file; empty: walk_forward.DEFAULT_GRID (6 combinations)
train_years = 2  # each training window, in years of month-ends
test_months = 12  # each test window, in months; the windows roll by this much
metric = "sharpe"  # what the training window ranks by: sharpe, cagr, max_drawdown, ...
scheduler = ""  # each training sweep: inprocess, local, tcp://host:8786; empty: $DASK_SCHEDULER_ADDRESS or by size

# %%
from ops_runner.reports import pages
from ops_runner.reports import walk_forward as charts
from ops_runner.runtime import notebooks
from ops_runner.strategy import distributed, research, sweep, walk_forward

# %% [markdown]
# ## Workbook, strategy and grid

# %%
cfg = research.load_research_config(notebooks.open_workbook(workbook), config)
grid_values = sweep.load_grid(grid) if grid else walk_forward.DEFAULT_GRID
print(grid_values)
pages.compute_banner(cfg)

# %% [markdown]
# ## The windows
#
# One row per step: the training window, the test window that follows it, the combination chosen in sample and its metric in and out of sample.

# %%
bars = research.load_bars(cfg, grid_values)
result = distributed.walk_forward_placed(cfg, grid_values, bars, train_years=train_years, test_months=test_months, metric=metric, start=start or None, end=end or None, scheduler=scheduler or None)
print(result.summary())
result.steps.set_index("step")

# %% [markdown]
# ## In sample against out of sample
#
# The in-sample bar is the best of the grid on its training window, so it is biased upwards; the out-of-sample bar is what that choice earned next. A steady gap between them is the price of choosing.

# %%
charts.plot_in_and_out_of_sample(result.steps, metric);

# %% [markdown]
# ## Stitched out-of-sample equity
#
# The test windows one after another, against the base settings (the workbook's strategy) over the same sessions.

# %%
pages.plot_equity(result.equity, result.base_equity, title="walk-forward out of sample against the base settings");

# %% [markdown]
# ## What each window chose

# %%
charts.plot_chosen_parameters(result.steps);

# %% [markdown]
# ## How likely the grid's best is overfit
#
# Over all the windows, every combination is backtested. The **deflated Sharpe ratio** is the probability that the best of them by Sharpe has a true Sharpe ratio above what the best of as many unskilled trials reaches by luck (given how much the trials' Sharpe ratios spread, and the skew and fat tails of its returns): above 95% is evidence of skill, near 50% or below is not. The **probability of backtest overfitting** splits the returns into blocks and, for every way of taking half of them as in-sample, asks whether the in-sample best ranks in the bottom half out of sample: near 0 is good, near 50% means choosing by the backtest is no better than choosing at random, above 50% means it is worse.

# %%
print(result.deflated_sharpe.summary())
print(result.overfitting.summary())

# %%
print(walk_forward.OOS_NOTE)

# %% [markdown]
# ## Record

# %%
notebooks.glue("steps", result.to_dict()["steps"])
notebooks.glue("metrics", result.metrics())
notebooks.glue("completion", notebooks.completion_record("research/walk_forward", windows=len(result.steps), start=result.steps["test_start"].iat[0], end=result.steps["test_end"].iat[-1], grid=grid_values, metric=metric, metrics=result.metrics(), config_hash=cfg.hash))
