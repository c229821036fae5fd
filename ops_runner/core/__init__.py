"""The bottom layer: events, canonical JSON, file I/O and locks, clock, the Cycle type.

Nothing here imports pandas, numpy or another ops_runner module (a contract in pyproject.toml,
checked by ``lint-imports``), so the idle tick can use all of it cheaply.
"""
