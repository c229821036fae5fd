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
# # Disaster-recovery drill
#
# **Purpose.** The quarterly drill: restore the latest backup into a scratch workbook (`<workbook>/drills/<drill id>/`), verify its ledger chain, its executed notebooks and the live price data against the archived manifests, switch it to paper on the simulated broker (books rebuilt from the restored ledger), then run the last reconciled cycle again twice: every tick at the cycle's instants and every job of the cycle. It passes only if nothing new was ordered or decided, no job failed, reconciliation was CLEAN both times and the second pass's ticks changed nothing. What a PASS proves and what it does not is written at the top of `ops_runner/ops/drill.py`. This executed notebook is the drill's report.
#
# **Inputs.** The live workbook's config, backups and price store (read only). Parameters: `workbook`, `archive` ("" = the latest backup), `now` (stamps the drill), and, when `ops-runner drill` runs it, `run_id` and `notebook` (this report's path).
#
# **Outputs.** The steps, the event counts before and after, the re-run jobs and ticks (account ids masked); scraps `drill` and `completion`; a `DrillRecorded` event in the LIVE ledger (a FAIL also sends an alert; the live state never changes). Without a backup the status is NO_BACKUP and nothing is recorded.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
archive = ""  # a backup archive; "" means the newest in the workbook's backups
now = ""  # the drill's instant (ISO, UTC); "" means the real clock
run_id = ""  # set by `ops-runner drill`: the run that records the drill
notebook = ""  # set by `ops-runner drill`: where this executed notebook is kept

# %%
from ops_runner.ops import drill
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Live workbook

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## The drill
#
# One line per step as it runs (the re-run jobs take a few minutes), then each step's outcome.

# %%
report = drill.run_drill(cfg, archive, drill.read_now(now), progress=print)
formats.show_table(report.steps_frame(), hide_index=True)

# %% [markdown]
# ## Ledger events before and after the two passes
#
# Counted in the scratch workbook's ledger and the simulated broker's books: order events, decisions, incidents and failed jobs must not grow; job completions grow by the re-runs.

# %%
formats.show_table(report.counts_frame())

# %% [markdown]
# ## Jobs run again
#
# Executed notebooks are in the scratch workbook.

# %%
formats.show_table(report.reruns_frame(), when=["at"], hide_index=True)

# %% [markdown]
# ## Ticks at the cycle's instants

# %%
formats.show_table(report.ticks_frame(), when=["at"], hide_index=True)

# %% [markdown]
# ## Record

# %%
recorded = drill.record_drill(cfg, report, run_id or None, notebook or None)
print(report.summary(), *report.notes, sep=chr(10))
notebooks.glue("drill", report.to_payload(notebook or None))
notebooks.glue("completion", notebooks.completion_record("dr_drill", status=str(report.status), drill_id=report.drill_id, cycle=report.cycle, seq=recorded.seq if recorded else None))
