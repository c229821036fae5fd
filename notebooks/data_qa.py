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
# # Data QA
#
# **Purpose.** Before a decision, check that the universe's prices are fresh through the session's close, complete, sane, free of unexplained jumps, consistent with their corporate actions, in agreement with the secondary provider, and still match the checksums recorded when they were imported. Blocking findings mean DEGRADED_DATA: no decision.
#
# **Inputs.** The workbook's `config.yaml` (universe, data sources, QA bands) and its price store. Parameters: `workbook`, `as_of`, `now`.
#
# **Outputs.** The findings table, a chart per flagged symbol, and scraps `findings`, `blocking` and `completion` for the orchestrator.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
as_of = "2025-11-28"  # the session being decided (the demo decides 2025-11)
now = ""  # the tick's instant on a simulated clock (stamps the ledger); "" means the real clock

# %%
from ops_runner.market import qa
from ops_runner.ops import checks
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook, config and data sources

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Findings

# %%
result = qa.run_qa(cfg, as_of)
print(result.summary())
formats.show_table(qa.findings_frame(result.findings), hide_index=True)

# %% [markdown]
# ## Flagged symbols
#
# Red lines mark the dates of findings.

# %%
pages.plot_flagged(cfg, result);

# %% [markdown]
# ## Record

# %%
recorded = checks.record_data_qa(cfg, result, run_id or None)  # a decision needs it
notebooks.glue("findings", qa.findings_frame(result.findings).astype(str).to_dict("records"))
notebooks.glue("blocking", result.blocking)
notebooks.glue("completion", notebooks.completion_record("data_qa", as_of=result.as_of, blocking=result.blocking, findings=len(result.findings), config_hash=cfg.hash, fingerprint=recorded.payload['fingerprint']))
