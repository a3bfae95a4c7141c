"""Refinery: Dagster-free operators for preparing model training data.

Everything heavy lives here so it can be unit-tested alone and called from any engine;
the Dagster layer in ``assets/`` only reads config, calls these functions and reports.
"""

__version__ = "0.1.0"
