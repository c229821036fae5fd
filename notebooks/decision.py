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
# # Decision
#
# **Purpose.** Decide the monthly rotation for one rebalance session (the last session of the month) from the bars known at its close, and record the Decision Record once: scores, selection, target weights, the prices used with their provenance, a snapshot of the exact input bars, the config hash and the code version. Deciding again with the same inputs returns the same record; other inputs for a decided session are an incident.
#
# **Inputs.** The workbook's `config.yaml` (universe and strategy) and its price store. Parameters: `workbook`, `session`, `now`.
#
# **Outputs.** The scores table, the ranking chart, the targets and the explanation; scraps `decision`, `targets` and `completion`; a `DecisionRecorded` ledger event.

# %% tags=["parameters"]
workbook = ""  # "": $OPS_RUNNER_HOME, else demo/ (make demo, SYNTHETIC)
run_id = ""  # set by the tick or ops-runner run; "" by hand: a preview, records nothing
session = "2025-11-28"  # the rebalance session (the demo decides 2025-11)
now = ""  # the tick's instant on a simulated clock (stamps decided_at); "" means the real clock

# %%
from ops_runner.ops import decision
from ops_runner.reports import formats, pages
from ops_runner.runtime import notebooks

# %% [markdown]
# ## Workbook, config and data sources

# %%
cfg = notebooks.open_workbook(workbook, run_id, now)
formats.show_table(pages.compute_banner(cfg))

# %% [markdown]
# ## Scores
#
# Total return over the lookback, measured on month-end sessions.

# %%
outcome = decision.decide(cfg, session, now)
print("recorded now" if outcome.created else f"already decided (event {outcome.seq})")
formats.show_table(outcome.scores_frame(), percent=["ret_12m", "score"])

# %%
pages.plot_scores(outcome);

# %% [markdown]
# ## Selection and targets

# %%
print(outcome.explanation)
formats.show_table(outcome.targets_frame(), percent=["weight"])

# %% [markdown]
# ## Prices used and their provenance
#
# The adjusted closes at each end of the lookback, the file each came from and its SHA-256.

# %%
formats.show_table(pages.compute_prices_frame(outcome.record), money=["adj_close_from", "adj_close_to"])

# %% [markdown]
# ## Reproducing this decision
#
# The snapshot of the exact input bars (`ops-runner replay` recomputes from it), the config and the code.

# %%
formats.show_table(pages.compute_record_frame(outcome.record), when=["value"])

# %% [markdown]
# ## Record

# %%
notebooks.glue("decision", outcome.record["decision"])
notebooks.glue("targets", outcome.targets)
notebooks.glue("completion", notebooks.completion_record("decision", session=session, seq=outcome.seq, created=outcome.created, targets=outcome.targets))
