"""``refinery mcp``: Refinery as tools an agent drives over the Model Context Protocol.

Above the library (it reads the Dagster ``Definitions`` and launches runs on the instance); the
file-level work (confined paths, sources, read-only SQL, document journeys) is in
:mod:`refinery.agent`.
"""
