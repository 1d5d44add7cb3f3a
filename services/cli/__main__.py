"""`python -m services.cli`: the same as the `relance` command."""

from services.cli import main

raise SystemExit(main())
