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
# # Performance: live vs research
#
# **Purpose.** Does production behave like research? The live equity curve folded from the ledger (fills, commissions, cash, marked at each session's close; between trades the books' dividends, owed from their ex-dates net of withholding, splits, interest and fees; for a ledger without them, the store's dividends and splits) against the research backtest of the same config from the same rebalance close with the same capital. Per month: the tracking difference (live - research) and where it came from, in bps of the month's starting equity: slippage (fills vs the backtest's price), commissions (paid vs modelled), interest and fees (booked in the ledger), cash drag (cash held beyond research's, times the market), rounding (the mix whole shares leave) and other, which makes the parts sum exactly to the total and holds what the ledger's dividends differ from the store's, named in the notes (the formulas are in `ops_runner.strategy.performance`). A month beyond the tolerance (50 bps by default) says production diverges.
#
# **Inputs.** The workbook's config (strategy, costs, research), ledger (opening balance, fills, decisions, the account between trades) and price store (raw and adjusted prices, dividends, splits). Parameters: `workbook`, `start`, `end` (empty: from the first funded rebalance to the last session with data).
#
# **Outputs.** The summary line, the equity chart, the attribution chart and the monthly table; scraps `performance` and `completion`. Nothing is written to the ledger.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
start = ""  # "" from the first funded rebalance close; else an ISO date
end = ""  # "" to the last session with data; else an ISO date

# %%
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks
from ops_runner.strategy import performance

# %%
cfg = notebooks.open_workbook(workbook, run_id)
formats.show_table(pages.compute_banner(cfg))

# %%
report = performance.read_performance(cfg, start or None, end or None)
print(report.summary())

# %% [markdown]
# ## Live vs research equity

# %%
performance.plot_equity(report);

# %% [markdown]
# ## Tracking difference per month
#
# Bars: the parts (bps of the month's starting equity, + = live ahead); diamond: the total; dashed: the tolerance.

# %%
performance.plot_attribution(report);

# %% [markdown]
# ## Months

# %%
print(*report.notes, sep='\n')
formats.show_table(report.months_frame(), money=["live_start_equity", "research_start_equity", "live_commissions", "research_commissions", "slippage_dollars"], percent=["live_return", "research_return"], bps=["tracking_bps", "slippage_bps", "commissions_bps", "interest_fees_bps", "cash_drag_bps", "rounding_bps", "other_bps"])

# %% [markdown]
# ## Workbook

# %%
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Record

# %%
notebooks.glue("performance", report.to_payload())
notebooks.glue("completion", notebooks.completion_record("performance", status=str(report.status), start=report.start, end=report.end, months=len(report.months)))
