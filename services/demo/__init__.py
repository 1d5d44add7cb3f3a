"""``relance demo``: the whole ingest path on SQLite and an in-process queue, with a generated ERP sample."""

from services.demo.generator import AS_OF, Sample, generate
from services.demo.run import run_demo

__all__ = ["AS_OF", "Sample", "generate", "run_demo"]
