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
# # Execution
#
# **Purpose.** Turn the cycle's Decision Record, the broker's positions and cash into an Execution Plan (whole shares, sells before buys, a cash buffer against overnight gaps, a minimum trade size, settlement-aware cash) and submit market-on-open orders for the next session inside the submission window. Submission is crash-safe: the plan and its intents are recorded first, every client reference is looked up at the broker, and only unsent intents go through the order gate.
#
# **Inputs.** The workbook's config, ledger (the Decision Record) and broker. Parameters: `workbook`, `cycle`, `now`.
#
# **Outputs.** The plan table, the cash walk, the submission results; scraps `plan`, `submission` and `completion`; `OrdersPlanned`, `OrderIntentRecorded` and `OrderSubmitted` ledger events.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
cycle = "2025-11"  # decided on 2025-11-28; orders for the 2025-12-01 open
now = "2025-12-01T13:30:00Z"  # 08:30 New York; "" means the real clock

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
# ## Plan
#
# Current, target and delta per symbol at the decision close.

# %%
job = jobs.open_execution(cfg, cycle, now)
formats.show_table(job.plan.to_frame(), percent=["weight"], money=["price", "notional"])

# %% [markdown]
# ## Cash walk
#
# Where the money goes, residual from rounding included.

# %%
formats.show_table(job.cash_walk_frame(), money=["amount"])

# %% [markdown]
# ## Submission

# %%
submission = job.submit()
print(submission.detail or submission.status)
formats.show_table(submission.to_frame())

# %% [markdown]
# ## Record

# %%
notebooks.glue("plan", job.plan.to_payload())
notebooks.glue("submission", submission.to_payload())
notebooks.glue("completion", notebooks.completion_record("execution", cycle=cycle, status=str(submission.status), state=submission.state, unsettled=submission.unsettled))
