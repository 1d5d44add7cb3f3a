"""``relance demo``: the whole pipeline on SQLite and an in-process queue, with a generated ERP sample.

It is a command of the CLI, not a service: nothing deploys it. It composes the real services the way a deployment does.
"""

from services.cli.demo.generator import AS_OF, Sample, generate
from services.cli.demo.run import run_demo

__all__ = ["AS_OF", "Sample", "generate", "run_demo"]
