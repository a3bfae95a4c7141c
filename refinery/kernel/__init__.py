"""The kernel: what a stage is and how one runs, below every domain package.

It imports no domain package and no engine (callers hand it the engine): specs, the run context
and the Engine protocol (``spec``), the Processor protocol (``processor``), a pipeline's order
(``pipeline``), streaming a partition (``runner``), executing, reporting and checking a stage
(``execute``, ``report``, ``checks``), and what every inbox reader shares (``collector``,
``ingest``, ``surrogates``). See docs/architecture.md.
"""
