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
# # Reconciliation
#
# **Purpose.** After the next session's open (plus the configured delay), fetch executions, commissions, positions and cash from the broker and compare them with the ledger: target vs filled, expected vs broker positions and cash, partial and missing fills. Duplicate reports count once; a missing position report is not a flat position. Clean: recorded. A break: SAFE_MODE and an incident; a break unresolved past its time limit: HALT.
#
# **Inputs.** The workbook's config, ledger and broker. Parameters: `workbook`, `cycle`, `now`.
#
# **Outputs.** The fills (with slippage against the open), breaks and positions tables; scraps `reconciliation` and `completion`; `FillRecorded` and `CheckRecorded` events.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
cycle = "2025-11"  # orders for the 2025-12-01 open
now = "2025-12-01T15:30:00Z"  # 10:30 New York; "" means the real clock

# %%
from ops_runner.ops import jobs
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook and broker

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Fills
#
# Per order: intended, filled, price, commission, slippage.

# %%
report = jobs.run_reconciliation(cfg, cycle, now)
print(report.summary())
formats.show_table(report.to_frame(), money=["avg_price", "commission", "decision_close", "open_print"], bps=["slippage_bps"])

# %% [markdown]
# ## Breaks

# %%
formats.show_table(report.breaks_frame())

# %% [markdown]
# ## Positions: ledger vs broker

# %%
formats.show_table(report.positions_frame())

# %% [markdown]
# ## Record

# %%
notebooks.glue("reconciliation", report.to_payload())
notebooks.glue("completion", notebooks.completion_record("reconciliation", cycle=cycle, status=str(report.status), state=str(report.state)))
