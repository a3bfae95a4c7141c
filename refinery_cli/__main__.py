"""``python -m refinery_cli``: the same as the ``refinery`` console command."""

from refinery_cli.commands import main

raise SystemExit(main())
