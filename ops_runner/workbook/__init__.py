"""The workbook: its checked configuration, secrets and paths."""
