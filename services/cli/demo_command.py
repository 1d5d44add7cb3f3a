"""``relance demo``: the whole pipeline on SQLite with an in-process broker (:mod:`services.cli.demo`).

The demo alone makes its own database: its ``--database-url`` names where to keep the demo ledger, not the
ledger of the settings, and it needs the ``demo`` extra (aiosmtpd), which the workers do not.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from services.cli.options import Commands, runs
from shared.config import Settings

EXIT_CODES = textwrap.dedent(
    """\
    exit status:
      0   everything as expected, and the dunning kept its policies' own rules
      1   the demo could not run, or something unexpected happened (a message not accounted
          for, a broken hash chain, a reminder listing an invoice paid or disputed at the time)
      3   the run went as expected, but the dunning broke its policy's rules: contact days
          closer or more frequent than the policy's cadence, a written level sent twice for an
          invoice, a line softer than what its invoice had reached, a demand for an invoice not
          yet due or already handed over (the summary names each, with an example)
      69  the demo's extra is not installed (pip install 'relance[demo]')
      78  invalid settings or policy files
    """
)


def add_demo(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run relance end to end on SQLite with an in-process broker and a generated sample",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES,
    )
    demo.add_argument("--customers", type=int, default=300, help="how many customers (default 300)")
    demo.add_argument("--months", type=int, default=4, help="months of activity (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="random seed, for a repeatable sample (default 7)")
    demo.add_argument(
        "--database-url", help="where to keep the demo ledger (default: a fresh SQLite file under ./demo-output)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the demo's files")
    runs(demo, run_demo)
    demo.set_defaults(own_database=True)  # its --database-url names the demo's own ledger, not the settings'


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import aiosmtpd  # noqa: F401  (the demo's SMTP server on loopback)
    except ImportError:
        print("relance demo needs its extra, which the workers do not: pip install 'relance[demo]'", file=sys.stderr)
        return 69
    from services.cli import demo

    return demo.run_demo(
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        out=args.out,
        database_url=args.database_url,
    )
