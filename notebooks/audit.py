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
# # Weekly reconciliation audit
#
# **Purpose.** Compare every open position and the cash balance at the broker with the ledger's projection since inception (not only this cycle): a manual trade, a transfer, a late fee or a corrected old fill shows up here in any week. Cash is total cash (settlement does not change it), within a cent per order since inception. Clean: recorded. A break: SAFE_MODE and an incident, as in reconciliation. One audit per session: a re-run reads the recorded one back.
#
# **Inputs.** The workbook's config, ledger and broker (a read-only session). Parameters: `workbook`, `now` (the audit's session is the last one closed at `now`).
#
# **Outputs.** The positions, cash and breaks tables; scraps `audit` and `completion`; an `AuditRecorded` event (with a break, `IncidentOpened` and `StateChanged` too).

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
now = "2025-12-06T15:00:00Z"  # Saturday: audits session 2025-12-05; "" the real clock

# %%
from ops_runner.ops import audit
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook and broker

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Positions: ledger vs broker
#
# Every symbol either side holds.

# %%
report = audit.audit_job(cfg, now)
print(report.summary())
formats.show_table(report.to_frame())

# %% [markdown]
# ## Cash: ledger vs broker
#
# Settled cash is shown, never compared (T+1).

# %%
formats.show_table(report.cash_frame(), money=["ledger", "broker", "difference", "tolerance", "settled_cash"])

# %% [markdown]
# ## Breaks

# %%
formats.show_table(report.breaks_frame())

# %% [markdown]
# ## Record

# %%
notebooks.glue("audit", report.to_payload())
notebooks.glue("completion", notebooks.completion_record("audit", session=report.session, status=str(report.status), state=str(report.state)))
