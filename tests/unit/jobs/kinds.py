"""Job kinds of the tests alone: each run appends its job id to a file (its effect), and fails or waits as told.

``register()`` adds them to the registry of this process; :mod:`tests.integration.jobs.worker_process` does the same
in a ``relance worker jobs`` subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import OperationalError

from services.jobs import registry
from shared.contracts.jobs import JobContext, JobRefused


class EffectArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str  # the file the effect is appended to
    refuse: str = ""  # a reason: refuse the job for good
    transient: int = 0  # fail this many runs with a lost database first
    hold: str = ""  # a file whose existence lets the job go on (the test kills its worker meanwhile)


def effect(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    path = Path(args["path"])
    runs = path.with_suffix(".runs")
    with runs.open("a") as out:
        out.write(f"{context.job_id}\n")
    if args["refuse"]:
        raise JobRefused(args["refuse"])
    if len(runs.read_text().splitlines()) <= args["transient"]:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused (a test outage)"))
    if args["hold"]:
        context.progress(1, 3, "holding")
        while not Path(args["hold"]).exists():
            time.sleep(0.05)
    context.progress(2, 3, "writing the effect")
    with path.open("a") as out:
        out.write(f"{context.job_id}\n")
    return {"path": str(path), "lines": len(path.read_text().splitlines())}


def not_json(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    return {"when": object()}


def sleeper(args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
    for _ in range(600):  # short sleeps: Dramatiq's time limit interrupts Python code, not one long C call
        time.sleep(0.05)
    return {}


KINDS = (
    registry.Kind("test.effect", f"{__name__}:effect", "append the job id to a file", EffectArgs),
    registry.Kind("test.not_json", f"{__name__}:not_json", "a result that JSON cannot hold"),
    registry.Kind("test.sleeper", f"{__name__}:sleeper", "longer than its limit", time_limit_seconds=1),
)


def register() -> None:
    for kind in KINDS:
        registry.KINDS[kind.name] = kind
