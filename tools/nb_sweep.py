"""Cells of notebooks/research/sweep.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "research/sweep"

CELLS = [
    new_markdown_cell(
        "# Parameter sweep\n\n"
        "**Purpose.** Run the strategy over a grid of parameters (lookback months, skipped "
        "months, top N, the absolute-momentum filter, the defensive asset) in one vectorbt "
        "simulation, every combination on the same month-ends and with the same costs as the "
        "backtest, and show where the results are robust rather than lucky.\n\n"
        "**Inputs.** The workbook's price store; the strategy, costs and research settings of "
        "the workbook's `config.yaml` or of `config` (a template name or a YAML path), which "
        "set every parameter the grid leaves out. Parameters: `workbook`, `config`, `start`, "
        "`end`, `grid` (a YAML file of `key: [values]`; empty for `sweep.DEFAULT_GRID`).\n\n"
        "**Outputs.** The best combinations, heatmaps of Sharpe and CAGR over lookback x top N; "
        "scraps `table` and `completion`. Research only: nothing is written to the ledger."
    ),
    new_code_cell(
        'workbook = ""  # "" means $OPS_RUNNER_HOME, else the sample workbook in demo/\n'
        'config = ""  # empty: the workbook config.yaml; else a template (gem, topn) or a path\n'
        'start = ""  # first month-end considered, YYYY-MM-DD; empty: as early as the data allow\n'
        'end = ""  # last session, YYYY-MM-DD; empty: the last bar of every symbol\n'
        'grid = ""  # a YAML grid file; empty: sweep.DEFAULT_GRID',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import scrapbook as sb\n\nfrom ops_runner import notebooks, reports, research, sweep"
    ),
    new_markdown_cell("## Workbook, strategy and grid"),
    new_code_cell(
        "cfg = research.load_research_config(notebooks.open_workbook(workbook), config)\n"
        "grid_values = sweep.load_grid(grid) if grid else sweep.DEFAULT_GRID\n"
        "print(grid_values)\n"
        "reports.compute_banner(cfg)"
    ),
    new_markdown_cell("## The best combinations by Sharpe ratio"),
    new_code_cell(
        "bars = research.load_bars(cfg, grid_values)\n"
        "table = sweep.sweep(cfg, grid_values, bars, start=start or None, end=end or None)\n"
        'table.sort_values("sharpe", ascending=False).head(10)'
    ),
    new_markdown_cell(
        "## Lookback x top N\n\nEach cell is the median over the grid's other parameters."
    ),
    new_code_cell('reports.plot_sweep_heatmap(table, "sharpe");'),
    new_code_cell('reports.plot_sweep_heatmap(table, "cagr");'),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("table", sweep.compute_sweep_records(table))\n'
        'sb.glue("completion", notebooks.completion_record("research/sweep", '
        'combinations=len(table), start=table["start"].iat[0], end=table["end"].iat[0], '
        "grid=grid_values, config_hash=cfg.hash))"
    ),
]
