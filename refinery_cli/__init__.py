"""The ``refinery`` command line, above the library: it drives Dagster.

- :mod:`refinery_cli.commands`: every subcommand and the parser (the console script's ``main``);
- :mod:`refinery_cli.launch`: runs the jobs of ``definitions`` on the persistent instance;
- :mod:`refinery_cli.progress`: the Dagster loggers that print a line per stage and write the
  full debug log to a file.

The ``refinery`` library imports nothing from here.
"""
