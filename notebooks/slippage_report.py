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
# # Slippage report
#
# **Purpose.** Once a cycle's orders have filled, compare each fill with the raw close the decision sized it with and with the order session's opening print, in basis points signed as a cost (positive: a buy paid more, a sell received less), and add up what the cycle cost in dollars (slippage against the open plus commissions). Orders whose |slippage vs the open| is beyond their band (`costs.slippage_band_bps`, or `costs.slippage_bands` per symbol) are flagged and alerted. The trailing 12 cycles show whether the expected costs still hold.
#
# **Inputs.** The workbook's config (bands), ledger (plan, orders, fills) and price store (raw opens and closes). Parameters: `workbook`, `cycle`, `now`.
#
# **Outputs.** The orders table, the slippage chart, the trailing-cycles and per-symbol tables, the out-of-band orders and the cost chart; scraps `slippage`, `check` and `completion`; a `CheckRecorded` event (check `slippage_bands`) once the cycle's fills are complete, and an `AlertSent` event when an order is out of band. The tick publishes this executed notebook as `reports/slippage/<cycle>.html`, linked from the runs index.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
cycle = "2025-11"  # decided on 2025-11-28; filled at the 2025-12-01 open
now = ""  # the tick's instant on a simulated clock (stamps the ledger); "" means the real clock

# %%
from ops_runner.execution import slippage
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Orders of the cycle
#
# Per order: ordered, filled and the fill ratio, decision close, opening print, average fill, slippage vs each (bps, + = cost), dollars lost vs the open, commission, band.

# %%
report = slippage.read_slippage(cfg, cycle)
print(report.summary())
formats.show_table(report.orders_frame(), money=["decision_close", "open_print", "avg_price", "slippage_cost", "commission"], percent=["fill_ratio"], bps=["vs_close_bps", "vs_open_bps", "band_bps"])

# %% [markdown]
# ## Slippage vs the open over time
#
# Every order of the trailing cycles. The shaded area is the default band; dashed lines are the symbols with a band of their own; red orders are out of their band.

# %%
slippage.plot_slippage(report);

# %% [markdown]
# ## Trailing cycles
#
# One row per cycle, at most 12, oldest first (a cycle that traded nothing counts, at no cost): fill ratio, signed and absolute average and worst slippage vs the open (with the worst order's band) and vs the decision close, dollars, orders out of band.

# %%
print(report.trailing_summary())
formats.show_table(report.cycles_frame(), money=["slippage_cost", "commissions", "total_cost"], percent=["fill_ratio", "worst_fill_ratio"], bps=["avg_vs_open_bps", "avg_abs_bps", "worst_abs_bps", "worst_band_bps", "avg_vs_close_bps", "worst_vs_close_bps", "band_bps"])

# %% [markdown]
# ## Per symbol, against its band
#
# The same figures, symbol by symbol.

# %%
formats.show_table(report.symbols_frame(), money=["slippage_cost", "commissions", "total_cost"], percent=["fill_ratio", "worst_fill_ratio"], bps=["avg_vs_open_bps", "avg_abs_bps", "worst_abs_bps", "worst_band_bps", "avg_vs_close_bps", "worst_vs_close_bps", "band_bps"])

# %% [markdown]
# ## Out-of-band orders of the trailing cycles

# %%
formats.show_table(report.flagged_frame(), money=["decision_close", "open_print", "avg_price", "slippage_cost", "commission"], percent=["fill_ratio"], bps=["vs_close_bps", "vs_open_bps", "band_bps"])

# %% [markdown]
# ## Cost in dollars per cycle
#
# Slippage against the open with commissions stacked on top; the bar marks the total.

# %%
slippage.plot_costs(report);

# %% [markdown]
# ## Check against the bands

# %%
check = slippage.write_slippage_check(cfg, report)
print(check['detail'])

# %% [markdown]
# ## Record

# %%
notebooks.glue("slippage", report.to_payload())
notebooks.glue("check", check)
notebooks.glue("completion", notebooks.completion_record("slippage_report", cycle=cycle, status=str(report.status), passed=check['passed'], flagged=len(report.flagged)))
