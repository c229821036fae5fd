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
# # Incident investigation
#
# **Purpose.** The runbook's section 4.1 for one incident: make sure the system is in SAFE_MODE (or HALT); snapshot positions, cash and open orders from the broker where reachable (else marked unavailable) beside the ledger's, the config hash, code version and broker connectivity; classify the incident (Data, Broker/API, Scheduler, Strategy logic, Market anomaly) with the evidence that points there; link the executed notebooks of the failing runs; list the latest ledger entries.
#
# **Inputs.** The workbook's config, ledger and broker (read-only). Parameters: `workbook`, `incident` ("" = the latest open one), `now`.
#
# **Outputs.** The tables below (account ids masked); scraps `incident` and `completion`; a `StateChanged` to SAFE_MODE only when an open incident found the system outside SAFE_MODE and HALT. Close it with `ops-runner incident close`.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
incident = ""  # "" means the latest open incident
now = "2025-12-01T15:30:00Z"  # the snapshot's clock; "" means the real clock

# %%
from IPython.display import Markdown, display

from ops_runner.ops import incidents
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Incident and state

# %%
found = incidents.investigate(cfg, incident, now)
print("no incident open: nothing to investigate" if found is None else f"investigating {found.incident['incident_id']}")
formats.show_table(found.snapshot.facts_frame(), when=["value"]) if found else None

# %% [markdown]
# ## Classification
#
# The cause the evidence points at, and every signal.

# %%
if found:
    print(f"classification: {found.classification.label}")
formats.show_mapping(found.classification.scores, "cause", "signals") if found else None

# %%
formats.show_table(found.classification.to_frame(), hide_index=True) if found else None

# %% [markdown]
# ## Positions: broker vs ledger

# %%
formats.show_table(found.snapshot.positions_frame(), hide_index=True) if found else None

# %% [markdown]
# ## Cash and open orders

# %%
display(formats.show_table(found.snapshot.cash_frame(), money=["broker", "ledger"])) if found else None
formats.show_table(found.snapshot.orders_frame(), hide_index=True) if found else None

# %% [markdown]
# ## Orders: broker vs ledger
#
# The latest cycle's orders as the ledger records them, beside the broker's (open and completed): an order placed by a run that died before recording it shows here, and reconciliation adopts it by its client reference.

# %%
formats.show_table(found.snapshot.orders_vs_ledger_frame(), hide_index=True) if found else None

# %% [markdown]
# ## Failing runs
#
# Executed notebooks of the failed or missed runs.

# %%
Markdown(incidents.compute_run_links(cfg, found.runs) if found else "_No incident open._")

# %% [markdown]
# ## Latest ledger entries

# %%
formats.show_table(found.snapshot.entries_frame(), when=["recorded_at"], hide_index=True) if found else None

# %% [markdown]
# ## Record

# %%
notebooks.glue("incident", found.to_payload() if found else {})
notebooks.glue("completion", notebooks.completion_record("incident", incident=found.incident["incident_id"] if found else None, classification=found.classification.label if found else None, state=str(found.snapshot.state.state) if found else None))
