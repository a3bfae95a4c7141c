"""What an agent may do with a Refinery home, without Dagster: confined file access, sources added
to the inbox, read-only SQL, a document's path through the stages, rejected rows.

The MCP server (``refinery_cli.mcp_server``, above the library) exposes these as tools; they are plain
functions so they work, and are tested, on their own.
"""
