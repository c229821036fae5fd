"""ops_runner: the package behind the momentum rotation workbook's notebooks."""

__version__ = "0.1.0"
