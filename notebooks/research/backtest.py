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
# # Backtest
#
# **Purpose.** Replay the production strategy month by month: the same decision function the `decision` job runs decides every month-end, and vectorbt trades the targets at the next session's open with the workbook's costs. Shows the equity curve against buy-and-hold of the benchmark (or first risk asset), the drawdowns, the monthly returns and every decision.
#
# **Inputs.** The workbook's price store; the strategy, costs and research settings of the workbook's `config.yaml` or of `config` (a template name such as `gem` or `topn`, or a YAML path). Parameters: `workbook`, `config`, `start`, `end` (YYYY-MM-DD, empty for all the data).
#
# **Outputs.** Metrics, charts and the decisions table; scraps `metrics`, `decisions` and `completion`. Research only: nothing is written to the ledger.

# %% tags=["parameters"]
workbook = ""  # "" means $OPS_RUNNER_HOME, else the sample workbook in demo/
config = ""  # empty: the workbook config.yaml; else a template (gem, topn) or a path
start = ""  # first month-end considered, YYYY-MM-DD; empty: as early as the data allow
end = ""  # last session, YYYY-MM-DD; empty: the last bar of every symbol

# %%
from ops_runner.reports import pages
from ops_runner.runtime import notebooks
from ops_runner.strategy import research

# %% [markdown]
# ## Workbook, strategy and data

# %%
cfg = research.load_research_config(notebooks.open_workbook(workbook), config)
pages.compute_banner(cfg)

# %% [markdown]
# ## Metrics

# %%
bars = research.load_bars(cfg)
result = research.backtest(cfg, bars, start=start or None, end=end or None)
print(result.summary())
result.metrics_frame()

# %% [markdown]
# ## Equity and drawdowns
#
# Total return: dividends are reinvested.

# %%
pages.plot_equity(result.equity, result.buy_and_hold);

# %%
pages.plot_drawdown(result.equity);

# %% [markdown]
# ## Monthly returns

# %%
pages.plot_monthly_heatmap(result.equity);

# %% [markdown]
# ## Decisions
#
# The last two years; `result.decisions` holds them all.

# %%
result.decisions_frame().tail(24)

# %% [markdown]
# ## How the simulation trades

# %%
print(research.COST_MODEL)

# %% [markdown]
# ## Record

# %%
notebooks.glue("metrics", result.metrics())
notebooks.glue("decisions", result.to_dict()["decisions"])
notebooks.glue("completion", notebooks.completion_record("research/backtest", start=result.to_dict()['start'], end=result.to_dict()['end'], decisions=len(result.decisions), metrics=result.metrics(), config_hash=cfg.hash))
