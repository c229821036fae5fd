"""The strategy: the pure momentum decision, research backtests, sweeps, performance."""
