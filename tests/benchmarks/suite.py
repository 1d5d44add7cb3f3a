"""``make bench``: every stage's benchmark in turn, then one table of the figures they reported.

    python -m tests.benchmarks.suite [--only ingest,notifier] [--out bench-results.jsonl] [-- ARGS for each stage]

Each stage runs as its own process (``python -m tests.benchmarks.bench_<stage>``), its output shown as it comes;
the JSON lines it prints (see :mod:`tests.benchmarks.common`) are collected, written to ``--out`` and summed up in
a table at the end. The exit status is 0 when every stage ran, whatever the figures: a benchmark measures, it does
not judge (the table says which targets are met).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("ingest", "escalation", "notifier", "publish", "e2e", "replay", "verify")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    stages_help = f"stages to run, comma separated ({', '.join(STAGES)})"
    parser.add_argument("--only", default=",".join(STAGES), help=stages_help)
    parser.add_argument("--out", default="bench-results.jsonl", help="where the JSON lines are written")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments after -- go to every stage")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    extra = [a for a in args.rest if a != "--"]
    figures: list[dict[str, Any]] = []
    failed: list[str] = []
    for stage in stages:
        print(f"\n===== bench-{stage}", flush=True)
        began = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", f"tests.benchmarks.bench_{stage}", *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    figures.append(json.loads(line))
        code = process.wait()
        print(f"===== bench-{stage}: exit {code} after {time.monotonic() - began:.0f} s", flush=True)
        if code:
            failed.append(stage)
    Path(args.out).write_text("".join(json.dumps(f) + "\n" for f in figures))
    print(f"\n{'stage':22} {'value':>12} {'baseline':>12} {'ratio':>7}  met  unit; target")
    for f in figures:
        ratio = "-" if f.get("ratio") is None else f"{f['ratio']:.2f}"
        baseline = "-" if f.get("baseline") is None else f"{f['baseline']:,.1f}"
        met, what = ("yes" if f["met"] else "NO "), f"{f.get('unit', '')}; {f['target']}"
        print(f"{f['stage']:22} {f['value']:>12,.1f} {baseline:>12} {ratio:>7}  {met}  {what}")
    print(f"\n{sum(1 for f in figures if f['met'])} of {len(figures)} targets met; JSON lines in {args.out}")
    if failed:
        print(f"stages that did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
