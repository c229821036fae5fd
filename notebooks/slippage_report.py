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
# **Purpose.** Once a cycle's orders have filled, compare each fill with the raw close the decision sized it with and with the order session's opening print, in basis points signed as a cost (positive: a buy paid more, a sell received less), and add up what the cycle cost in dollars (slippage against the open plus commissions). Orders whose |slippage vs the open| is beyond their band (`costs.slippage_band_bps`, or `costs.slippage_bands` per symbol) are flagged and alerted. Each fill is also judged against the bid and ask the broker quoted just after the open (else at submission): fill vs the mid and the quoted half-spread, in bps, against `costs.vs_mid_band_bps` and `costs.half_spread_band_bps` (per symbol: `vs_mid_bands`, `half_spread_bands`); out of band is flagged and alerted the same way. The trailing 12 cycles show whether the expected costs still hold.
#
# **Inputs.** The workbook's config (bands), ledger (plan, orders, fills, quotes) and price store (raw opens and closes). Parameters: `workbook`, `cycle`, `now`.
#
# **Outputs.** The orders table, the slippage chart, the trailing-cycles and per-symbol tables, the out-of-band orders and the cost chart; scraps `slippage`, `check` and `completion`; `CheckRecorded` events (checks `slippage_bands` and, when the broker quoted the fills, `spread_bands`) once the cycle's fills are complete, and an `AlertSent` event when an order is out of band. The tick publishes this executed notebook as `reports/slippage/<cycle>.html`, linked from the runs index.

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
# ## Fills against the quotes
#
# Per filled order: the quote that judges it (just after the open, else at submission; a broker that quoted nothing says so), bid, ask and mid, fill vs mid (bps, + = cost) and the quoted half-spread, each with its band; flagged orders are out of band. The half-spread at submission is shown beside.

# %%
print(report.spread_summary())
formats.show_table(report.spreads_frame(), money=["avg_price", "bid", "ask", "mid"], bps=["vs_mid_bps", "vs_mid_band_bps", "half_spread_bps", "half_spread_band_bps", "submission_half_spread_bps"], when=["quoted_at"], flag="flagged")

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
print(check['spread']['detail'])

# %% [markdown]
# ## Record

# %%
notebooks.glue("slippage", report.to_payload())
notebooks.glue("check", check)
notebooks.glue("completion", notebooks.completion_record("slippage_report", cycle=cycle, status=str(report.status), passed=check['passed'], flagged=len(report.flagged), spread_status=str(report.spread_status), spread_passed=check['spread']['passed'], spread_flagged=len(report.spread_flagged)))
