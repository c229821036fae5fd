"""From a decision to the books: the plan, submission, reconciliation, books, slippage."""
