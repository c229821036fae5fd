"""Market data: the trading calendar, the price store, data sources and data QA."""
