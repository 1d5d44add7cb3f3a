"""``relance worker jobs`` with the tests' job kinds too (:mod:`tests.unit.jobs.kinds`), for the tests that kill it.

Run as ``python -m tests.integration.jobs.worker_process`` from the repository, with the worker's RELANCE_* settings.
"""

from __future__ import annotations

import sys

from services.cli.app import main
from tests.unit.jobs import kinds

if __name__ == "__main__":
    kinds.register()
    sys.exit(main(["worker", "jobs"]))
