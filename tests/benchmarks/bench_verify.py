"""``relance verify`` on real PostgreSQL, next to the least any verify must do: read the rows and check their chains.

    python -m tests.benchmarks.bench_verify [--customers 2000] [--invoices 25000] [--rounds 2]

The ledger is filled through the write path (:mod:`tests.benchmarks.ledgers`: invoices, payments, credit notes and
disputes of ``--customers`` customers, about two events per invoice), a checkpoint is signed over it, then,
alternating, ``--rounds`` times each on the same database:

- **floor**: one streamed SELECT of the hashed columns in stream order on a repeatable-read snapshot, each event's
  canonical bytes built exactly as verify builds them (:func:`shared.ledger.hashing.canonical`), their SHA-256
  compared with the stored hash, and the chain checked (``prev_hash`` is the previous event's hash);
- **relance**: :func:`shared.ledger.verify.verify` with the checkpoint and its public key: chains, every projection
  rebuilt and compared, the checkpoint's signature, Merkle root and global order.

The figure is events per second; ``<= 2x`` the floor's time means a ratio (verify's rate over the floor's) ``>= 0.5``.
"""

from __future__ import annotations

import argparse
import hashlib
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select

from shared.ledger import checkpoints as cp
from shared.ledger.db import make_engine
from shared.ledger.hashing import GENESIS, HASHED_FIELDS, canonical
from shared.ledger.scan import STREAMED, read_only
from shared.ledger.schema import events
from shared.ledger.store import Ledger
from shared.ledger.verify import CheckpointSources, verify
from tests.benchmarks.common import (
    Figure,
    database_server,
    machine_facts,
    print_machine,
    report,
    sizing,
    sqlalchemy_url,
    temp_database,
)
from tests.benchmarks.ledgers import fill, receivables

SHARE_OF_FLOOR = 0.5  # verify within 2x the floor's time


def floor(engine: Engine) -> int:
    """Read every event once, hash its canonical bytes, check the chain: what no verify can do without."""
    seen = broken = 0
    previous, stream = GENESIS, ("", "")
    with read_only(engine) as conn:
        columns = [events.c[name] for name in HASHED_FIELDS] + [events.c.hash]
        query = select(*columns).order_by(events.c.tenant, events.c.customer_id, events.c.version)
        for row in conn.execute(query, execution_options=STREAMED):
            fields = dict(zip(HASHED_FIELDS, row[:-1], strict=True))
            if (row[0], row[1]) != stream:
                previous, stream = GENESIS, (row[0], row[1])
            if fields["prev_hash"] != previous or hashlib.sha256(canonical(**fields)).hexdigest() != row[-1]:
                broken += 1
            previous = row[-1]
            seen += 1
    assert broken == 0, f"{broken} event(s) do not chain"
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sizing(parser, customers=2000, invoices=25000)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each, alternating (2)")
    args = parser.parse_args(argv)
    admin = database_server()
    print_machine(machine_facts(admin))
    with temp_database(admin, "verify") as url:
        engine = make_engine(sqlalchemy_url(url))
        began = time.perf_counter()
        fill(Ledger(engine), receivables(args.customers, args.invoices))
        print(f"  filled in {time.perf_counter() - began:.1f} s")
        key = Ed25519PrivateKey.generate()
        began = time.perf_counter()
        cp.write(engine, key, settle_seconds=0)
        print(f"  checkpoint written in {time.perf_counter() - began:.2f} s")
        sources = CheckpointSources(public_key=key.public_key())
        floor_seconds: list[float] = []
        verify_seconds: list[float] = []
        count = 0
        for _ in range(args.rounds):
            began = time.perf_counter()
            count = floor(engine)
            floor_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            result = verify(engine, sources=sources)
            verify_seconds.append(time.perf_counter() - began)
            assert result.ok and result.checkpoints == 1, result.problems[:5]
            print(f"  {count:,} events of {result.streams:,} streams: floor {floor_seconds[-1]:.2f} s, "
                  f"verify {verify_seconds[-1]:.2f} s")  # fmt: skip
        engine.dispose()
    value, baseline = count / min(verify_seconds), count / min(floor_seconds)
    report(
        Figure(
            stage="verify",
            value=value,
            unit="events/s",
            baseline=baseline,
            target=f"within 2x the floor (streamed SELECT + SHA-256 of the canonical bytes + chain check): "
            f"ratio >= {SHARE_OF_FLOOR}",
            met=value / baseline >= SHARE_OF_FLOOR,
            detail={
                "events": count,
                "verify_seconds": round(min(verify_seconds), 2),
                "floor_seconds": round(min(floor_seconds), 2),
            },
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
