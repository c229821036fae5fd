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
# # Parameter sweep
#
# **Purpose.** Run the strategy over a grid of parameters (lookback months, skipped months, top N, the absolute-momentum filter, the defensive asset) in one vectorbt simulation, every combination on the same month-ends and with the same costs as the backtest, and show where the results are robust rather than lucky.
#
# **Inputs.** The workbook's price store; the strategy, costs and research settings of the workbook's `config.yaml` or of `config` (a template name or a YAML path), which set every parameter the grid leaves out. Parameters: `workbook`, `config`, `start`, `end`, `grid` (a YAML file of `key: [values]`; empty for `sweep.DEFAULT_GRID`), `scheduler` (where the chunks run: `inprocess`, `local` for a Dask LocalCluster, a Dask scheduler's `tcp://host:8786`; empty: `DASK_SCHEDULER_ADDRESS`, else by the grid's size, as `ops-runner sweep --scheduler`).
#
# **Outputs.** The best combinations, heatmaps of Sharpe and CAGR over lookback x top N; scraps `table` and `completion`. Research only: nothing is written to the ledger.

# %% tags=["parameters"]
workbook = ""  # "" means $OPS_RUNNER_HOME, else the sample workbook in demo/
config = ""  # empty: the workbook config.yaml; else a template (gem, topn) or a path
start = ""  # first month-end considered, YYYY-MM-DD; empty: as early as the data allow
end = ""  # last session, YYYY-MM-DD; empty: the last bar of every symbol
grid = ""  # a YAML grid file; empty: sweep.DEFAULT_GRID
scheduler = ""  # inprocess, local, tcp://host:8786; empty: $DASK_SCHEDULER_ADDRESS or by size

# %%
from ops_runner.reports import pages
from ops_runner.runtime import notebooks
from ops_runner.strategy import distributed, research, sweep

# %% [markdown]
# ## Workbook, strategy and grid

# %%
cfg = research.load_research_config(notebooks.open_workbook(workbook), config)
grid_values = sweep.load_grid(grid) if grid else sweep.DEFAULT_GRID
print(grid_values)
pages.compute_banner(cfg)

# %% [markdown]
# ## The best combinations by Sharpe ratio

# %%
bars = research.load_bars(cfg, grid_values)
table = distributed.sweep_placed(cfg, grid_values, bars, start=start or None, end=end or None, scheduler=scheduler or None)
table.sort_values("sharpe", ascending=False).head(10)

# %% [markdown]
# ## Lookback x top N
#
# Each cell is the median over the grid's other parameters.

# %%
pages.plot_sweep_heatmap(table, "sharpe");

# %%
pages.plot_sweep_heatmap(table, "cagr");

# %% [markdown]
# ## Record

# %%
notebooks.glue("table", sweep.compute_sweep_records(table))
notebooks.glue("completion", notebooks.completion_record("research/sweep", combinations=len(table), start=table["start"].iat[0], end=table["end"].iat[0], grid=grid_values, config_hash=cfg.hash))
