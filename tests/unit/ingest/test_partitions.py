"""Which partition a customer's events go to, and how many partitions a worker holds: no broker."""

from __future__ import annotations

import json

from services.ingest.partitions import fair_share, partition_of
from services.ingest.router import _stream_of


def test_a_customer_always_goes_to_the_same_partition_and_customers_spread_fairly() -> None:
    counts = [0] * 4
    for n in range(1000):
        counts[partition_of("acme-fr", f"K-{n}", 4)] += 1
    assert min(counts) > 150
    assert partition_of("acme-fr", "K-1", 4) == partition_of("acme-fr", "K-1", 4)
    # crc32 of "acme-fr\0K-1", the same in every process whatever its hash seed
    assert partition_of("acme-fr", "K-1", 1000) == 499


def test_the_tenant_is_part_of_the_stream() -> None:
    assert len({partition_of(tenant, "C-1", 64) for tenant in ("a", "b", "c", "d", "e", "f")}) > 1


def test_a_message_naming_no_customer_goes_to_partition_zero() -> None:
    assert partition_of(None, None, 8) == 0
    assert _stream_of(b"not json") == (None, None)
    assert _stream_of(b"[1, 2]") == (None, None)
    assert _stream_of(json.dumps({"tenant": "t", "customer_id": 42}).encode()) == ("t", None)
    assert _stream_of(json.dumps({"tenant": "t", "customer_id": "C"}).encode()) == ("t", "C")


def test_workers_together_always_hold_every_partition() -> None:
    for partitions in (1, 2, 7, 8, 16):
        for workers in range(1, 20):
            assert fair_share(partitions, workers) * workers >= partitions
            assert fair_share(partitions, workers) >= 1
    assert fair_share(8, 0) == 8  # a worker that does not see itself counted yet takes them all
    assert fair_share(8, 3) == 3
