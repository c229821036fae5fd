"""Cells of notebooks/research/backtest.ipynb (see tools/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "research/backtest"

CELLS = [
    new_markdown_cell(
        "# Backtest\n\n"
        "**Purpose.** Replay the production strategy month by month: the same decision function "
        "the `decision` job runs decides every month-end, and vectorbt trades the targets at the "
        "next session's open with the workbook's costs. Shows the equity curve against "
        "buy-and-hold of the benchmark (or first risk asset), the drawdowns, the monthly returns "
        "and every decision.\n\n"
        "**Inputs.** The workbook's price store; the strategy, costs and research settings of "
        "the workbook's `config.yaml` or of `config` (a template name such as `gem` or `topn`, "
        "or a YAML path). Parameters: `workbook`, `config`, `start`, `end` (YYYY-MM-DD, empty "
        "for all the data).\n\n"
        "**Outputs.** Metrics, charts and the decisions table; scraps `metrics`, `decisions` and "
        "`completion`. Research only: nothing is written to the ledger."
    ),
    new_code_cell(
        'workbook = ""  # "" means $OPS_RUNNER_HOME, else the sample workbook in demo/\n'
        'config = ""  # empty: the workbook config.yaml; else a template (gem, topn) or a path\n'
        'start = ""  # first month-end considered, YYYY-MM-DD; empty: as early as the data allow\n'
        'end = ""  # last session, YYYY-MM-DD; empty: the last bar of every symbol',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell("import scrapbook as sb\n\nfrom ops_runner import notebooks, reports, research"),
    new_markdown_cell("## Workbook, strategy and data"),
    new_code_cell(
        "cfg = research.load_research_config(notebooks.open_workbook(workbook), config)\n"
        "reports.compute_banner(cfg)"
    ),
    new_markdown_cell("## Metrics"),
    new_code_cell(
        "bars = research.load_bars(cfg)\n"
        "result = research.backtest(cfg, bars, start=start or None, end=end or None)\n"
        "print(result.summary())\n"
        "result.metrics_frame()"
    ),
    new_markdown_cell("## Equity and drawdowns\n\nTotal return: dividends are reinvested."),
    new_code_cell("reports.plot_equity(result.equity, result.buy_and_hold);"),
    new_code_cell("reports.plot_drawdown(result.equity);"),
    new_markdown_cell("## Monthly returns"),
    new_code_cell("reports.plot_monthly_heatmap(result.equity);"),
    new_markdown_cell("## Decisions\n\nThe last two years; `result.decisions` holds them all."),
    new_code_cell("result.decisions_frame().tail(24)"),
    new_markdown_cell("## How the simulation trades"),
    new_code_cell("print(research.COST_MODEL)"),
    new_markdown_cell("## Record"),
    new_code_cell(
        'sb.glue("metrics", result.metrics())\n'
        'sb.glue("decisions", result.to_dict()["decisions"])\n'
        'sb.glue("completion", notebooks.completion_record("research/backtest", '
        "start=result.to_dict()['start'], end=result.to_dict()['end'], "
        "decisions=len(result.decisions), metrics=result.metrics(), config_hash=cfg.hash))"
    ),
]
