"""Refinery: Dagster-free operators for preparing model training data.

Everything heavy lives here so it can be unit-tested alone and called from any engine;
the Dagster layer in ``assets/`` only reads config, calls these functions and reports.

Importing the package first tunes when Arrow's allocator returns freed memory to the system
(:mod:`refinery.arrow_memory`): it has to happen before pyarrow loads, and every process that runs a
stage imports this package before any of its modules imports pyarrow.
"""

from refinery.arrow_memory import hold_freed_arrow_pages

__version__ = "0.1.0"

hold_freed_arrow_pages()
