"""ops_runner: the package behind the momentum rotation workbook's notebooks."""

import sys

__version__ = "0.1.0"

# jsonschema's optional "rfc3987_syntax" format checker builds a Lark grammar when jsonschema
# is imported: about 1 s in every process that imports papermill or nbformat (the tick), 3 s
# in every kernel (FAULTS.md). Nothing here validates URI formats: keep it out of this process
# (kernels get the same line from the notebook runner, before their first cell).
BLOCK_SLOW_IMPORTS = "import sys; sys.modules.setdefault('rfc3987_syntax', None)"
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks it
