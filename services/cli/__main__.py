"""`python -m services.cli`: the same as the `relance` command."""

from services.cli.commands import main

raise SystemExit(main())
